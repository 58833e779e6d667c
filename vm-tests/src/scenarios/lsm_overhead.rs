//! What the BPF LSM programs cost (issue 4's measure): unlink, open-for-write, exec, chmod and mkdir loops
//! (`secops-vm-runner --loops`), inside an agent cgroup and in a process outside every agent
//! cgroup, with the LSM programs attached and then detached, twice, in one boot. The figure
//! is the ratio attached/detached of the loops' medians: software emulation makes absolute
//! times meaningless, but both sides of a ratio pay it alike.
//!
//! The daemon is stopped before anything is measured (its pins keep everything attached
//! and enforcing): otherwise the attached side would also pay for the daemon auditing the
//! loops' events, which on an emulated machine runs on the same host thread. The LSM
//! programs are then taken over from the pins ([`LsmPrograms`]) so that they can be
//! detached and attached again many times in one boot: rounds alternate attached and
//! detached with the second side in mirrored order (inside, outside | outside, inside), so
//! drift within a round falls on both sides alike. The figure per loop is the median over
//! rounds of each round's ratio.
//!
//! A benchmark, not a test: it is not in the default run (`cargo xtask vm-test --only
//! lsm-overhead --icount 3`), and it passes whenever it could measure; the detail says
//! whether the targets (at most 1.15x inside, 1.05x outside) were met. Under `--icount` the
//! guest's clock counts instructions, so the ratios repeat exactly; without it, TCG's
//! wall-clock noise is larger than the effect.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fixtures::{describe, join_cgroup_before_exec, secops, Daemon, LsmPrograms};
use crate::loops;

const AGENT: &str = "bench";
const WORKSPACE: &str = "/srv/bench/ws";
const OUTSIDE: &str = "/srv/bench/outside";
const ROUNDS: usize = 9;
const TARGET_INSIDE: f64 = 1.15;
const TARGET_OUTSIDE: f64 = 1.05;

/// Rules like the default policy's, so the walk up from a workspace file meets real
/// entries.
fn policy() -> String {
    format!(
        r#"
version: 1
defaults:
  homes: [/root]
agents:
  - name: {AGENT}
    workspace: {WORKSPACE}
    user: 0
    autonomy: semi
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
  - id: credentials.read
    actions: [secret:read, fs:read]
    paths: ["~/.ssh/**"]
    verdict: deny
    risk: critical
    hard: true
  - id: exec.system
    actions: [proc:exec]
    binaries: [/bin/*, /usr/bin/*]
    risk: low
"#
    )
}

/// Runs the loops in `dir`, first joining `cgroup` if one is given.
fn loops_in(cgroup: Option<&Path>, dir: &str) -> Result<[u64; loops::LOOPS], String> {
    let mut command = Command::new("/bin/secops-vm-runner");
    command.args(["--loops", dir]);
    if let Some(cgroup) = cgroup {
        join_cgroup_before_exec(&mut command, cgroup)?;
    }
    let out = command
        .output()
        .map_err(|e| format!("running the loops: {e}"))?;
    if !out.status.success() {
        return Err(format!("the loops failed\n{}", describe(&out)));
    }
    loops::parse(&String::from_utf8_lossy(&out.stdout))
        .ok_or_else(|| format!("no LOOPS line\n{}", describe(&out)))
}

/// Each round's attached/detached ratio per loop, and the medians (ns) behind them.
#[derive(Default)]
struct Ratios {
    rounds: Vec<([u64; loops::LOOPS], [u64; loops::LOOPS])>,
}

impl Ratios {
    fn push(&mut self, attached: [u64; loops::LOOPS], detached: [u64; loops::LOOPS]) {
        self.rounds.push((attached, detached));
    }

    /// The median over rounds of loop `i`'s ratio, with that round's two medians.
    fn median(&self, i: usize) -> (f64, u64, u64) {
        let mut per_round: Vec<(f64, u64, u64)> = self
            .rounds
            .iter()
            .map(|(a, d)| (a[i] as f64 / d[i].max(1) as f64, a[i], d[i]))
            .collect();
        per_round.sort_by(|x, y| x.0.total_cmp(&y.0));
        per_round
            .get(per_round.len() / 2)
            .copied()
            .unwrap_or((0.0, 0, 0))
    }
}

fn describe_ratios(label: &str, ratios: &Ratios, target: f64) -> String {
    let met = (0..loops::LOOPS).all(|i| ratios.median(i).0 <= target);
    let per = |i: usize| {
        let (r, a, d) = ratios.median(i);
        let spread: Vec<String> = ratios
            .rounds
            .iter()
            .map(|(a, d)| format!("{:.2}", a[i] as f64 / d[i].max(1) as f64))
            .collect();
        format!("{r:.2}x ({a} vs {d} ns; rounds {})", spread.join(" "))
    };
    let each: Vec<String> = (0..loops::LOOPS)
        .map(|i| format!("{} {}", loops::NAMES[i], per(i)))
        .collect();
    format!(
        "{label}: {} [target <= {target}x: {}]",
        each.join(", "),
        if met { "met" } else { "NOT met" }
    )
}

/// A stopped daemon: its pins keep its programs attached and enforcing.
fn stopped_daemon() -> Result<(PathBuf, PathBuf), String> {
    let daemon = Daemon::start(&policy())?;
    let cgroup = daemon.agent_cgroup(AGENT)?;
    let pin_dir = daemon.pin_dir();
    let log = daemon.log();
    let stopped = daemon.stop()?;
    if !stopped.success() {
        return Err(format!("the daemon exited {stopped}\ndaemon log:\n{log}"));
    }
    Ok((pin_dir, cgroup))
}

/// `secops teardown` of a stopped daemon's pins and cgroups.
fn teardown(pin_dir: &Path) -> Result<(), String> {
    let name = pin_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("a pin directory without a name")?;
    let pins = pin_dir
        .to_str()
        .ok_or("a pin directory that is not UTF-8")?;
    let out = secops(&["teardown", "--pin-dir", pins, "--cgroup-root", name])?;
    if !out.status.success() {
        return Err(format!("secops teardown failed\n{}", describe(&out)));
    }
    Ok(())
}

/// One round: attached (inside, outside), then detached in mirrored order.
fn round(
    cgroup: &Path,
    inside: &mut Ratios,
    outside: &mut Ratios,
    detach: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let inside_attached = loops_in(Some(cgroup), WORKSPACE)?;
    let outside_attached = loops_in(None, OUTSIDE)?;
    detach()?;
    outside.push(outside_attached, loops_in(None, OUTSIDE)?);
    inside.push(inside_attached, loops_in(Some(cgroup), WORKSPACE)?);
    Ok(())
}

pub fn run() -> Result<String, String> {
    for dir in [WORKSPACE, OUTSIDE] {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {dir}: {e}"))?;
    }
    let (pin_dir, cgroup) = stopped_daemon()?;
    let mut inside = Ratios::default();
    let mut outside = Ratios::default();
    let (attached, how) = match LsmPrograms::take_over(&pin_dir)? {
        Some(mut programs) => {
            for _ in 0..ROUNDS {
                round(&cgroup, &mut inside, &mut outside, || {
                    programs.detach();
                    Ok(())
                })?;
                programs.attach()?;
            }
            (programs.count(), "re-attached in place")
        }
        // Before 5.13 a detached LSM program cannot be attached again: each round's
        // attached side is a daemon started afresh (stopped, its pins attached), and
        // detaching is unpinning its LSM links.
        None => {
            teardown(&pin_dir)?;
            let mut count = 0;
            for _ in 0..ROUNDS {
                let (pin_dir, cgroup) = stopped_daemon()?;
                count = LsmPrograms::pinned(&pin_dir);
                round(&cgroup, &mut inside, &mut outside, || {
                    LsmPrograms::unpin(&pin_dir)
                })?;
                teardown(&pin_dir)?;
            }
            (
                count,
                "a fresh daemon per round: this kernel cannot attach an LSM program again",
            )
        }
    };
    // Under emulation the clock source decides what a timestamp costs (an HPET read is
    // an emulated MMIO access): say which one the numbers were taken with.
    let clocksource =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
    Ok(format!(
        "{}; {}; {attached} LSM programs, {ROUNDS} rounds ({how}), clocksource {clocksource}",
        describe_ratios("agent cgroup", &inside, TARGET_INSIDE),
        describe_ratios("outside", &outside, TARGET_OUTSIDE)
    ))
}
