//! `secops-vm-runner`: runs inside the guest that `cargo xtask vm-test` boots (it is started
//! by the initramfs' /init once the filesystems are mounted) and prints one protocol line per
//! scenario on the console (see `secops_vm_tests::protocol`).
//!
//! `secops-vm-runner --list` prints the scenarios; anything else outside the guest refuses to
//! run, because scenarios start daemons, pin programs and make cgroups on whatever machine
//! they run on.

mod fixtures;
mod loops;
mod scenarios;

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::time::Instant;

use secops_vm_tests::protocol::{self, Outcome};

use scenarios::{Scenario, SCENARIOS};

/// Set by the guest's /init; nothing else sets it.
const GUEST_MARKER: &str = "SECOPS_VM_GUEST";

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--list") {
        for s in SCENARIOS {
            println!("{:<20} {}", s.name, s.about);
        }
        return ExitCode::SUCCESS;
    }
    if std::env::args().nth(1).as_deref() == Some("--loops") {
        let dir = std::env::args()
            .nth(2)
            .unwrap_or_else(|| "/tmp/secops-loops".to_owned());
        return match loops::run(std::path::Path::new(&dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loops: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if std::env::args().nth(1).as_deref() == Some("--deny-flood") {
        // An agent's flood of denied opens (the lsm-crash-accounting scenario).
        let target = std::env::args().nth(2).unwrap_or_default();
        let stop = std::env::args().nth(3).unwrap_or_default();
        let (refused, other) = deny_flood(&target, std::path::Path::new(&stop));
        println!("flood refused {refused} other {other}");
        return ExitCode::SUCCESS;
    }
    if std::env::args().nth(1).as_deref() == Some("--connect") {
        // What an agent's connect(2) gets: scenarios run this inside agent cgroups.
        let target = std::env::args().nth(2).unwrap_or_default();
        return match target.parse::<std::net::SocketAddr>() {
            Ok(addr) => {
                let timeout = std::time::Duration::from_secs(5);
                match std::net::TcpStream::connect_timeout(&addr, timeout) {
                    Ok(_) => println!("connect {addr} ok"),
                    Err(e) => println!(
                        "connect {addr} errno {}",
                        e.raw_os_error()
                            .map(errno_name)
                            .unwrap_or_else(|| e.to_string())
                    ),
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("--connect {target:?}: {e}");
                ExitCode::from(2)
            }
        };
    }
    if std::env::var_os(GUEST_MARKER).is_none() {
        eprintln!(
            "secops-vm-runner runs inside the VM that `cargo xtask vm-test` boots, not here \
             ({GUEST_MARKER} is not set); `--list` shows its scenarios"
        );
        return ExitCode::from(2);
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let requested = only(&cmdline);
    let plan = plan(requested.as_deref());
    let names: Vec<&str> = plan.iter().map(|(name, _)| *name).collect();
    say(&protocol::begin_line(&names));
    let mut failed = 0;
    for (name, scenario) in &plan {
        say(&protocol::start_line(name));
        let started = Instant::now();
        let verdict = match scenario {
            Some(s) => run_one(s),
            None => Err(format!(
                "no such scenario; known: {}",
                SCENARIOS
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        };
        let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (passed, detail) = match verdict {
            Ok(detail) => (true, detail),
            Err(why) => {
                failed += 1;
                // The first line is the result's detail; the rest (logs, outputs) goes to the
                // console before it, where the host keeps it in last-console.log.
                let mut lines = why.lines();
                let first = lines.next().unwrap_or("failed").to_owned();
                for line in lines {
                    say(&format!("    {line}"));
                }
                (false, first)
            }
        };
        say(&protocol::result_line(&Outcome {
            name: (*name).to_owned(),
            passed,
            millis,
            detail,
        }));
    }
    say(&protocol::end_line(plan.len()));
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Opens `target` for writing until `stop` exists: (opens refused with EPERM, the others).
fn deny_flood(target: &str, stop: &std::path::Path) -> (u64, u64) {
    let (mut refused, mut other) = (0u64, 0u64);
    loop {
        for _ in 0..8 {
            match std::fs::OpenOptions::new().write(true).open(target) {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => refused += 1,
                _ => other += 1,
            }
        }
        if stop.exists() {
            return (refused, other);
        }
        // Slow enough that a restarting daemon (every LSM program verified under emulation)
        // does not leave a full ring buffer to every scenario after this one.
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn errno_name(errno: i32) -> String {
    match errno {
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        libc::ECONNREFUSED => "ECONNREFUSED".into(),
        libc::ETIMEDOUT => "ETIMEDOUT".into(),
        other => format!("{other}"),
    }
}

/// One whole line per write, flushed, so kernel messages on the same console can only fall
/// between our lines, never inside them.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn run_one(scenario: &Scenario) -> Result<String, String> {
    match catch_unwind(AssertUnwindSafe(scenario.run)) {
        Ok(verdict) => verdict,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            Err(format!("the scenario panicked: {message}"))
        }
    }
}

fn only(cmdline: &str) -> Option<Vec<String>> {
    cmdline
        .split_whitespace()
        .find_map(|word| word.strip_prefix(protocol::ONLY_PARAM)?.strip_prefix('='))
        .map(|list| {
            list.split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        })
}

/// The scenarios to run, in table order; a requested name that is not in the table stays in
/// the plan (as `None`) so it fails loudly instead of silently running nothing.
fn plan(only: Option<&[String]>) -> Vec<(&str, Option<&'static Scenario>)> {
    match only {
        None => SCENARIOS
            .iter()
            .filter(|s| !s.named_only)
            .map(|s| (s.name, Some(s)))
            .collect(),
        Some(names) => names
            .iter()
            .filter(|n| protocol::valid_name(n))
            .map(|n| (n.as_str(), SCENARIOS.iter().find(|s| s.name == n)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_the_kernel_command_line() {
        assert_eq!(only("console=ttyS0 quiet\n"), None);
        assert_eq!(
            only("console=ttyS0 secops_vm.only=mounts,bpf-lsm-loads quiet\n"),
            Some(vec!["mounts".to_owned(), "bpf-lsm-loads".to_owned()])
        );
    }

    #[test]
    fn the_plan_keeps_unknown_names_so_they_fail() {
        let names = vec!["mounts".to_owned(), "nope".to_owned()];
        let plan = plan(Some(&names));
        assert_eq!(plan.len(), 2);
        assert!(plan[0].1.is_some());
        assert!(plan[1].1.is_none());
    }

    #[test]
    fn scenario_names_are_unique_and_valid() {
        let mut names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        assert!(names.iter().all(|n| protocol::valid_name(n)));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SCENARIOS.len());
    }
}
