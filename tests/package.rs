//! The Debian package, as an operator meets it: built by `cargo xtask package` (or the one
//! `$SECOPS_DEB` names: `cargo xtask test` builds the release package first), clean under
//! lintian, installed with `dpkg -i` on this machine, its unit checked by
//! `systemd-analyze verify`, the installed binary run as a daemon under exactly the unit's
//! capability set (against the installed default policy, with its own pin directory,
//! cgroup root, state directory and socket) enforcing an agent's egress, then purged.
//!
//! Nothing is started by the installation itself here: without systemd running (this
//! machine), the maintainer scripts start and tear down nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use secops_host_tests::daemon::{Binaries, Daemon};
use secops_host_tests::kernel::need_root;

const NETPROBE: &str = env!("CARGO_BIN_EXE_secops-netprobe");
const UNDER_TEST: &str = env!("CARGO_BIN_EXE_secops-under-test");
const UNIT: &str = "/lib/systemd/system/secops.service";

fn run(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(command: &mut Command) -> String {
    String::from_utf8_lossy(&run(command).stdout).into_owned()
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "secops"])
        .output()
        .is_ok_and(|o| o.stdout.ends_with(b" installed"))
}

/// The .deb under test: `$SECOPS_DEB`, or one `cargo xtask package` makes from the `secops`
/// this test package built (the same code; `cargo xtask test` hands in the release one).
fn deb(dir: &Path) -> PathBuf {
    if let Some(deb) = std::env::var_os("SECOPS_DEB") {
        return PathBuf::from(deb);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = stdout(
        Command::new(cargo)
            .current_dir(secops_host_tests::workspace_root())
            .args(["run", "--quiet", "--package", "xtask", "--", "package"])
            .arg("--binary")
            .arg(UNDER_TEST)
            .arg("--out")
            .arg(dir),
    );
    PathBuf::from(
        out.lines()
            .last()
            .expect("xtask printed the .deb's path")
            .trim(),
    )
}

/// Purges the package at the end, whatever happened: the machine is left as it was found.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if installed() {
            let out = Command::new("dpkg").args(["--purge", "secops"]).output();
            if let Ok(out) = out {
                if !out.status.success() {
                    eprintln!("dpkg --purge: {}", String::from_utf8_lossy(&out.stderr));
                }
            }
        }
    }
}

/// Removes a directory this test made, at the end.
struct RemoveAfter(PathBuf);

impl Drop for RemoveAfter {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        if let Some(parent) = self.0.parent() {
            // Only if empty: /srv/agents may hold other agents' workspaces.
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// `CapabilityBoundingSet=CAP_BPF CAP_PERFMON ...` as setpriv's `-all,+bpf,+perfmon,...`.
fn bounding_set(unit: &str) -> String {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit limits the capabilities");
    let caps: Vec<String> = line
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(!caps.is_empty());
    format!("-all,{}", caps.join(","))
}

#[test]
fn the_debian_package_installs_runs_under_its_units_limits_and_purges() {
    if !need_root("the_debian_package_installs_runs_under_its_units_limits_and_purges") {
        return;
    }
    assert!(
        !installed(),
        "a secops package is already installed on this machine; this test would purge it"
    );
    let work = std::env::temp_dir().join(secops_host_tests::kernel::unique_name());
    std::fs::create_dir_all(&work).unwrap();
    let deb = deb(&work);

    // lintian: no error and no warning (informational tags are allowed).
    let lint = Command::new("lintian")
        .args(["--allow-root", "--fail-on", "error,warning"])
        .arg(&deb)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&lint.stdout);
    assert!(
        lint.status.success() && !report.lines().any(|l| l.starts_with(['E', 'W'])),
        "lintian {}:\n{report}{}",
        deb.display(),
        String::from_utf8_lossy(&lint.stderr)
    );

    // The default policy's agent makes its workspace when it first runs; this test removes
    // what it made.
    let workspace = Path::new("/srv/agents/coder");
    let _workspace = (!workspace.exists()).then(|| RemoveAfter(workspace.to_path_buf()));
    let _purge = Installed;
    run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(installed());
    for file in [
        "/usr/bin/secops",
        "/etc/secops/policy.yaml",
        "/etc/secops/common/credentials.yaml",
        UNIT,
        "/usr/share/man/man1/secops.1.gz",
        "/usr/share/man/man1/secops-approvals-watch.1.gz",
        "/usr/share/bash-completion/completions/secops",
        "/usr/share/zsh/vendor-completions/_secops",
        "/usr/share/secops/grafana/secops-dashboard.json",
    ] {
        assert!(Path::new(file).exists(), "{file} is not installed");
    }
    let conffiles = stdout(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "secops"]));
    assert!(
        conffiles.contains("/etc/secops/policy.yaml"),
        "the policy is a conffile: {conffiles}"
    );
    let group = stdout(Command::new("getent").args(["group", "secops"]));
    assert!(group.starts_with("secops:"), "{group}");
    let man = stdout(Command::new("man").args(["-w", "secops-run"]));
    assert!(man.contains("secops-run.1"), "{man}");

    // The unit as systemd reads it: its binary and man pages exist, no unknown setting.
    let verify = Command::new("systemd-analyze")
        .args(["verify", UNIT])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify {UNIT}:\n{said}"
    );

    // The installed binary as the unit runs it, with exactly the unit's capabilities, and
    // the installed default policy (its includes from /etc/secops/common).
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let caps = bounding_set(&unit);
    let validated = stdout(Command::new("/usr/bin/secops").args([
        "policy",
        "validate",
        "/etc/secops/policy.yaml",
    ]));
    assert!(validated.contains(": valid ("), "{validated}");
    let policy = std::fs::read_to_string("/etc/secops/policy.yaml")
        .unwrap()
        .replace("  - common/", "  - /etc/secops/common/");
    let binaries = Binaries {
        secops: "/usr/bin/secops".into(),
        probe: NETPROBE.into(),
    };
    let daemon = Daemon::start_under(
        &binaries,
        &policy,
        &["--socket-gid", "secops"],
        &["setpriv", "--bounding-set", &caps, "--"],
    );
    let status = daemon.status().expect("status");
    let egress = status["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "egress allowlist")
        .expect("an egress layer");
    assert_eq!(egress["active"], true, "{status:#}\n{}", daemon.log());
    let socket = std::fs::metadata(daemon.socket()).unwrap();
    let secops_gid: u32 = stdout(Command::new("getent").args(["group", "secops"]))
        .split(':')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::gid(&socket),
        secops_gid,
        "the socket belongs to the secops group"
    );

    // The default policy's agent: loopback below 1024 is outside its allowlist.
    let out = daemon.agent("coder", &["tcp", "127.0.0.1:22"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("tcp 127.0.0.1:22 errno EPERM"),
        "coder's connect to 127.0.0.1:22: {said}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    let denied = daemon.wait_for_records(1, "the denied connect", |r| {
        r["action"] == "net:connect" && r["verdict"] == "deny" && r["agent"] == "coder"
    });
    assert_eq!(denied[0]["object"]["value"], "127.0.0.1:22");
    drop(daemon);

    run(Command::new("dpkg").args(["--purge", "secops"]));
    assert!(!installed());
    for gone in ["/usr/bin/secops", "/etc/secops/policy.yaml", UNIT] {
        assert!(
            !Path::new(gone).exists(),
            "{gone} is still there after purge"
        );
    }
    std::thread::sleep(Duration::from_millis(10));
    let _ = std::fs::remove_dir_all(&work);
}
