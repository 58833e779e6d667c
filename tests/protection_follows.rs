//! Protection follows the object, not its name (issue 16, item 2): a tree the rules protect
//! keeps its protection when an unprotected ancestor is renamed, or replaced by a symlink to
//! a lookalike, and after every reload that follows. What this host can show: the daemon's
//! own answers (`/v1/check` from inside the agent's cgroup, which the engine judges as the
//! kernel's inode entries do) and the audit record of the move. The kernel side (BPF LSM)
//! is the VM attack suite's (`lsm-attacks`: `moved-ancestor-*`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use secops_host_tests::daemon::{Binaries, Daemon};
use secops_host_tests::kernel::need_root;
use serde_json::{json, Value};

const SECOPS: &str = env!("CARGO_BIN_EXE_secops-under-test");
const NETPROBE: &str = env!("CARGO_BIN_EXE_secops-netprobe");
const APIPROBE: &str = env!("CARGO_BIN_EXE_secops-apiprobe");

fn policy(tree: &Path) -> String {
    let t = tree.display();
    format!(
        "version: 1
agents:
  - name: web
    workspace: {t}/ws
    user: root
    autonomy: semi
rules:
  - id: alice.secrets
    actions: [secret:read, fs:read, fs:write, fs:delete]
    paths: [\"{t}/home/alice/secrets/**\"]
    verdict: deny
    risk: critical
"
    )
}

/// `/v1/check` of `action` on `path` from inside the agent's cgroup: (verdict, rule id).
fn check(daemon: &Daemon, action: &str, path: &Path) -> (String, Option<String>) {
    let body = json!({"action": action, "object": {"path": path}}).to_string();
    let line = daemon.api_probe(
        Path::new(APIPROBE),
        "web",
        "request",
        &daemon.socket(),
        &["POST", "/v1/check", &body],
    );
    let (status, body) = line.split_once(' ').unwrap_or((&line, ""));
    assert_eq!(status, "200", "{line}");
    let answer: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (
        answer["verdict"].as_str().unwrap_or("?").to_owned(),
        answer["rule_id"].as_str().map(str::to_owned),
    )
}

fn denied_by_rule(answer: &(String, Option<String>)) -> bool {
    answer.0 == "deny" && answer.1.as_deref() == Some("alice.secrets")
}

/// Waits until `check` of a read of `path` is denied by the rule.
fn wait_denied(daemon: &Daemon, path: &Path, what: &str) {
    let started = Instant::now();
    loop {
        let answer = check(daemon, "fs:read", path);
        if denied_by_rule(&answer) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: a read of {} is answered {answer:?}\n{}",
            path.display(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn reload(daemon: &Daemon) {
    let before = reloads(daemon);
    daemon.signal(libc::SIGHUP);
    let started = Instant::now();
    while reloads(daemon) == before {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no reload record\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn reloads(daemon: &Daemon) -> usize {
    daemon
        .records()
        .iter()
        .filter(|r| {
            r["action"] == "sys:policy"
                && r["reason"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("policy reloaded"))
        })
        .count()
}

#[test]
fn a_protected_tree_keeps_its_protection_when_its_ancestor_moves_and_after_reloads() {
    if !need_root("a_protected_tree_keeps_its_protection_when_its_ancestor_moves_and_after_reloads")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree: PathBuf = dir.path().canonicalize().unwrap();
    std::fs::create_dir_all(tree.join("ws")).unwrap();
    std::fs::create_dir_all(tree.join("home/alice/secrets/deep")).unwrap();
    std::fs::write(tree.join("home/alice/secrets/key"), "k").unwrap();
    let binaries = Binaries {
        secops: SECOPS.into(),
        probe: NETPROBE.into(),
    };
    let daemon = Daemon::start(&binaries, &policy(&tree));
    let key = tree.join("home/alice/secrets/key");
    assert!(denied_by_rule(&check(&daemon, "fs:read", &key)));

    // An ancestor nobody protects is renamed: the tree is found where it is now, without a
    // reload, and the move is audited.
    std::fs::rename(tree.join("home/alice"), tree.join("home/alice2")).unwrap();
    let moved = tree.join("home/alice2/secrets");
    wait_denied(&daemon, &moved.join("key"), "after the rename");
    assert!(denied_by_rule(&check(
        &daemon,
        "fs:write",
        &moved.join("deep/new")
    )));
    let moves = daemon.wait_for_records(1, "the move", |r| {
        r["action"] == "fs:rename"
            && r["source"] == "daemon"
            && r["object"]["value"] == moved.to_str().unwrap()
    });
    let reason = moves[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("protected object moved") && reason.contains("home/alice/secrets"),
        "{reason}"
    );

    // Reloads compile by path; the moved tree is still judged as the rules' path.
    reload(&daemon);
    assert!(denied_by_rule(&check(
        &daemon,
        "fs:read",
        &moved.join("key")
    )));
    // The rules' own path still holds for what is there now.
    assert!(denied_by_rule(&check(&daemon, "fs:read", &key)));

    // The old name replaced by a symlink to a lookalike, and the tree moved once more.
    std::fs::create_dir_all(tree.join("decoy/secrets")).unwrap();
    std::os::unix::fs::symlink(tree.join("decoy"), tree.join("home/alice")).unwrap();
    std::fs::rename(tree.join("home/alice2"), tree.join("elsewhere")).unwrap();
    let again = tree.join("elsewhere/secrets");
    wait_denied(&daemon, &again.join("key"), "after the second move");
    reload(&daemon);
    assert!(denied_by_rule(&check(
        &daemon,
        "fs:read",
        &again.join("key")
    )));
    daemon.wait_for_records(1, "the second move", |r| {
        r["action"] == "fs:rename" && r["object"]["value"] == again.to_str().unwrap()
    });
    // Nothing unrelated is caught: a sibling of the moved tree is the rules' business.
    let (verdict, rule) = check(&daemon, "fs:read", &tree.join("elsewhere/notes"));
    assert_ne!(rule.as_deref(), Some("alice.secrets"), "{verdict}");
}
