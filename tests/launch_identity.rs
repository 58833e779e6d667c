//! `secops run` starts agents with least privilege: as the policy's `user:` with every
//! capability gone, no_new_privs, in the workspace (made for it when the policy says so); as
//! root only when the policy says `user: root`, and then with a warning where nothing in the
//! kernel holds a root agent in its cgroup; never without a `user:`.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use secops_host_tests::daemon::{Binaries, Daemon};
use secops_host_tests::kernel::{need_root, unique_name};

const SECOPS: &str = env!("CARGO_BIN_EXE_secops-under-test");
const NETPROBE: &str = env!("CARGO_BIN_EXE_secops-netprobe");

/// Removes the workspaces' parent when the test ends, however it ends.
struct Workspaces(PathBuf);

impl Drop for Workspaces {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const REPORT: &str =
    "echo uid=$(id -u) gid=$(id -g) groups=$(id -G | tr ' ' ,) pwd=$(pwd) home=$HOME user=$USER; \
    grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status | tr -d '\\t' | tr ':' '='";

fn report(out: &std::process::Output) -> BTreeMap<String, String> {
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `secops run --agent AGENT -- /bin/sh -c SCRIPT`.
fn sh(daemon: &Daemon, agent: &str, script: &str) -> std::process::Output {
    daemon
        .agent_program(agent, std::path::Path::new("/bin/sh"), &["-c", script])
        .output()
        .unwrap()
}

#[test]
fn agents_start_as_their_account_without_capabilities_in_their_workspace() {
    if !need_root("agents_start_as_their_account_without_capabilities_in_their_workspace") {
        return;
    }
    let base = std::env::temp_dir().join(format!("secops-ws-{}", unique_name()));
    let _cleanup = Workspaces(base.clone());
    let policy = format!(
        "version: 1\nagents:\n\
         \x20 - {{name: coder, workspace: {b}/coder, user: nobody, create_workspace: true}}\n\
         \x20 - {{name: admin, workspace: {b}/admin, user: root, create_workspace: true}}\n\
         \x20 - {{name: nameless, workspace: /tmp}}\n\
         \x20 - {{name: strict, workspace: {b}/missing, user: nobody}}\n",
        b = base.display()
    );
    let daemon = Daemon::start(
        &Binaries {
            secops: SECOPS.into(),
            probe: NETPROBE.into(),
        },
        &policy,
    );

    let out = sh(&daemon, "coder", REPORT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&out);
    assert_eq!(r["uid"], "65534", "{r:?}");
    assert_eq!(r["gid"], "65534", "{r:?}");
    assert_eq!(r["groups"], "65534", "root's groups are gone: {r:?}");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(r[set], "0000000000000000", "{set}: {r:?}");
    }
    assert_eq!(r["NoNewPrivs"], "1");
    let workspace = base.join("coder");
    assert_eq!(r["pwd"], workspace.to_str().unwrap());
    assert_eq!(r["user"], "nobody");
    let meta = std::fs::metadata(&workspace).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65534),
        "made for the agent"
    );
    assert_eq!(meta.permissions().mode() & 0o777, 0o750);
    // As nobody, root's files are not the agent's to change.
    let out = sh(
        &daemon,
        "coder",
        "touch /etc/secops-should-not-exist 2>/dev/null; echo rc=$?",
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("rc=1"));
    assert!(!std::path::Path::new("/etc/secops-should-not-exist").exists());

    // Root when the policy says so, but without a single capability, and warned about.
    let out = sh(&daemon, "admin", REPORT);
    let r = report(&out);
    assert_eq!(r["uid"], "0", "{r:?}");
    for set in ["CapPrm", "CapEff", "CapBnd"] {
        assert_eq!(r[set], "0000000000000000", "{set}: {r:?}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("identity is not enforceable"), "{stderr}");
    let status = daemon.status().unwrap();
    let admin = status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "admin")
        .unwrap()
        .clone();
    assert_eq!(admin["user"], "root");
    assert!(admin["warning"]
        .as_str()
        .unwrap()
        .contains("not enforceable"));

    // No `user:`, or a workspace that is missing: nothing runs.
    for (agent, says) in [
        ("nameless", "has no `user:` in the policy"),
        ("strict", "does not exist"),
    ] {
        let out = sh(&daemon, agent, "true");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{agent}: {stderr}");
        assert!(stderr.contains(says), "{agent}: {stderr}");
    }
    assert!(!base.join("missing").exists());
}
