//! The attack suite against the BPF LSM programs: `secops-attack`, placed straight into an
//! agent cgroup (no seccomp filter, no in-process hook: the kernel layer alone), tries every
//! attack and every benign operation. Every attack must be blocked with EPERM/EACCES and
//! leave its target intact, every benign operation must succeed, and every attack must have
//! a denial in the audit log with the agent, its action type and a rule.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixtures::{describe, join_cgroup_before_exec, Daemon};
use secops_vm_tests::attack::report::{self, Verdict};

pub(super) const AGENT: &str = "attack";
pub(super) const WORKSPACE: &str = "/srv/agents/attack/ws";
const PROTECTED: &str = "/srv/protected";
const SECRET_DIR: &str = "/root/.ssh";
/// Not a busybox applet name: every applet is the one busybox inode, which a deny by
/// inode would take away from every other applet too.
const DENIED_BINARY: &str = "/usr/bin/socat";
const ALLOWED_BINARY: &str = "/bin/true";
const ATTACK: &str = "/bin/secops-attack";
/// Deleting here escalates: denied now, with an approval ticket.
const ESCALATED: &str = "/srv/escalate";
const ALLOWED_PORT: u16 = 9000;
const BLOCKED_PORT: u16 = 9001;

/// The workspace and the key share the initramfs root filesystem, so hardlinks between
/// them are possible (/tmp is another filesystem).
fn policy() -> String {
    format!(
        r#"
version: 1
defaults:
  homes: [/root]
  egress: deny
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
  - id: protected.files
    description: nothing in the protected tree is deleted, moved, linked or changed
    actions: [fs:delete, fs:rename, fs:link, fs:truncate, fs:write, fs:create, fs:chmod]
    paths: [{PROTECTED}/**]
    verdict: deny
    risk: high
  - id: escalate.delete
    description: deleting these asks a human first
    actions: [fs:delete]
    paths: [{ESCALATED}/**]
    verdict: escalate
    risk: high
  - id: credentials.read
    actions: [secret:read, fs:read]
    paths: ["~/.ssh/**"]
    verdict: deny
    risk: critical
    hard: true
  - id: credentials.modify
    actions: [fs:write, fs:create, fs:delete, fs:rename, fs:link, fs:truncate]
    paths: ["~/.ssh/**"]
    verdict: deny
    risk: critical
    hard: true
  - id: exec.network-tools
    actions: [proc:exec]
    binaries: ["**/socat"]
    verdict: deny
    risk: high
  - id: exec.system
    actions: [proc:exec]
    binaries: [/bin/*, /usr/bin/*, /lib64/*]
    risk: low
  - id: exec.elsewhere
    description: an exec allowlist, nothing outside the system directories runs
    actions: [proc:exec]
    binaries: ["/**"]
    unless:
      binaries: [/bin/*, /usr/bin/*, /lib64/*]
    verdict: deny
    risk: high
{moved_tree}egress:
  {AGENT}:
    allow:
      - cidr: 127.0.0.1/32
        ports: [{ALLOWED_PORT}]
"#,
        moved_tree = super::moved_tree::rule()
    )
}

/// The action type each attack's denial is audited as.
const EXPECTED_ACTIONS: &[(&str, &str)] = &[
    ("unlink", "fs:delete"),
    ("unlinkat-dirfd", "fs:delete"),
    ("rmdir", "fs:delete"),
    ("rename-over", "fs:delete"),
    ("rename-away", "fs:rename"),
    ("hardlink-write", "fs:link"),
    ("truncate", "fs:truncate"),
    ("open-trunc", "fs:write"),
    ("open-write", "fs:write"),
    ("uring-unlinkat", "fs:delete"),
    ("uring-renameat", "fs:rename"),
    ("uring-openat", "secret:read"),
    ("symlink-delete", "fs:delete"),
    ("chmod-protected", "fs:chmod"),
    ("mkdir-protected", "fs:create"),
    ("symlink-protected", "fs:create"),
    ("renamed-denied-binary", "proc:exec"),
    ("memfd-exec", "proc:exec"),
    ("ldso-exec", "proc:exec"),
    ("secret-read", "secret:read"),
    ("secret-hardlink-read", "secret:read"),
    ("secret-link", "fs:link"),
    ("secret-proc-fd", "secret:read"),
    ("raw-socket", "net:send"),
    ("packet-socket", "net:send"),
    ("connect-mapped", "net:connect"),
    ("connect-blocked", "net:connect"),
    ("ptrace-attach-foreign", "proc:ptrace"),
    ("ptrace-seize-foreign", "proc:ptrace"),
    ("process-vm-writev", "proc:ptrace"),
    ("proc-mem-write", "proc:ptrace"),
    ("pidfd-getfd", "proc:ptrace"),
    ("kill-foreign", "proc:signal"),
    ("tgkill-foreign", "proc:signal"),
    ("sigqueue-foreign", "proc:signal"),
    ("finit-module", "sys:module"),
    ("init-module", "sys:module"),
    ("mount-tmpfs", "sys:mount"),
    ("bind-over-policy", "sys:mount"),
    ("pivot-root", "sys:mount"),
    ("rename-state-parent", "fs:rename"),
    ("stop-daemon", "proc:signal"),
    ("ptrace-daemon", "proc:ptrace"),
    ("daemon-mem", "proc:ptrace"),
    ("kill-daemon", "proc:signal"),
    ("bpf-detach", "sys:bpf"),
    ("bpf-prog-ids", "sys:bpf"),
    ("umount-pins", "sys:mount"),
    ("cgroup-escape", "sys:cgroup"),
];

fn write(path: &str, content: &[u8]) -> Result<(), String> {
    std::fs::write(path, content).map_err(|e| format!("writing {path}: {e}"))
}

fn mkdir(path: &str) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("creating {path}: {e}"))
}

/// The files the attacks aim at, made before the daemon starts (so they are enumerated).
fn make_fixtures() -> Result<(), String> {
    for dir in [WORKSPACE, "/srv/protected/subdir", SECRET_DIR, "/usr/bin"] {
        mkdir(dir)?;
    }
    write("/srv/protected/keep.txt", b"keep\n")?;
    mkdir(ESCALATED)?;
    write(&format!("{ESCALATED}/doomed.txt"), b"doomed\n")?;
    let key = format!("{SECRET_DIR}/id_rsa");
    write(
        &key,
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n",
    )?;
    let prelinked = format!("{WORKSPACE}/prelinked");
    let _ = std::fs::remove_file(&prelinked);
    std::fs::hard_link(&key, &prelinked).map_err(|e| format!("linking {prelinked}: {e}"))?;
    std::fs::copy(ATTACK, DENIED_BINARY)
        .map_err(|e| format!("copying {ATTACK} to {DENIED_BINARY}: {e}"))?;
    super::moved_tree::make_fixtures()
}

/// Accepts and drops connections until the process ends.
fn listen(port: u16) -> Result<(), String> {
    let listener =
        TcpListener::bind(("127.0.0.1", port)).map_err(|e| format!("listening on {port}: {e}"))?;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    Ok(())
}

/// Runs `secops-attack` with its first instruction being to join the agent cgroup.
fn run_attacks(daemon: &Daemon, cgroup: &Path, victim: u32) -> Result<String, String> {
    let daemon_pid = daemon.pid().ok_or("the daemon is not running")?;
    let bpf_pin = daemon.pin_dir().join("link_secops_connect4");
    let mut command = Command::new(ATTACK);
    command
        .arg("run")
        .args(["--workspace", WORKSPACE, "--protected", PROTECTED])
        .args(["--secret", &format!("{SECRET_DIR}/id_rsa")])
        .args(["--prelinked-secret", &format!("{WORKSPACE}/prelinked")])
        .args([
            "--denied-binary",
            DENIED_BINARY,
            "--allowed-binary",
            ALLOWED_BINARY,
        ])
        .args(["--daemon-pid", &daemon_pid.to_string()])
        .arg("--bpf-pin")
        .arg(&bpf_pin)
        .args(["--foreign-procs", "/sys/fs/cgroup/cgroup.procs"])
        .args(["--blocked-port", &BLOCKED_PORT.to_string()])
        .args(["--allowed-port", &ALLOWED_PORT.to_string()])
        .args(["--victim-pid", &victim.to_string()])
        .arg("--policy-file")
        .arg(daemon.policy_file())
        .arg("--state-dir")
        .arg(daemon.state_dir())
        .stdin(Stdio::null());
    join_cgroup_before_exec(&mut command, cgroup)?;
    let out = command
        .output()
        .map_err(|e| format!("running {ATTACK} in {}: {e}", cgroup.display()))?;
    if !out.status.success() {
        return Err(format!("{ATTACK} failed\n{}", describe(&out)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The victim process: killed by its pid and reaped on drop.
struct Victim(std::process::Child);

impl Victim {
    fn gone(&mut self) -> bool {
        !matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `argv` inside the agent cgroup (busybox tools: no seccomp, the kernel layer alone).
pub(super) fn run_in_agent(cgroup: &Path, argv: &[&str]) -> Result<std::process::Output, String> {
    let mut command = Command::new(argv[0]);
    command.args(&argv[1..]).stdin(Stdio::null());
    join_cgroup_before_exec(&mut command, cgroup)?;
    command
        .output()
        .map_err(|e| format!("running {argv:?} in the agent cgroup: {e}"))
}

/// An escalated delete fails now and opens one approval ticket (source kernel) that a
/// second attempt joins.
fn escalation_opens_a_ticket(daemon: &Daemon, cgroup: &Path) -> Result<(), String> {
    let doomed = format!("{ESCALATED}/doomed.txt");
    for attempt in 1..=2 {
        let out = run_in_agent(cgroup, &["/bin/rm", "-f", &doomed])?;
        if out.status.success() || !Path::new(&doomed).exists() {
            return Err(format!(
                "attempt {attempt} to delete {doomed} was not refused\n{}",
                describe(&out)
            ));
        }
    }
    let socket = daemon.socket();
    let socket = socket.to_str().ok_or("socket path is not UTF-8")?;
    let started = Instant::now();
    loop {
        let out = crate::fixtures::secops(&["approvals", "list", "--json", "--socket", socket])?;
        let tickets: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let ticket = tickets.iter().find(|t| {
            t["agent"] == AGENT
                && t["action"] == "fs:delete"
                && t["object"] == doomed.as_str()
                && t["source"] == "kernel"
        });
        match ticket {
            Some(t) if t["count"] == 2 && t["rule_id"] == "escalate.delete" => return Ok(()),
            _ if started.elapsed() > Duration::from_secs(10) => {
                return Err(format!(
                    "no kernel ticket for {doomed} with 2 attempts\n{}",
                    describe(&out)
                ))
            }
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Denials per action type in the audit log, waiting (up to 15 s) until there are at least
/// `wanted` of each: the pipeline audits asynchronously.
fn audited_denials(
    daemon: &Daemon,
    wanted: &BTreeMap<&str, usize>,
) -> Result<(BTreeMap<String, usize>, Vec<Value>), String> {
    let started = Instant::now();
    loop {
        let records = daemon.audit_records(AGENT)?;
        let denials: Vec<Value> = records
            .into_iter()
            .filter(|r| r["verdict"] == "deny" || r["verdict"] == "escalate")
            .collect();
        let mut counts = BTreeMap::new();
        for r in &denials {
            *counts
                .entry(r["action"].as_str().unwrap_or("?").to_owned())
                .or_insert(0) += 1;
        }
        let enough = wanted
            .iter()
            .all(|(action, n)| counts.get(*action).copied().unwrap_or(0) >= *n);
        if enough || started.elapsed() > Duration::from_secs(15) {
            return Ok((counts, denials));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The guest has no network device, and its loopback starts down.
fn loopback_up() -> Result<(), String> {
    let out = Command::new("/bin/ip")
        .args(["link", "set", "lo", "up"])
        .output()
        .map_err(|e| format!("running ip link set lo up: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip link set lo up failed\n{}", describe(&out)))
    }
}

/// Whether an aggregated `fs:delete` allow record under `workspace.files` appears within
/// 12 s.
fn counted_deletes_audited(daemon: &Daemon) -> Result<bool, String> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(12) {
        let found = daemon.audit_records(AGENT)?.iter().any(|r| {
            r["action"] == "fs:delete"
                && r["verdict"] == "allow"
                && r["rule_id"] == "workspace.files"
                && r["reason"]
                    .as_str()
                    .is_some_and(|reason| reason.contains("counted"))
        });
        if found {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(false)
}

pub fn run() -> Result<String, String> {
    loopback_up()?;
    make_fixtures()?;
    listen(ALLOWED_PORT)?;
    listen(BLOCKED_PORT)?;
    let daemon = Daemon::start(&policy())?;
    let result = attack(&daemon);
    let log = daemon.log();
    let stopped = daemon.stop();
    let detail = result.map_err(|why| format!("{why}\ndaemon log:\n{log}"))?;
    let status = stopped?;
    if !status.success() {
        return Err(format!(
            "the daemon exited {status} on SIGTERM\ndaemon log:\n{log}"
        ));
    }
    Ok(detail)
}

fn attack(daemon: &Daemon) -> Result<String, String> {
    let cgroup = daemon.agent_cgroup(AGENT)?;
    // A process outside every agent that is not the daemon: what the ptrace and signal
    // attacks aim at.
    let mut victim = Victim(
        Command::new("/bin/sleep")
            .arg("600")
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the victim: {e}"))?,
    );
    let output = run_attacks(daemon, &cgroup, victim.0.id())?;
    if victim.gone() {
        return Err(format!(
            "the victim process died during the attacks\n{output}"
        ));
    }
    let report = report::parse(&output).map_err(|e| format!("{e}\noutput:\n{output}"))?;

    let mut problems = Vec::new();
    for b in report.benign.iter().filter(|b| !b.ok) {
        problems.push(format!("benign {} FAILED: {}", b.name, b.detail));
    }
    for a in &report.attacks {
        if !matches!(a.verdict, Verdict::Blocked(_)) {
            problems.push(format!("attack {} {:?}: {}", a.name, a.verdict, a.detail));
        }
    }
    for (name, _) in EXPECTED_ACTIONS {
        if report.attack(name).is_none() {
            problems.push(format!("attack {name} did not run"));
        }
    }

    if let Err(why) = escalation_opens_a_ticket(daemon, &cgroup) {
        problems.push(why);
    }
    let moved_tree = super::moved_tree::run(daemon, &cgroup).unwrap_or_else(|found| {
        problems.extend(found);
        String::new()
    });

    let mut wanted: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, action) in EXPECTED_ACTIONS {
        *wanted.entry(action).or_insert(0) += 1;
    }
    let (counts, denials) = audited_denials(daemon, &wanted)?;
    for (action, n) in &wanted {
        let got = counts.get(*action).copied().unwrap_or(0);
        if got < *n {
            problems.push(format!(
                "audit: {got} denials of {action}, expected at least {n}"
            ));
        }
    }
    for r in &denials {
        if r["rule_id"].is_null() || r["agent"] != AGENT {
            problems.push(format!("audit: a denial without agent or rule: {r}"));
        }
    }
    // The benign deletes in the workspace (a low-risk rule) are counted in the kernel and
    // audited in aggregate within the next drain (every 5 s).
    if !counted_deletes_audited(daemon)? {
        problems.push(
            "audit: no aggregated record of the workspace deletes (rule workspace.files)".into(),
        );
    }
    let keep = std::fs::read_to_string("/srv/protected/keep.txt").unwrap_or_default();
    if keep != "keep\n" {
        problems.push(format!("the protected file changed: {keep:?}"));
    }
    if !problems.is_empty() {
        let records: Vec<String> = denials
            .iter()
            .map(|r| {
                format!(
                    "  {} {} {} rule {}",
                    r["action"], r["verdict"], r["object"], r["rule_id"]
                )
            })
            .collect();
        return Err(format!(
            "{} problem(s): {}\nattack output:\n{output}\naudited denials:\n{}",
            problems.len(),
            problems.join("; "),
            records.join("\n")
        ));
    }
    Ok(format!(
        "{} attacks blocked and audited ({} denials), {} benign operations ok; {moved_tree}",
        report.attacks.len(),
        denials.len(),
        report.benign.len()
    ))
}
