//! Boots the guest under `qemu-system-x86_64 -accel tcg` (software emulation: no /dev/kvm
//! needed, so it runs in CI and in containers) with the serial console on qemu's stdout,
//! no network device and no reboot, and collects the console until qemu exits or the
//! timeout kills it.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use secops_vm_tests::protocol;

pub struct Vm {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Kernel command line.
    pub append: String,
    pub memory_mib: u32,
    pub cpus: u32,
    /// `-icount shift=N,sleep=off`: guest time is instructions × 2^N ns.
    pub icount: Option<u8>,
    pub timeout: Duration,
    /// Where the whole console goes, as it arrives.
    pub log: PathBuf,
    /// Also copy the console to stderr as it arrives.
    pub echo: bool,
}

pub struct Boot {
    pub console: String,
    /// Killed at the timeout.
    pub timed_out: bool,
    /// qemu's exit status, unless it was killed.
    pub exit: Option<ExitStatus>,
    /// From starting qemu to the runner's end marker, if it came.
    pub results_after: Option<Duration>,
    /// From starting qemu to its exit.
    pub elapsed: Duration,
}

impl Vm {
    pub fn command(&self) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        // thread=single: qemu 7.2's multi-threaded TCG double-faults Debian 13's 6.12 in the
        // slab allocator (at a cmpxchg16b) on most boots; one host thread for both vCPUs
        // costs a second or two here and boots every kernel tried.
        c.args(["-accel", "tcg,thread=single"])
            .args(["-nographic", "-no-reboot", "-nic", "none"])
            .args(["-m", &self.memory_mib.to_string()])
            .args(["-smp", &self.cpus.to_string()]);
        if let Some(shift) = self.icount {
            // Deterministic guest time: benchmark ratios then compare instructions executed,
            // not whatever the host's load made of them. sleep=off skips idle time at once.
            c.args(["-icount", &format!("shift={shift},sleep=off")]);
        }
        c.arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .args(["-append", &self.append]);
        c
    }

    pub fn boot(&self) -> Result<Boot> {
        let (reader, writer) = std::io::pipe().context("making a pipe for qemu's output")?;
        let mut log = std::fs::File::create(&self.log)
            .with_context(|| format!("creating {}", self.log.display()))?;
        let started = Instant::now();
        let mut child = {
            let mut command = self.command();
            // stdin null: with -nographic qemu multiplexes its monitor onto stdio, and nothing
            // must type into it (nor may it take over a developer's terminal).
            command
                .stdin(Stdio::null())
                .stdout(writer.try_clone().context("duplicating the pipe")?)
                .stderr(writer);
            command.spawn().context(
                "starting qemu-system-x86_64 (Debian package qemu-system-x86; \
                 `cargo xtask deps --install` installs it)",
            )?
            // `command` drops here with its pipe ends, so the reader sees EOF when qemu exits.
        };
        let (end_seen, end_seen_rx) = mpsc::channel();
        let echo = self.echo;
        let collector = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
            let mut console = Vec::new();
            let mut reader = BufReader::new(reader);
            let mut line = Vec::new();
            loop {
                line.clear();
                if reader.read_until(b'\n', &mut line)? == 0 {
                    return Ok(console);
                }
                log.write_all(&line)?;
                if echo {
                    let _ = std::io::stderr().write_all(&line);
                }
                if String::from_utf8_lossy(&line).contains(protocol::END) {
                    let _ = end_seen.send(Instant::now());
                }
                console.extend_from_slice(&line);
            }
        });

        // Child::kill signals this child's pid, never anything else's.
        let (exit, timed_out) = loop {
            match child.try_wait() {
                Ok(Some(status)) => break (Some(status), false),
                Ok(None) if started.elapsed() < self.timeout => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break (None, true);
                }
                Err(e) => {
                    // Never leave an emulator running behind us.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e).context("waiting for qemu");
                }
            }
        };
        let elapsed = started.elapsed();
        let console = collector
            .join()
            .map_err(|_| anyhow::anyhow!("the console reader thread panicked"))?
            .with_context(|| format!("reading qemu's output into {}", self.log.display()))?;
        let results_after = end_seen_rx.try_recv().ok().map(|at| at - started);
        Ok(Boot {
            console: String::from_utf8_lossy(&console).into_owned(),
            timed_out,
            exit,
            results_after,
            elapsed,
        })
    }
}

/// The last `n` lines of the console, for a failure message.
pub fn tail(console: &str, n: usize) -> String {
    let lines: Vec<&str> = console.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
