//! The `secops` binary end to end: real policy files, a real audit database, real exit codes.

use secops_daemon::audit::chain;
use secops_daemon::audit::frame::Frame;
use secops_daemon::audit::segment;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

struct Secops {
    state: tempfile::TempDir,
}

impl Secops {
    fn new() -> Secops {
        Secops {
            state: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_secops"))
            .arg("--state-dir")
            .arg(self.state.path())
            .args(args)
            .env_remove("SECOPS_POLICY")
            .output()
            .unwrap()
    }

    fn check(&self, args: &[&str]) -> (i32, String) {
        let policy = policies().join("default.yaml");
        let mut all = vec!["check", "--policy", policy.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = self.run(&all);
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn stdout(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

#[test]
fn the_default_policy_validates() {
    let s = Secops::new();
    let policy = policies().join("default.yaml");
    let out = s.run(&["policy", "validate", policy.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": valid ("));
}

#[test]
fn a_broken_policy_is_reported_with_file_line_column_and_field() {
    let s = Secops::new();
    let file = s.state.path().join("broken.yaml");
    std::fs::write(&file, "agents:\n  - name: a\n    workspace: /w\nrules:\n  - id: r\n    actions: [fs:remove]\n    risk: low\n").unwrap();
    let out = s.run(&["policy", "validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:6:15: rules[0].actions[0]: unknown action type \"fs:remove\"",
            file.display()
        )),
        "{stderr}"
    );
    // A broken policy decides nothing: check fails with the error code, not a verdict.
    let out = s.run(&[
        "check",
        "--policy",
        file.to_str().unwrap(),
        "--agent",
        "a",
        "--action",
        "fs:read",
        "--path",
        "/w/x",
    ]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn check_exits_with_the_verdict_and_audits_it() {
    let s = Secops::new();
    let (code, out) = s.check(&[
        "--agent",
        "coder",
        "--action",
        "secret:read",
        "--path",
        "/root/.ssh/id_rsa",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("deny (risk critical, rule credentials.read)"),
        "{out}"
    );
    assert_eq!(
        s.check(&[
            "--agent",
            "coder",
            "--action",
            "fs:delete",
            "--path",
            "/etc/hosts"
        ])
        .0,
        2
    );
    assert_eq!(
        s.check(&[
            "--agent",
            "coder",
            "--action",
            "fs:write",
            "--path",
            "/srv/agents/coder/src/a.rs"
        ])
        .0,
        0
    );
    assert_eq!(
        s.check(&[
            "--agent",
            "coder",
            "--action",
            "net:connect",
            "--addr",
            "::ffff:10.0.0.1",
            "--port",
            "443"
        ])
        .0,
        1
    );
    // Errors are never verdicts.
    assert_eq!(
        s.check(&["--agent", "coder", "--action", "fs:delte", "--path", "/x"])
            .0,
        3
    );
    assert_eq!(s.check(&["--agent", "coder"]).0, 3);
    assert_eq!(s.run(&["no-such-command"]).status.code(), Some(3));

    let tail = s.stdout(&["audit", "tail", "-n", "10"]);
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.len(), 4, "{tail}");
    assert!(
        lines[0].contains(
            "agent=coder secret:read /root/.ssh/id_rsa -> deny (critical) rule=credentials.read"
        ),
        "{}",
        lines[0]
    );
    assert!(
        lines[3].contains("net:connect 10.0.0.1:443 -> deny (high) rule=egress.coder.default-deny"),
        "{}",
        lines[3]
    );

    let verify = s.run(&["audit", "verify"]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn query_filters_and_exports() {
    let s = Secops::new();
    s.check(&[
        "--agent",
        "coder",
        "--action",
        "secret:read",
        "--path",
        "/root/.aws/credentials",
    ]);
    s.check(&[
        "--agent",
        "coder",
        "--action",
        "fs:delete",
        "--path",
        "/etc/passwd",
    ]);
    s.check(&[
        "--agent",
        "intruder",
        "--action",
        "proc:exec",
        "--binary",
        "/usr/bin/curl",
    ]);

    let json = s.stdout(&["audit", "query", "--verdict", "deny", "--json"]);
    let records: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["rule_id"], "credentials.read");
    assert_eq!(records[0]["agent"], "coder");
    assert_eq!(records[0]["source"], "api");

    assert_eq!(
        s.stdout(&["audit", "query", "--agent", "intruder"])
            .lines()
            .count(),
        1
    );
    assert_eq!(
        s.stdout(&["audit", "query", "--action", "fs:*"])
            .lines()
            .count(),
        1
    );
    assert_eq!(
        s.stdout(&["audit", "query", "--since", "1h"])
            .lines()
            .count(),
        3
    );
    assert_eq!(
        s.stdout(&["audit", "query", "--until", "1970-01-02T00:00:00Z"])
            .lines()
            .count(),
        0
    );
    assert_eq!(
        s.run(&["audit", "query", "--since", "whenever"])
            .status
            .code(),
        Some(3)
    );

    let ocsf = s.stdout(&["audit", "export", "--format", "ocsf"]);
    let events: Vec<serde_json::Value> = ocsf
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let classes: Vec<i64> = events
        .iter()
        .map(|e| e["class_uid"].as_i64().unwrap())
        .collect();
    assert_eq!(classes, [1001, 1001, 1007]);
    assert_eq!(events[0]["actor"]["app_name"], "coder");
    assert_eq!(events[2]["actor"]["app_name"], "intruder");

    let file = s.state.path().join("export.jsonl");
    let f = file.to_str().unwrap();
    assert_eq!(
        s.run(&["audit", "export", "--format", "jsonl", "-o", f])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 3);
    assert_eq!(
        s.run(&["audit", "export", "-o", f]).status.code(),
        Some(3),
        "an existing file is not overwritten"
    );
    assert_eq!(
        s.run(&["audit", "export", "-o", f, "--force"])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn verify_reports_a_tampered_record_and_exits_1() {
    let s = Secops::new();
    for _ in 0..3 {
        s.check(&[
            "--agent",
            "coder",
            "--action",
            "fs:delete",
            "--path",
            "/etc/hosts",
        ]);
    }
    let segs = segment::list_segments(&s.state.path().join("audit")).unwrap();
    let (frames, _) = segment::read_frames(&segs[0].path).unwrap();
    let mut frames: Vec<Frame> = frames.into_iter().map(|f| f.frame.unwrap()).collect();
    for f in &mut frames {
        if let Frame::Record(r) = f {
            let (seq, mut body) = chain::decode_record(&r.encoding).unwrap();
            if seq == 2 {
                body.verdict = secops_common::Verdict::Allow;
                r.encoding = chain::encode_record(seq, &body);
            }
        }
    }
    segment::write_frames(&segs[0].path, &frames).unwrap();
    let out = s.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("PROBLEM") && report.contains("record 2"),
        "{report}"
    );
}

#[test]
fn help_explains_the_commands_and_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_secops"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["policy", "check", "audit", "--state-dir", "Exit codes"] {
        assert!(
            help.contains(word),
            "--help does not mention {word}:\n{help}"
        );
    }
}

#[test]
fn a_corrupt_audit_segment_is_a_problem_naming_the_file() {
    let s = Secops::new();
    s.check(&[
        "--agent",
        "coder",
        "--action",
        "fs:read",
        "--path",
        "/srv/agents/coder/x",
    ]);
    let segs = segment::list_segments(&s.state.path().join("audit")).unwrap();
    std::fs::write(
        &segs[0].path,
        b"this is not a segment, not at all, not even close......",
    )
    .unwrap();
    let out = s.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(".seg"), "{stdout}");
    let (code, _) = s.check(&[
        "--agent",
        "coder",
        "--action",
        "fs:read",
        "--path",
        "/srv/agents/coder/x",
    ]);
    assert_eq!(
        code, 3,
        "a decision that cannot be recorded is an error, not a verdict"
    );
}

#[test]
fn a_policy_over_the_file_limit_names_the_limit_and_how_to_raise_it() {
    let s = Secops::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.yaml");
    // About 5.5 MB: 50,000 rules, more than the 4 MiB the limit once was.
    std::fs::write(&file, secops_daemon::engine::synthetic::policy(50_000, 8)).unwrap();
    let path = file.to_str().unwrap();
    let out = s.run(&["policy", "validate", path]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = s.run(&["--max-policy-file-mib", "2", "policy", "validate", path]);
    assert_eq!(out.status.code(), Some(1));
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for needed in [
        "2 MiB allowed",
        "--max-policy-file-mib",
        "SECOPS_MAX_POLICY_FILE_MIB",
        "include:",
    ] {
        assert!(report.contains(needed), "{needed:?} missing from: {report}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_secops"))
        .args(["policy", "validate", path])
        .env("SECOPS_MAX_POLICY_FILE_MIB", "6")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_record_is_one_line_and_a_query_can_wait_for_a_record() {
    let s = Secops::new();
    let (code, out) = s.check(&[
        "--agent",
        "coder",
        "--action",
        "fs:delete",
        "--path",
        "/srv/agents/coder/a\nb\tc",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}");
    let seq = serde_json::from_str::<serde_json::Value>(&out).unwrap()["audit_seq"]
        .as_u64()
        .unwrap();
    let tail = s.stdout(&["audit", "tail"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(tail.contains("/srv/agents/coder/a\\nb\\tc"), "{tail}");
    let started = std::time::Instant::now();
    let found = s.stdout(&["audit", "query", "--wait-seq", &seq.to_string(), "--json"]);
    assert_eq!(found.lines().count(), 1, "{found}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // A record that never comes: the wait ends when told, and the query shows what there is.
    let started = std::time::Instant::now();
    let none = s.stdout(&["audit", "query", "--agent", "nobody", "--wait", "300ms"]);
    assert!(none.is_empty() && started.elapsed() >= std::time::Duration::from_millis(300));
}
