//! Parked deletes and file grants under BPF LSM. `secops run --ask` starts `rm` on a file
//! whose deletion the policy escalates: the unlink waits in the kernel on an approval ticket
//! (source `parked`), and on approval continues and passes the LSM check through the grant
//! for that file's inode. When the path is swapped while the call waits (a directory symlink
//! repointed), the approval still names the file the daemon resolved, so the LSM denies the
//! file the call really reaches and nothing is deleted.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixtures::{describe, secops, Daemon, SECOPS};

const AGENT: &str = "asker";
const WORKSPACE: &str = "/srv/agents/asker/ws";
const ASKED: &str = "/srv/asked";

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
  - id: ask.delete
    description: deleting these asks a human first
    actions: [fs:delete]
    paths: [{ASKED}/**]
    verdict: escalate
    risk: high
  - id: exec.system
    actions: [proc:exec]
    binaries: [/bin/*]
    risk: low
"#
    )
}

fn write(path: &str) -> Result<(), String> {
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    std::fs::write(path, b"keep?\n").map_err(|e| format!("writing {path}: {e}"))
}

/// Points the workspace symlink `d` at `target`, replacing it atomically.
fn point_link(target: &str) -> Result<(), String> {
    let tmp = format!("{WORKSPACE}/d.new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| format!("symlink {tmp}: {e}"))?;
    std::fs::rename(&tmp, format!("{WORKSPACE}/d")).map_err(|e| format!("renaming {tmp}: {e}"))
}

fn asked_rm(daemon: &Daemon, path: &str) -> Result<Child, String> {
    Command::new(SECOPS)
        .args(["run", "--ask", "--agent", AGENT, "--socket"])
        .arg(daemon.socket())
        .args(["--", "/bin/rm", path])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting secops run --ask: {e}"))
}

/// The open ticket for `object`, once there is one.
fn ticket_for(daemon: &Daemon, object: &str) -> Result<Value, String> {
    let socket = daemon.socket();
    let socket = socket.to_str().ok_or("socket path is not UTF-8")?;
    let started = Instant::now();
    loop {
        let out = secops(&["approvals", "list", "--json", "--socket", socket])?;
        let tickets: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(t) = tickets.into_iter().find(|t| t["object"] == object) {
            return Ok(t);
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err(format!("no ticket for {object}\n{}", describe(&out)));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn approve(daemon: &Daemon, ticket: &Value) -> Result<(), String> {
    let id = ticket["id"]
        .as_u64()
        .ok_or("a ticket without an id")?
        .to_string();
    let socket = daemon.socket();
    let socket = socket.to_str().ok_or("socket path is not UTF-8")?;
    let out = secops(&[
        "approvals",
        "approve",
        &id,
        "--for",
        "1m",
        "--socket",
        socket,
    ])?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("approving ticket {id} failed\n{}", describe(&out)))
    }
}

/// Waits for the asked `rm` (started by this scenario) to end.
fn finish(mut child: Child) -> Result<std::process::Output, String> {
    let started = Instant::now();
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            return Err(format!("the asked rm did not end\n{}", describe(&out)));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().map_err(|e| e.to_string())
}

pub fn run() -> Result<String, String> {
    let approved = format!("{ASKED}/approved.txt");
    let first = format!("{ASKED}/d1/victim");
    let second = format!("{ASKED}/d2/victim");
    for file in [&approved, &first, &second] {
        write(file)?;
    }
    std::fs::create_dir_all(WORKSPACE).map_err(|e| format!("creating {WORKSPACE}: {e}"))?;
    point_link(&format!("{ASKED}/d1"))?;

    let daemon = Daemon::start(&policy())?;
    let result = scenario(&daemon, &approved, &first, &second);
    let log = daemon.log();
    let stopped = daemon.stop();
    let detail = result.map_err(|why| format!("{why}\ndaemon log:\n{log}"))?;
    stopped?;
    Ok(detail)
}

fn scenario(daemon: &Daemon, approved: &str, first: &str, second: &str) -> Result<String, String> {
    // 1. Parked, then approved: the delete goes through.
    let mut rm = asked_rm(daemon, approved)?;
    let ticket = match ticket_for(daemon, approved) {
        Ok(ticket) => ticket,
        Err(why) => {
            let _ = rm.kill();
            let out = rm.wait_with_output().map_err(|e| e.to_string())?;
            return Err(format!("{why}\nthe asked rm:\n{}", describe(&out)));
        }
    };
    if ticket["source"] != "parked" {
        return Err(format!("the ticket is not from a parked call: {ticket}"));
    }
    std::thread::sleep(Duration::from_millis(500));
    if rm.try_wait().map_err(|e| e.to_string())?.is_some() || !Path::new(approved).exists() {
        return Err("the delete did not wait for a decision".into());
    }
    approve(daemon, &ticket)?;
    let out = finish(rm)?;
    if !out.status.success() || Path::new(approved).exists() {
        return Err(format!(
            "the approved delete did not happen\n{}",
            describe(&out)
        ));
    }

    // 2. Parked on d1/victim; the path is swapped to d2 before the approval: the kernel
    // judges d2/victim, which nobody approved.
    let through_link = format!("{WORKSPACE}/d/victim");
    let rm = asked_rm(daemon, &through_link)?;
    let ticket = ticket_for(daemon, first)?;
    point_link(&format!("{ASKED}/d2"))?;
    approve(daemon, &ticket)?;
    let out = finish(rm)?;
    if out.status.success() || !Path::new(second).exists() || !Path::new(first).exists() {
        return Err(format!(
            "the swapped delete was not denied (d1 {}, d2 {})\n{}",
            Path::new(first).exists(),
            Path::new(second).exists(),
            describe(&out)
        ));
    }

    // The audit log: the grant's use for the approved file, and the LSM denial of the other.
    let started = Instant::now();
    loop {
        let records = daemon.audit_records(AGENT)?;
        let granted = records.iter().any(|r| {
            r["verdict"] == "allow"
                && r["object"]["value"] == approved
                && r["reason"].as_str().is_some_and(|s| s.contains("approval"))
        });
        let denied = records.iter().any(|r| {
            r["verdict"] == "escalate"
                && r["source"] == "kernel"
                && r["object"]["value"] == second
                && r["reason"].as_str().is_some_and(|s| s.contains("BPF LSM"))
        });
        if granted && denied {
            return Ok(
                "a parked delete passed on approval (LSM grant by inode); a path swapped while parked was denied".into(),
            );
        }
        if started.elapsed() > Duration::from_secs(15) {
            let lines: Vec<String> = records.iter().map(Value::to_string).collect();
            return Err(format!(
                "audit: grant use {granted}, swapped denial {denied}\n{}",
                lines.join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
