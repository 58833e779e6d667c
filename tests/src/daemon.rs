//! A `secops daemon` process with its own state directory, socket, bpffs pin directory and
//! root cgroup, for tests and benchmarks; dropping it kills the daemon and the agents it
//! started (by pid) and tears down everything it pinned or made.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::kernel::unique_name;

pub struct Daemon {
    pub dir: PathBuf,
    pub name: String,
    child: Option<Child>,
    secops: PathBuf,
    probe: PathBuf,
    extra_args: Vec<String>,
    /// Set: the daemon and every `secops` command run inside this cgroup namespace.
    namespace: Option<crate::namespace::Entry>,
    /// A command the daemon (only the daemon) is started under, e.g. `setpriv ... --`.
    wrapper: Vec<String>,
    /// A tmpfs this daemon's state directory is on, unmounted when the daemon is dropped.
    state_mount: Option<PathBuf>,
}

/// The binaries under test. Cargo tells only a package's tests and benches where its binaries
/// are (`env!("CARGO_BIN_EXE_...")`), so they hand the paths in.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// `secops-under-test`: the `secops` command line.
    pub secops: PathBuf,
    /// `secops-netprobe`.
    pub probe: PathBuf,
}

impl Daemon {
    pub fn start(binaries: &Binaries, policy: &str) -> Daemon {
        Daemon::start_with(binaries, policy, &[])
    }

    /// Starts a daemon with extra `secops daemon` arguments (e.g. a ring buffer size).
    pub fn start_with(binaries: &Binaries, policy: &str, daemon_args: &[&str]) -> Daemon {
        Daemon::start_full(binaries, policy, daemon_args, None, &[])
    }

    /// Starts the daemon under `wrapper` (a command and its arguments, before the daemon's:
    /// `setpriv --bounding-set ... --`); the CLI commands the test runs are not wrapped.
    pub fn start_under(
        binaries: &Binaries,
        policy: &str,
        daemon_args: &[&str],
        wrapper: &[&str],
    ) -> Daemon {
        Daemon::start_full(binaries, policy, daemon_args, None, wrapper)
    }

    /// A daemon inside a cgroup namespace (secops in a container): it, `secops run` and
    /// the agents see the namespace's cgroup2 mount, whose root is not the hierarchy's.
    pub fn start_in_namespace(
        binaries: &Binaries,
        policy: &str,
        namespace: crate::namespace::Entry,
    ) -> Daemon {
        Daemon::start_full(binaries, policy, &[], Some(namespace), &[])
    }

    fn start_full(
        binaries: &Binaries,
        policy: &str,
        daemon_args: &[&str],
        namespace: Option<crate::namespace::Entry>,
        wrapper: &[&str],
    ) -> Daemon {
        let mut daemon = Daemon::prepare(binaries, policy, daemon_args);
        daemon.namespace = namespace;
        daemon.wrapper = wrapper.iter().map(|a| a.to_string()).collect();
        daemon.spawn();
        daemon
    }

    /// A daemon not started yet: its directory made and its policy written.
    fn prepare(binaries: &Binaries, policy: &str, daemon_args: &[&str]) -> Daemon {
        let name = unique_name();
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("policy.yaml"), policy).unwrap();
        Daemon {
            dir,
            name,
            child: None,
            secops: binaries.secops.clone(),
            probe: binaries.probe.clone(),
            extra_args: daemon_args.iter().map(|a| a.to_string()).collect(),
            namespace: None,
            wrapper: Vec::new(),
            state_mount: None,
        }
    }

    /// A daemon whose state directory is a tmpfs of `size` (e.g. `8m`), so a test can fill
    /// the disk under the audit log.
    pub fn start_on_small_state(
        binaries: &Binaries,
        policy: &str,
        daemon_args: &[&str],
        size: &str,
    ) -> Daemon {
        let mut daemon = Daemon::prepare(binaries, policy, daemon_args);
        let state = daemon.dir.join("state");
        std::fs::create_dir(&state).unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "secops-test",
            ])
            .arg(&state)
            .status()
            .is_ok_and(|s| s.success());
        assert!(mounted, "mounting a tmpfs on {}", state.display());
        daemon.state_mount = Some(state);
        daemon.spawn();
        daemon
    }

    /// Starts a daemon that must refuse to start: waits up to 30 s for it to exit and
    /// returns how it exited, its log, and the daemon (not running; dropping it still tears
    /// down whatever the failed start left). Panics if it comes up instead.
    pub fn start_refused(binaries: &Binaries, policy: &str) -> (std::process::ExitStatus, Daemon) {
        let mut daemon = Daemon::prepare(binaries, policy, &[]);
        daemon.child = Some(daemon.command().spawn().unwrap());
        match daemon.wait_exit(Duration::from_secs(30)) {
            Some(status) => (status, daemon),
            None => panic!(
                "the daemon did not refuse to start (still running after 30 s):\n{}",
                daemon.log()
            ),
        }
    }

    pub fn pin_dir(&self) -> PathBuf {
        PathBuf::from("/sys/fs/bpf").join(&self.name)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("secops.sock")
    }

    pub fn secops(&self) -> Command {
        let mut c = match &self.namespace {
            Some(ns) => ns.command(&self.secops),
            None => Command::new(&self.secops),
        };
        c.arg("--state-dir").arg(self.dir.join("state"));
        c
    }

    pub fn spawn(&mut self) {
        let child = self.command().spawn().unwrap();
        self.child = Some(child);
        let started = Instant::now();
        while self.status().is_none() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("the daemon exited ({status}):\n{}", self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the daemon did not come up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `secops daemon` with this daemon's own paths, its stderr appended to `daemon.log`.
    fn command(&self) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .unwrap();
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&self.secops);
                c.arg("--state-dir").arg(self.dir.join("state"));
                c
            }
            None => self.secops(),
        };
        // Its own (missing: none) notifications file unless the test gives one, never the
        // machine's.
        let mut notifications = Vec::new();
        if !self.extra_args.iter().any(|a| a == "--notifications") {
            notifications.push(std::ffi::OsString::from("--notifications"));
            notifications.push(self.dir.join("notifications.yaml").into_os_string());
        }
        command
            .args(["--log", "info", "daemon", "--policy"])
            .arg(self.dir.join("policy.yaml"))
            .arg("--socket")
            .arg(self.socket())
            .arg("--pin-dir")
            .arg(self.pin_dir())
            .args(["--cgroup-root", &self.name])
            .args(&self.extra_args)
            .args(&notifications)
            .stdout(Stdio::null())
            .stderr(log);
        command
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn status(&self) -> Option<Value> {
        let out = self
            .secops()
            .args(["status", "--json", "--socket"])
            .arg(self.socket())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// `secops status` as a person reads it.
    pub fn status_text(&self) -> String {
        let out = self
            .secops()
            .args(["status", "--socket"])
            .arg(self.socket())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on the pid of a child this test started.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// Waits up to `limit` for the daemon to exit on its own (after a SIGTERM, say).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn kill_and_wait(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `secops run --agent AGENT -- secops-netprobe ARGS`.
    fn agent_command(&self, agent: &str, args: &[&str]) -> Command {
        self.agent_program(agent, &self.probe, args)
    }

    /// `secops run --agent AGENT -- PROGRAM ARGS`.
    pub fn agent_program(&self, agent: &str, program: &std::path::Path, args: &[&str]) -> Command {
        let mut command = self.secops();
        command
            .args(["run", "--agent", agent, "--socket"])
            .arg(self.socket())
            .arg("--")
            .arg(program)
            .args(args);
        command
    }

    /// Runs `secops-apiprobe OP SOCKET ARGS` (at `apiprobe`: only test targets know the
    /// path) inside `agent`'s cgroup; panics with its stderr and the daemon's log unless it
    /// succeeds; returns its stdout without the trailing newline.
    pub fn api_probe(
        &self,
        apiprobe: &Path,
        agent: &str,
        op: &str,
        socket: &Path,
        args: &[&str],
    ) -> String {
        let socket = socket.to_str().unwrap();
        let mut full = vec![op, socket];
        full.extend_from_slice(args);
        let out = self.agent_program(agent, apiprobe, &full).output().unwrap();
        assert!(
            out.status.success(),
            "apiprobe {op} {args:?} as {agent}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// `secops run --ask --agent AGENT -- secops-netprobe ARGS`: the probe's connects (and
    /// its own exec) wait for the daemon's answer.
    pub fn asked_probe(&self, agent: &str, args: &[&str]) -> Command {
        let mut command = self.secops();
        command
            .args(["run", "--ask", "--agent", agent, "--socket"])
            .arg(self.socket())
            .arg("--")
            .arg(&self.probe)
            .args(args);
        command
    }

    /// An API client as this (root, outside every agent cgroup) process: an admin.
    pub fn admin_client(&self) -> secops_daemon::api::client::Client {
        secops_daemon::api::client::Client::new(&self.socket(), Duration::from_secs(30))
    }

    /// Runs an agent to its end.
    pub fn agent(&self, agent: &str, args: &[&str]) -> Output {
        self.agent_command(agent, args).output().unwrap()
    }

    /// Starts an agent without waiting for it.
    pub fn agent_spawn(&self, agent: &str, args: &[&str]) -> Child {
        self.agent_command(agent, args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn records(&self) -> Vec<Value> {
        let out = self
            .secops()
            .args(["audit", "query", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "audit query: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until the audit log holds `count` records matching `want`.
    pub fn wait_for_records(
        &self,
        count: usize,
        what: &str,
        want: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let found: Vec<Value> = self.records().into_iter().filter(|r| want(r)).collect();
            if found.len() >= count {
                return found;
            }
            if started.elapsed() > Duration::from_secs(15) {
                panic!(
                    "expected {count} audit record(s) of {what}, found {}:\n{:#?}\ndaemon log:\n{}",
                    found.len(),
                    self.records(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Daemon {
    /// After an agent's burst of unlinks of paths starting with `prefix`: how many of them the
    /// audit log holds, and how many it reports lost (ring buffer full), once both counts
    /// have stopped moving.
    pub fn settled_unlink_counts(&self, prefix: &str, expected: u64) -> (u64, u64) {
        let counts = || {
            let records = self.records();
            let audited = records
                .iter()
                .filter(|r| {
                    r["action"] == "fs:delete"
                        && r["object"]["value"]
                            .as_str()
                            .is_some_and(|v| v.starts_with(prefix))
                })
                .count() as u64;
            let lost: u64 = records
                .iter()
                .filter(|r| r["rule_id"] == "kernel.events-lost" && r["action"] == "fs:delete")
                .filter_map(|r: &Value| {
                    r["reason"].as_str()?.split(' ').next()?.parse::<u64>().ok()
                })
                .sum();
            (audited, lost)
        };
        let started = Instant::now();
        let mut last = (u64::MAX, u64::MAX);
        loop {
            std::thread::sleep(Duration::from_secs(2));
            let now = counts();
            let done = now.0 + now.1 >= expected || started.elapsed() > Duration::from_secs(120);
            if now == last && done {
                return now;
            }
            last = now;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill_and_wait();
        // Agents this test started may still run: kill them by the pids in the cgroups.
        let parent = match &self.namespace {
            Some(ns) => Ok(ns.host_cgroup().to_path_buf()),
            None => secops_daemon::kernel::fs::cgroup2_mount(),
        };
        if let Ok(parent) = parent {
            let root = parent.join(&self.name);
            if let Ok(dir) = secops_daemon::cgroups::CgroupDir::open_path(&root) {
                for pid in dir.procs().unwrap_or_default() {
                    // SAFETY: kill(2) on a pid inside this test's own cgroup.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let out = self
            .secops()
            .arg("teardown")
            .arg("--pin-dir")
            .arg(self.pin_dir())
            .args(["--cgroup-root", &self.name])
            .output();
        if let Ok(out) = out {
            if !out.status.success() {
                eprintln!(
                    "teardown of {}: {}",
                    self.name,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        if let Some(state) = &self.state_mount {
            let _ = Command::new("umount").arg(state).status();
        }
        // The daemon's closed segments are immutable and its open one append-only.
        secops_daemon::audit::segment::unprotect_tree(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
