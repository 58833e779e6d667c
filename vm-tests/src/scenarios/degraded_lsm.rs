//! A kernel booted with `bpf` left out of `lsm=`: BPF LSM programs cannot attach. The daemon
//! must still start, say in `secops status` that the LSM layer is INACTIVE and why, keep the
//! other layers enforcing (an agent's connect outside its allowlist is still EPERM), and a
//! policy with `defaults.require: [lsm]` must refuse the start and leave nothing pinned.

use serde_json::Value;

use crate::fixtures::{describe, secops, Daemon};

const POLICY: &str = "\
version: 1
agents:
  - name: smoke
    workspace: /tmp/secops-vm/workspace
    user: 0
    create_workspace: true
egress:
  smoke:
    allow:
      - cidr: 127.0.0.1/32
        ports: [8080]
";

const REQUIRING: &str = "\
version: 1
defaults:
  require: [lsm]
agents:
  - name: smoke
    workspace: /tmp/secops-vm/workspace
    user: 0
";

pub fn run() -> Result<String, String> {
    let lsms = std::fs::read_to_string("/sys/kernel/security/lsm")
        .map_err(|e| format!("reading /sys/kernel/security/lsm: {e}"))?;
    if lsms.trim().split(',').any(|l| l == "bpf") {
        return Err(format!(
            "this boot has bpf in its LSM list ({}): the harness did not boot with it left out",
            lsms.trim()
        ));
    }
    let daemon = Daemon::start(POLICY)?;
    let checked = degraded_but_enforcing(&daemon);
    let log = daemon.log();
    daemon.stop()?;
    let lsm_reason = checked.map_err(|why| format!("{why}\ndaemon log:\n{log}"))?;

    let (status, refused) = Daemon::start_refused(REQUIRING)?;
    let log = refused.log();
    if status.success() {
        return Err(format!(
            "a daemon requiring lsm exited 0 without BPF LSM\ndaemon log:\n{log}"
        ));
    }
    if !(log.contains("defaults.require") && log.contains("lsm (")) {
        return Err(format!(
            "the refused start does not name the missing layer\ndaemon log:\n{log}"
        ));
    }
    let pin_dir = refused.pin_dir();
    if pin_dir.exists() {
        let left: Vec<String> = std::fs::read_dir(&pin_dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        return Err(format!(
            "the refused start left {} behind: {left:?}",
            pin_dir.display()
        ));
    }
    Ok(format!(
        "lsm INACTIVE ({lsm_reason}); egress still EPERM; require: [lsm] refused the start, nothing pinned"
    ))
}

/// The LSM layer's reason, once the other layers are seen active and egress enforcing.
fn degraded_but_enforcing(daemon: &Daemon) -> Result<String, String> {
    let status = daemon.status()?;
    let layers = status["capabilities"]
        .as_array()
        .ok_or_else(|| format!("status has no capabilities list: {status}"))?;
    let layer = |key: &str| -> Result<&Value, String> {
        layers
            .iter()
            .find(|l| l["key"] == key)
            .ok_or_else(|| format!("status reports no layer {key}: {status}"))
    };
    let lsm = layer("lsm")?;
    if lsm["active"] != false {
        return Err(format!("the LSM layer is reported active: {lsm}"));
    }
    let reason = lsm["detail"].as_str().unwrap_or_default().to_owned();
    if reason.is_empty() {
        return Err(format!("the inactive LSM layer says no reason: {lsm}"));
    }
    for key in ["egress", "events"] {
        let l = layer(key)?;
        if l["active"] != true {
            return Err(format!("layer {key} is not active without BPF LSM: {l}"));
        }
    }
    let text = secops(&[
        "status",
        "--socket",
        daemon.socket().to_str().ok_or("socket path is not UTF-8")?,
    ])?;
    let text_out = String::from_utf8_lossy(&text.stdout);
    if !(text_out.contains("INACTIVE") && text_out.contains(&reason)) {
        return Err(format!(
            "`secops status` does not show the LSM layer INACTIVE with its reason\n{}",
            describe(&text)
        ));
    }
    let socket = daemon.socket();
    let socket = socket.to_str().ok_or("socket path is not UTF-8")?;
    let out = secops(&[
        "run",
        "--agent",
        "smoke",
        "--socket",
        socket,
        "--",
        "/bin/secops-vm-runner",
        "--connect",
        // The allowlist's port on an address it does not list: a Landlock ruleset (where the
        // kernel has Landlock) lets the port through, so the EPERM is the cgroup program's.
        "127.0.0.2:8080",
    ])?;
    let said = String::from_utf8_lossy(&out.stdout);
    if said.trim() != "connect 127.0.0.2:8080 errno EPERM" {
        return Err(format!(
            "an agent's connect outside its allowlist was not denied without BPF LSM\n{}",
            describe(&out)
        ));
    }
    Ok(reason)
}
