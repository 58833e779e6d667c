//! The Python client as an agent framework gets it: `pip install` of
//! `secops-daemon/api/python` into a fresh venv, `mypy --strict` on what was installed (its
//! `py.typed` included), and the README's example run by that venv's python under
//! `secops run`: check, scan, a denial, an escalation it waits on with `wait_for_ticket`
//! while this test approves it, and the asyncio client.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use secops_host_tests::daemon::{Binaries, Daemon};
use secops_host_tests::kernel::need_root;
use serde_json::{json, Value};

const SECOPS: &str = env!("CARGO_BIN_EXE_secops-under-test");
const NETPROBE: &str = env!("CARGO_BIN_EXE_secops-netprobe");

const POLICY: &str = "version: 1
agents:
  - name: web
    workspace: /tmp
    user: root
    autonomy: semi
rules:
  - id: no-force-push
    actions: [vcs:force_push]
    verdict: deny
    risk: high
  - id: ask-before-release
    actions: [deploy:release]
    verdict: escalate
    risk: high
  - id: pushes-are-fine
    actions: [vcs:push]
    verdict: allow
    risk: low
  - id: tests-may-run
    actions: [code:exec]
    verdict: allow
    risk: low
";

fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_python_package_installs_type_checks_and_runs_the_readme_example_as_an_agent() {
    if !need_root("the_python_package_installs_type_checks_and_runs_the_readme_example_as_an_agent")
    {
        return;
    }
    let source = secops_host_tests::workspace_root().join("secops-daemon/api/python");
    let work = std::env::temp_dir().join(secops_host_tests::kernel::unique_name());
    let venv = work.join("venv");
    run(Command::new("/usr/bin/python3")
        .args(["-m", "venv"])
        .arg(&venv));
    let python: PathBuf = venv.join("bin/python");
    // A build the way a user's pip does it (setuptools fetched into an isolated build env),
    // from a copy: setuptools writes build/ and *.egg-info into the tree it builds.
    let copy = work.join("secops-client");
    run(Command::new("cp").arg("-r").arg(&source).arg(&copy));
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(&copy)
        .env("TMPDIR", &work));
    let installed =
        run(Command::new(&python)
            .args(["-c", "import secops_client; print(secops_client.__file__)"]));
    assert!(
        Path::new(installed.trim()).starts_with(&venv),
        "imported from {installed}"
    );
    let typed = run(Command::new("mypy")
        .args(["--strict", "--python-executable"])
        .arg(&python)
        .args(["-p", "secops_client"]));
    assert!(typed.contains("Success"), "{typed}");

    let binaries = Binaries {
        secops: SECOPS.into(),
        probe: NETPROBE.into(),
    };
    let daemon = Daemon::start_with(&binaries, POLICY, &[]);
    let mut example = daemon
        .agent_program(
            "web",
            &python,
            &[source.join("example.py").to_str().unwrap()],
        )
        .env("SECOPS_SOCKET", daemon.socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A human approves the release the example waits for.
    let admin = daemon.admin_client();
    let started = Instant::now();
    let ticket = loop {
        let list: Value = admin.get("/v1/approvals?status=open").unwrap();
        if let Some(id) = list["tickets"][0]["id"].as_u64() {
            break id;
        }
        if let Some(status) = example.try_wait().unwrap() {
            let out = example.wait_with_output().unwrap();
            panic!(
                "the example ended ({status}) before asking:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no ticket");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _: Value = admin
        .post(
            &format!("/v1/approvals/{ticket}/approve"),
            &json!({"for": "1m"}),
        )
        .unwrap();
    let out = example.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "whoami web",
            "echo key [REDACTED:aws_access_key] in the logs",
            "force_push deny no-force-push",
            "release escalate ticket",
            "ticket approved",
            "release again allow",
            "async push allow",
        ]
    );
    let api = daemon.wait_for_records(6, "the example's checks", |r| {
        r["source"] == "api" && r["agent"] == "web"
    });
    let actions: Vec<&str> = api.iter().filter_map(|r| r["action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "code:exec",
            "tool:output",
            "vcs:force_push",
            "deploy:release",
            "deploy:release",
            "vcs:push"
        ]
    );
    let _ = std::fs::remove_dir_all(&work);
}
