//! Layers degrade one by one and loudly, and a policy can demand them (issue 15): on this
//! kernel a real daemon reports each layer with its state, a `defaults.require` naming a
//! layer that is not active stops the start (leaving nothing pinned), an agent's `require`
//! makes `secops run` refuse that agent (and only it), and a reload that would require an
//! inactive layer is refused.
//!
//! Which layer is inactive depends on the kernel: the tests ask a running daemon and use
//! the first inactive one (on hosts where BPF LSM programs get EPERM, `lsm`). The VM
//! scenario `degraded-lsm` does the same on a kernel booted without `bpf` in `lsm=`.

use std::time::{Duration, Instant};

use secops_host_tests::daemon::{Binaries, Daemon};
use secops_host_tests::kernel::need_root;
use serde_json::Value;

const SECOPS: &str = env!("CARGO_BIN_EXE_secops-under-test");
const PROBE: &str = env!("CARGO_BIN_EXE_secops-netprobe");

fn binaries() -> Binaries {
    Binaries {
        secops: SECOPS.into(),
        probe: PROBE.into(),
    }
}

fn policy(defaults_require: &str, needy_require: &str) -> String {
    format!(
        "version: 1\n\
         defaults:\n  require: [{defaults_require}]\n\
         agents:\n\
         \x20 - {{name: plain, workspace: /tmp, user: root}}\n\
         \x20 - {{name: needy, workspace: /tmp, user: root, require: [{needy_require}]}}\n"
    )
}

/// The layers of a running daemon's status: (key, active, detail).
fn layers(status: &Value) -> Vec<(String, bool, String)> {
    status["capabilities"]
        .as_array()
        .unwrap_or_else(|| panic!("no capabilities in {status:#}"))
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap_or_default().to_owned(),
                c["active"].as_bool().unwrap_or(false),
                c["detail"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// A requirable layer that is not active here, with why; `None` if all are.
fn an_inactive_layer(daemon: &Daemon) -> Option<(String, String)> {
    let status = daemon.status().expect("status");
    layers(&status)
        .into_iter()
        .find(|(key, active, _)| !active && ["lsm", "egress", "events", "dns"].contains(&&**key))
        .map(|(key, _, detail)| (key, detail))
}

#[test]
fn every_layer_says_whether_it_is_active_and_why_not() {
    if !need_root("every_layer_says_whether_it_is_active_and_why_not") {
        return;
    }
    let daemon = Daemon::start(&binaries(), &policy("", ""));
    let status = daemon.status().expect("status");
    let layers = layers(&status);
    let keys: Vec<&str> = layers.iter().map(|(k, _, _)| k.as_str()).collect();
    for key in ["egress", "events", "lsm", "dns"] {
        assert!(keys.contains(&key), "no layer {key} in {layers:?}");
    }
    for (key, active, detail) in &layers {
        assert!(!detail.is_empty(), "layer {key} says nothing");
        if !active {
            assert!(
                detail.starts_with("not enforcing:")
                    || detail.contains("not redirecting")
                    || detail.contains("not seen")
                    || key == "ring-buffer",
                "inactive layer {key} does not say why: {detail}"
            );
        }
    }
    // The log says the same, one line per layer.
    let log = daemon.log();
    for (key, active, _) in &layers {
        let word = if *active { "active" } else { "INACTIVE" };
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("layer=\"{key}\""))
                    || l.contains(&format!("layer={key}")))
                && log.contains(word),
            "the log does not report layer {key} as {word}:\n{log}"
        );
    }
    let text = daemon.status_text();
    if let Some((key, _, detail)) = layers.iter().find(|(_, active, _)| !active) {
        assert!(
            text.contains("INACTIVE") && text.contains(detail.as_str()),
            "`secops status` does not show {key} INACTIVE with its reason:\n{text}"
        );
    }
}

#[test]
fn a_required_layer_that_is_not_active_stops_the_start_and_leaves_nothing_pinned() {
    if !need_root("a_required_layer_that_is_not_active_stops_the_start_and_leaves_nothing_pinned") {
        return;
    }
    let probe = Daemon::start(&binaries(), &policy("", ""));
    let Some((layer, why)) = an_inactive_layer(&probe) else {
        eprintln!(
            "skipped: every layer is active on this kernel (the VM scenario degraded-lsm \
             covers a kernel without BPF LSM)"
        );
        return;
    };
    drop(probe);

    // A layer that is active here is no obstacle.
    let fine = Daemon::start(&binaries(), &policy("egress", ""));
    drop(fine);

    let (status, refused) = Daemon::start_refused(&binaries(), &policy(&layer, ""));
    assert!(!status.success(), "{status}");
    let log = refused.log();
    assert!(
        log.contains("defaults.require") && log.contains(&format!("{layer} (")),
        "the refusal names the layer and the key:\n{log}"
    );
    assert!(log.contains(&why), "the refusal says why ({why}):\n{log}");
    let pin_dir = refused.pin_dir();
    let left: Vec<_> = std::fs::read_dir(&pin_dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "the failed start left pins in {}: {left:?}",
        pin_dir.display()
    );
    assert!(
        !pin_dir.exists(),
        "the failed start left its pin directory {}",
        pin_dir.display()
    );
}

#[test]
fn secops_run_refuses_an_agent_whose_required_layer_is_not_active() {
    if !need_root("secops_run_refuses_an_agent_whose_required_layer_is_not_active") {
        return;
    }
    let probe = Daemon::start(&binaries(), &policy("", ""));
    let Some((layer, why)) = an_inactive_layer(&probe) else {
        eprintln!("skipped: every layer is active on this kernel");
        return;
    };
    drop(probe);
    let daemon = Daemon::start(&binaries(), &policy("", &layer));

    let out = daemon
        .agent_program("needy", std::path::Path::new("/bin/true"), &[])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("needy") && stderr.contains(&format!("{layer} (")) && stderr.contains(&why),
        "the refusal names the agent, the layer and why: {stderr}"
    );

    let out = daemon
        .agent_program("plain", std::path::Path::new("/bin/true"), &[])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "an agent that requires nothing more still runs: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A reload that would require the layer for the whole daemon is refused; the policy in
    // force stays (plain still runs).
    std::fs::write(daemon.dir.join("policy.yaml"), policy(&layer, "")).unwrap();
    daemon.signal(libc::SIGHUP);
    let started = Instant::now();
    let error = loop {
        if let Some(e) = daemon
            .status()
            .and_then(|s| s["last_reload_error"].as_str().map(str::to_owned))
        {
            break e;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the reload was not refused:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        error.contains("defaults.require") && error.contains(&format!("{layer} (")),
        "{error}"
    );
    let out = daemon
        .agent_program("plain", std::path::Path::new("/bin/true"), &[])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
