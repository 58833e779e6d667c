//! The Landlock layer's cost, each from one run (issue 18):
//!
//! 1. unlink, open-for-write and exec loops of an agent started by the launcher with its
//!    Landlock ruleset, over the same loops started by the same launcher without it (rounds
//!    interleaved so drift hits both alike). Target: at most 1.10x.
//! 2. `secops run --agent coder -- /bin/true`, whole, with a 1,000-rule policy: registration
//!    (the daemon compiles the ruleset), the launcher building and restricting it, and the
//!    exec. Target: at most 50 ms.
//!
//! Needs root and Landlock; prints `skipped: ...` otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use secops_daemon::api::Registered;
use secops_host_tests::daemon::{Binaries, Daemon};
use secops_host_tests::kernel::{need_root, percentile, unique_name};

const LAUNCH: &str = env!("CARGO_BIN_EXE_secops-landlock-launch");
const LOOP: &str = env!("CARGO_BIN_EXE_secops-syscall-loop");
const ROUNDS: usize = 5;
const STARTS: usize = 20;

fn binaries() -> Binaries {
    Binaries {
        secops: env!("CARGO_BIN_EXE_secops-under-test").into(),
        probe: env!("CARGO_BIN_EXE_secops-netprobe").into(),
    }
}

struct Tree(PathBuf);

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A policy like the shipped one: the workspace, protected trees, secrets, exec rules; and
/// `extra` rules protecting one directory each below `base/tree`.
fn policy(base: &Path, extra: usize) -> String {
    let b = base.display();
    let mut out = format!(
        r#"version: 1
defaults:
  egress: deny
agents:
  - {{name: coder, workspace: {b}/ws, user: nobody, create_workspace: true}}
rules:
  - id: workspace.files
    actions: ["fs:*"]
    paths: ["${{workspace}}/**"]
    risk: low
  - id: destruction.outside-workspace
    actions: [fs:delete, fs:rename, fs:truncate]
    paths: ["/**"]
    unless:
      paths: ["${{workspace}}/*", "${{workspace}}/*/**", /tmp/*, /tmp/*/**]
    verdict: escalate
    risk: high
  - id: secrets
    actions: [secret:read, fs:read]
    paths: [/root/.ssh/**, /etc/shadow]
    verdict: deny
    risk: critical
  - id: exec.privilege
    actions: [proc:exec]
    binaries: ["**/sudo", "**/su"]
    verdict: deny
    risk: high
"#
    );
    for i in 0..extra {
        out += &format!(
            "  - id: tree.d{i}\n    actions: [fs:write, fs:create, fs:delete]\n    \
             paths: [\"{b}/tree/d{i}/**\"]\n    verdict: deny\n    risk: high\n"
        );
    }
    out
}

fn make_tree(base: &Path, extra: usize) {
    for i in 0..extra {
        std::fs::create_dir_all(base.join(format!("tree/d{i}"))).unwrap();
    }
}

/// Registers `coder` as an admin and keeps the answer in a file for the launcher.
fn register(daemon: &Daemon, dir: &Path) -> (PathBuf, Registered) {
    let registered: Registered = daemon
        .admin_client()
        .post("/v1/agents/coder/register", &serde_json::json!({}))
        .expect("register");
    let file = dir.join("registered.json");
    std::fs::write(&file, serde_json::to_vec(&registered).unwrap()).unwrap();
    (file, registered)
}

/// One run of the loop: the nanoseconds it reported.
fn run_loop(looper: &Path, registered: &Path, with_landlock: bool, mode: &str, n: usize) -> u128 {
    let mut c = Command::new(LAUNCH);
    c.arg(registered);
    if !with_landlock {
        c.arg("--without-landlock");
    }
    let out = c
        .arg("--")
        .arg(looper)
        .args([mode, &n.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{mode} loop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("nanoseconds")
}

fn loops(base: &Path) {
    // The agent (nobody) runs its own copy: the build directory may not be reachable.
    let looper = base.join("secops-syscall-loop");
    std::fs::copy(LOOP, &looper).unwrap();
    let daemon = Daemon::start(&binaries(), &policy(base, 0));
    let (file, registered) = register(&daemon, base);
    let plan = registered
        .landlock
        .expect("this kernel runs the Landlock layer");
    println!(
        "landlock bench: the agent's ruleset holds {} path rule(s)",
        plan.paths.len()
    );
    for (mode, n) in [("unlink", 5_000), ("open-write", 20_000), ("exec", 1_000)] {
        let (mut with, mut without) = (0u128, 0u128);
        // One of each first, unmeasured: page cache and the daemon's first records.
        run_loop(&looper, &file, true, mode, n / 10);
        run_loop(&looper, &file, false, mode, n / 10);
        for round in 0..ROUNDS {
            // Alternate which goes first, so neither always runs on a warmer cache.
            if round % 2 == 0 {
                with += run_loop(&looper, &file, true, mode, n);
                without += run_loop(&looper, &file, false, mode, n);
            } else {
                without += run_loop(&looper, &file, false, mode, n);
                with += run_loop(&looper, &file, true, mode, n);
            }
        }
        let per = |total: u128| total as f64 / (ROUNDS * n) as f64;
        let ratio = with as f64 / without as f64;
        println!(
            "landlock bench: {mode:<10} {:>9.0} ns/op with Landlock, {:>9.0} ns/op without: \
             {ratio:.3}x (target <= 1.10x) {}",
            per(with),
            per(without),
            if ratio <= 1.10 { "MET" } else { "NOT MET" }
        );
    }
}

fn startup(base: &Path) {
    const RULES: usize = 1_000;
    make_tree(base, RULES);
    let daemon = Daemon::start(&binaries(), &policy(base, RULES));
    let mut register_times = Vec::new();
    let mut rules = 0;
    for _ in 0..STARTS {
        let started = Instant::now();
        let (_, registered) = register(&daemon, base);
        register_times.push(started.elapsed());
        rules = registered.landlock.map_or(0, |p| p.paths.len());
    }
    let mut run_times = Vec::new();
    for _ in 0..STARTS {
        let started = Instant::now();
        let out = daemon
            .agent_program("coder", Path::new("/bin/true"), &[])
            .output()
            .unwrap();
        run_times.push(started.elapsed());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    register_times.sort();
    run_times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = percentile(&run_times, 0.5);
    println!(
        "landlock bench: {RULES}-rule policy ({rules} path rules): register (compile) median \
         {:.1} ms, p90 {:.1} ms; `secops run -- /bin/true` median {:.1} ms, p90 {:.1} ms \
         (target <= 50 ms) {}",
        ms(percentile(&register_times, 0.5)),
        ms(percentile(&register_times, 0.9)),
        ms(median),
        ms(percentile(&run_times, 0.9)),
        if median <= Duration::from_millis(50) {
            "MET"
        } else {
            "NOT MET"
        }
    );
}

fn main() {
    if !need_root("landlock bench") {
        return;
    }
    if secops_daemon::launcher::landlock::kernel_abi().is_none() {
        println!("skipped: landlock bench: the kernel has no Landlock");
        return;
    }
    let base = std::env::temp_dir().join(format!("secops-llbench-{}", unique_name()));
    std::fs::create_dir_all(&base).unwrap();
    let _tree = Tree(base.clone());
    loops(&base);
    startup(&base);
}
