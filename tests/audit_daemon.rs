//! The audit log under a live daemon: the policy's `retention:` rotating on the daemon's
//! timer (records flow, segments move to the archive, `verify --archive` passes across it),
//! a retention section with a missing archive directory refused at start, and an evidence
//! bundle of the daemon's log checked by `verify-bundle` with an empty HOME and no state.

use std::process::Output;
use std::time::{Duration, Instant};

use secops_host_tests::daemon::{Binaries, Daemon};
use secops_host_tests::kernel::{need_root, unique_name};

/// A directory of the test's own, removed when dropped (also when the test fails).
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let p = std::env::temp_dir().join(unique_name());
        std::fs::create_dir(&p).unwrap();
        Scratch(p)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Archived segments stay immutable where inode flags are on.
        secops_daemon::audit::segment::unprotect_tree(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const SECOPS: &str = env!("CARGO_BIN_EXE_secops-under-test");
const PROBE: &str = env!("CARGO_BIN_EXE_secops-netprobe");

fn binaries() -> Binaries {
    Binaries {
        secops: SECOPS.into(),
        probe: PROBE.into(),
    }
}

fn policy(retention: &str) -> String {
    format!(
        "version: 1\nagents:\n  - name: web\n    workspace: /tmp\n    user: root\n    autonomy: semi\n\
         egress:\n  web:\n    allow:\n      - cidr: 127.0.0.1/32\n        ports: [9]\n    dns_resolvers: [127.0.0.53]\n{retention}"
    )
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn segments_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn retention_rotates_on_the_daemons_timer_and_a_bundle_of_its_log_verifies_offline() {
    if !need_root("retention_rotates_on_the_daemons_timer_and_a_bundle_of_its_log_verifies_offline")
    {
        return;
    }
    let base = Scratch::new();
    let archive = base.path().join("archive");
    std::fs::create_dir(&archive).unwrap();
    let daemon = Daemon::start(
        &binaries(),
        &policy(&format!(
            "retention:\n  archive: {}\n  every: 2s\n",
            archive.display()
        )),
    );
    // Inode flags are on by default: the open segment append-only, closed ones immutable.
    assert!(
        daemon
            .status_text()
            .contains("append-only/immutable (inode flags set)"),
        "{}",
        daemon.status_text()
    );
    let files = daemon.dir.join("files");
    std::fs::create_dir(&files).unwrap();
    let started = Instant::now();
    let mut i = 0;
    while segments_in(&archive) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no segment archived by the timer within 60 s:\n{}",
            daemon.log()
        );
        let victim = files.join(format!("victim-{i}"));
        std::fs::write(&victim, "x").unwrap();
        let out = daemon.agent("web", &["unlink", victim.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
        i += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    let archived = daemon.wait_for_records(1, "an archive record", |r| {
        r["action"] == "sys:audit" && r["rule_id"] == "audit.archive"
    });
    assert!(
        archived[0]["object"]["value"]
            .as_str()
            .unwrap()
            .contains(archive.to_str().unwrap()),
        "{:?}",
        archived[0]
    );
    // Live alone: the archived range is noted, not a problem; with the archive: one chain
    // from record 1.
    let out = daemon
        .secops()
        .args(["audit", "verify", "--archive"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("(seq 1..="), "{}", text(&out));
    // The open segment is append-only; the archived ones are immutable (rotation took the
    // flag off each live one it moved, and put it on the copy).
    let flags_of = |dir: &std::path::Path| -> Vec<String> {
        let mut segs: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segs.sort();
        segs.iter()
            .map(|p| {
                format!(
                    "{:?}",
                    secops_daemon::audit::segment::inode_flags(p).unwrap()
                )
            })
            .collect()
    };
    let live = flags_of(&daemon.dir.join("state/audit"));
    assert!(live.last().unwrap().contains("APPEND"), "{live:?}");
    let archived = flags_of(&archive);
    assert!(
        archived.len() >= 2 && archived.iter().all(|f| f.contains("IMMUTABLE")),
        "{archived:?}"
    );
    // A bundle of the last minute; its policy is the daemon's, recorded at start (which is
    // in the archive by now).
    let bundle = base.path().join("web.bundle");
    let out = daemon
        .secops()
        .args(["audit", "bundle", "--since", "10m", "--agent", "web", "-o"])
        .arg(&bundle)
        .arg("--archive")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let home = Scratch::new();
    let out = std::process::Command::new(SECOPS)
        .args(["--state-dir"])
        .arg(home.path().join("none"))
        .args(["audit", "verify-bundle"])
        .arg(&bundle)
        .arg("--public-key")
        .arg(daemon.dir.join("state/keys/audit-signing.pub"))
        .env_clear()
        .env("HOME", home.path())
        .output()
        .unwrap();
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("result: OK") && report.contains("policy in force: sha256 "),
        "{report}"
    );
}

#[test]
fn a_retention_archive_that_is_not_there_stops_the_start() {
    if !need_root("a_retention_archive_that_is_not_there_stops_the_start") {
        return;
    }
    let (status, daemon) = Daemon::start_refused(
        &binaries(),
        &policy("retention:\n  archive: /nonexistent/secops-archive\n  keep_age: 30d\n"),
    );
    assert!(!status.success());
    let log = daemon.log();
    assert!(
        log.contains("policy.yaml:")
            && log.contains("retention.archive")
            && log.contains("/nonexistent/secops-archive"),
        "{log}"
    );
}
