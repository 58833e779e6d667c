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
rules:
  - id: protected.tree
    agents: [smoke]
    actions: [fs:delete, fs:rename, fs:write, fs:truncate]
    paths: [\"/tmp/secops-vm/protected/**\"]
    verdict: deny
    risk: high
egress:
  smoke:
    allow:
      - cidr: 127.0.0.1/32
        ports: [8080]
";

/// Where the Landlock row's protected file lives.
const PROTECTED: &str = "/tmp/secops-vm/protected";

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
    std::fs::create_dir_all(PROTECTED).map_err(|e| format!("creating {PROTECTED}: {e}"))?;
    std::fs::write(format!("{PROTECTED}/victim"), "precious\n")
        .map_err(|e| format!("writing the victim: {e}"))?;
    let daemon = Daemon::start(POLICY)?;
    let checked = degraded_but_enforcing(&daemon)
        .and_then(|reason| Ok((reason, landlock_row(&daemon, lsms.trim())?)));
    let log = daemon.log();
    daemon.stop()?;
    let (lsm_reason, landlock) = checked.map_err(|why| format!("{why}\ndaemon log:\n{log}"))?;

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
        "lsm INACTIVE ({lsm_reason}); egress still EPERM; require: [lsm] refused the start, nothing pinned; {landlock}"
    ))
}

/// What the Landlock layer enforces on this kernel with BPF LSM off, and what status says:
/// a protected delete (ABI 1), a rename across workspace directories (refer, ABI 2: on ABI
/// 1 every such rename is refused), a signal to pid 1 outside the agent (scopes, ABI 6), and
/// whether refusals other than deletes and renames are audited (kernel records, ABI 7).
fn landlock_row(daemon: &Daemon, lsms: &str) -> Result<String, String> {
    let status = daemon.status()?;
    let capability = |key: &str| {
        status["capabilities"]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["key"] == key).cloned())
            .ok_or_else(|| format!("status reports no {key}: {status}"))
    };
    let layer = capability("landlock")?;
    let audit = capability("landlock-audit")?;
    let detail = |c: &Value| c["detail"].as_str().unwrap_or_default().to_owned();
    if !lsms.split(',').any(|l| l == "landlock") {
        if layer["active"] != false {
            return Err(format!(
                "Landlock is not in {lsms:?}, but status says it is active: {layer}"
            ));
        }
        return Ok(format!(
            "landlock: not in the LSM list; status: {}",
            detail(&layer)
        ));
    }
    if layer["active"] != true {
        return Err(format!(
            "Landlock is in {lsms:?}, but status says it is inactive: {layer}"
        ));
    }
    let abi = detail(&layer)
        .strip_prefix("ABI ")
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| format!("the landlock layer names no ABI: {layer}"))?;
    let socket = daemon.socket();
    let socket = socket.to_str().ok_or("socket path is not UTF-8")?;
    let run = |script: &str| -> Result<String, String> {
        let out = secops(&[
            "run", "--agent", "smoke", "--socket", socket, "--", "/bin/sh", "-c", script,
        ])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let delete = run(&format!(
        "/bin/busybox rm -f {PROTECTED}/victim 2>/dev/null; echo $?"
    ))?;
    if delete != "1" || !std::path::Path::new(&format!("{PROTECTED}/victim")).exists() {
        return Err(format!(
            "a protected delete was not refused under Landlock ABI {abi} (rm said {delete:?})"
        ));
    }
    // Reported with what the tools said, not judged: a first run (mkdir called without
    // busybox) came out refused on 6.1 and 6.12; on the host's ABI 7 the same rename succeeds
    // (tests/landlock.rs). To be made a check once a VM run shows it holds from ABI 2.
    let rename = run(
        "/bin/busybox mkdir -p a b && echo x > a/f && /bin/busybox mv a/f b/f 2>&1; echo rc=$?",
    )?;
    let rename_ok = rename.ends_with("rc=0");
    let signal = run("kill -0 1 2>/dev/null; echo $?")?;
    let signal_refused = signal != "0";
    if abi >= 6 && !signal_refused {
        return Err(format!(
            "a signal to pid 1 outside the agent was not refused under ABI {abi}"
        ));
    }
    Ok(format!(
        "landlock ABI {abi}: protected delete refused; rename across workspace directories {}; \
         signal outside the agent {}; status: {}; refusal audit ({}): {}",
        if rename_ok {
            "allowed"
        } else {
            "REFUSED (no refer right before ABI 2)"
        },
        if signal_refused {
            "refused"
        } else {
            "allowed (no scopes before ABI 6)"
        },
        detail(&layer),
        if audit["active"] == true {
            "active"
        } else {
            "inactive"
        },
        detail(&audit)
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
