//! `secops daemon` runs on this kernel: it loads every object, attaches the egress programs
//! and the tracepoints, answers `status`, and stops cleanly on SIGTERM. Later scenarios (LSM
//! enforcement, the attack suite) start from such a daemon.

use serde_json::Value;

use crate::fixtures::Daemon;

const POLICY: &str = "\
version: 1
agents:
  - name: smoke
    workspace: /tmp/secops-vm/workspace
    user: 0
    create_workspace: true
    autonomy: semi
egress:
  smoke:
    allow:
      - cidr: 127.0.0.1/32
        ports: [8080]
";

/// Layers the daemon must report active on every kernel with BPF LSM.
const MUST_BE_ACTIVE: &[&str] = &[
    "egress allowlist",
    "event tagging",
    "ring buffer",
    "synchronous file/exec deny (BPF LSM)",
];

pub fn run() -> Result<String, String> {
    let daemon = Daemon::start(POLICY)?;
    let checked = check_status(&daemon);
    let log = daemon.log();
    let stopped = daemon.stop()?;
    let layers = checked.map_err(|why| format!("{why}\ndaemon log:\n{log}"))?;
    if !stopped.success() {
        return Err(format!(
            "the daemon exited {stopped} on SIGTERM\ndaemon log:\n{log}"
        ));
    }
    Ok(format!("{layers}; stopped cleanly on SIGTERM"))
}

fn check_status(daemon: &Daemon) -> Result<String, String> {
    let status = daemon.status()?;
    let layers = status["capabilities"]
        .as_array()
        .ok_or_else(|| format!("status has no capabilities list: {status}"))?;
    let active = |name: &str| {
        layers
            .iter()
            .find(|l| l["name"] == name)
            .map(|l| l["active"] == true)
    };
    // Every kernel secops supports (Debian 11's 5.10 to the newest) runs every layer.
    let inactive: Vec<String> = MUST_BE_ACTIVE
        .iter()
        .filter(|name| active(name) != Some(true))
        .map(|name| {
            let layer = layers.iter().find(|l| l["name"] == *name);
            match layer {
                None => format!("{name} (not reported)"),
                Some(l) => format!("{name} ({})", l["detail"].as_str().unwrap_or("?")),
            }
        })
        .collect();
    if !inactive.is_empty() {
        return Err(format!(
            "layers not active: {}\nstatus: {}",
            inactive.join(", "),
            describe_layers(layers)
        ));
    }
    let agents = status["agents"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if !agents.iter().any(|a| a["name"] == "smoke") {
        return Err(format!("the agent `smoke` is not in status: {status}"));
    }
    Ok(describe_layers(layers))
}

fn describe_layers(layers: &[Value]) -> String {
    layers
        .iter()
        .map(|l| {
            format!(
                "{}: {}",
                l["name"].as_str().unwrap_or("?"),
                if l["active"] == true {
                    "active"
                } else {
                    "inactive"
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
