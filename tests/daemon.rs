//! `secops daemon` and `secops run` on this kernel, nothing mocked: a real daemon process
//! loads and attaches the BPF programs, agents are started with the real launcher, and their
//! connections, execs and deletes are judged and audited.
//!
//! Each test runs its own daemon with its own state directory, socket, bpffs pin directory
//! and root cgroup, and the guard tears all of it down (also when the test fails).

use std::net::{TcpListener, TcpStream};
use std::process::Output;
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

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn policy(allowed_ports: &[u16]) -> String {
    let ports: Vec<String> = allowed_ports.iter().map(u16::to_string).collect();
    format!(
        "version: 1\nagents:\n  - name: web\n    workspace: /tmp\n    user: root\n    autonomy: semi\n\
         egress:\n  web:\n    allow:\n      - cidr: 127.0.0.1/32\n        ports: [{}]\n    dns_resolvers: [127.0.0.53]\n",
        ports.join(", ")
    )
}

fn endpoint_is(record: &Value, action: &str, verdict: &str, endpoint: &str) -> bool {
    record["action"] == action
        && record["verdict"] == verdict
        && record["object"]["value"] == endpoint
        && record["agent"] == "web"
}

#[test]
fn egress_allowlist_is_enforced_on_agents_and_audited() {
    if !need_root("egress_allowlist_is_enforced_on_agents_and_audited") {
        return;
    }
    let (_allowed, allowed) = listener();
    let (_denied, denied) = listener();
    let daemon = Daemon::start(&binaries(), &policy(&[allowed]));

    // A process outside any agent cgroup reaches the denied port throughout.
    let outside = std::thread::spawn(move || {
        (0..20).all(|_| {
            std::thread::sleep(Duration::from_millis(25));
            TcpStream::connect(("127.0.0.1", denied)).is_ok()
        })
    });
    let a = format!("127.0.0.1:{allowed}");
    let d = format!("127.0.0.1:{denied}");
    let out = daemon.agent(
        "web",
        &[
            "tcp",
            &a,
            "tcp",
            &d,
            "tcp-mapped",
            &d,
            "udp",
            &d,
            "udp",
            "127.0.0.53:53",
            "detach",
            "tcp",
            &d,
            "tcp",
            &a,
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let got = lines(&out);
    assert_eq!(
        got,
        [
            format!("tcp {a} ok"),
            format!("tcp {d} errno EPERM"),
            format!("tcp-mapped {d} errno EPERM"),
            format!("udp {d} errno EPERM"),
            "udp 127.0.0.53:53 ok".to_owned(),
            got[5].clone(),
            format!("tcp {d} errno EPERM"),
            format!("tcp {a} ok"),
        ],
        "agent output"
    );
    assert!(got[5].starts_with("detached pid "), "{}", got[5]);
    assert!(
        outside.join().unwrap(),
        "a process outside the agent cgroups was affected"
    );

    // Three denied connects (direct, IPv4-mapped, the grandchild's) and one denied UDP send.
    let denied_connects = daemon.wait_for_records(3, "denied connects", |r| {
        endpoint_is(r, "net:connect", "deny", &d)
    });
    for r in &denied_connects {
        assert_eq!(r["rule_id"], "egress.web.default-deny");
        assert_eq!(r["source"], "kernel");
    }
    let sends = daemon.wait_for_records(1, "a denied UDP send", |r| {
        endpoint_is(r, "net:send", "deny", &d)
    });
    assert_eq!(sends[0]["rule_id"], "egress.web.default-deny");
    // Allowed connections: aggregated into one record per destination, not one per connect.
    let allowed_records = daemon.wait_for_records(1, "allowed connects", |r| {
        endpoint_is(r, "net:connect", "allow", &a)
    });
    assert_eq!(allowed_records.len(), 1, "{allowed_records:#?}");
    assert!(
        allowed_records[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("2 connection(s) allowed"),
        "{}",
        allowed_records[0]["reason"]
    );

    let status = daemon.status().unwrap();
    let layers = status["capabilities"].as_array().unwrap();
    assert!(
        layers
            .iter()
            .any(|l| l["name"] == "egress allowlist" && l["active"] == true),
        "{status:#}"
    );
    assert!(
        layers
            .iter()
            .any(|l| l["name"].as_str().unwrap().contains("BPF LSM") && l["active"] == false),
        "{status:#}"
    );
}

#[test]
fn exec_and_unlink_in_an_agent_are_audited() {
    if !need_root("exec_and_unlink_in_an_agent_are_audited") {
        return;
    }
    let daemon = Daemon::start(&binaries(), &policy(&[9]));
    // Not beside the daemon's own files: where the Landlock layer runs, agents may not
    // delete in a directory that holds secops' state (Landlock grants by hierarchy).
    let files = daemon.dir.join("files");
    std::fs::create_dir(&files).unwrap();
    let victim = files.join("victim.txt");
    std::fs::write(&victim, "x").unwrap();
    let victim = victim.to_str().unwrap().to_owned();
    let out = daemon.agent("web", &["unlink", &victim]);
    assert_eq!(lines(&out), [format!("unlink {victim} ok")]);

    let deletes = daemon.wait_for_records(1, "the delete", |r| {
        r["action"] == "fs:delete" && r["object"]["value"] == victim.as_str()
    });
    assert_eq!(deletes[0]["agent"], "web");
    assert_eq!(deletes[0]["comm"], "secops-netprobe");
    let execs = daemon.wait_for_records(1, "the exec", |r| {
        r["action"] == "proc:exec" && r["object"]["value"] == PROBE
    });
    assert_eq!(execs[0]["agent"], "web");
    daemon.wait_for_records(1, "the exit", |r| {
        r["action"] == "proc:exit" && r["agent"] == "web"
    });
    // Observation, not enforcement, on this kernel: the record says what the policy would do.
    let reason = deletes[0]["reason"].as_str().unwrap();
    assert!(
        deletes[0]["verdict"] == "allow"
            && reason.contains("observed only, NOT blocked")
            && deletes[0]["rule_id"].is_null(),
        "{reason}"
    );
}

#[test]
fn enforcement_survives_the_daemon_and_a_restart_adopts_it() {
    if !need_root("enforcement_survives_the_daemon_and_a_restart_adopts_it") {
        return;
    }
    let (_denied, denied) = listener();
    let d = format!("127.0.0.1:{denied}");
    let mut daemon = Daemon::start(&binaries(), &policy(&[9]));
    // The agent starts while the daemon runs, and connects after the daemon is killed.
    let agent = daemon.agent_spawn("web", &["sleep", "1500", "tcp", &d]);
    std::thread::sleep(Duration::from_millis(500));
    daemon.kill_and_wait();
    let out = agent.wait_with_output().unwrap();
    assert_eq!(
        lines(&out),
        [format!("tcp {d} errno EPERM")],
        "denied while the daemon was down"
    );

    daemon.spawn();
    let log = daemon.log();
    assert!(
        log.contains("(\"secops_connect4\", Updated)"),
        "the restarted daemon adopts the pinned link:\n{log}"
    );
    // The event from while it was down waited in the pinned ring buffer.
    daemon.wait_for_records(
        1,
        "the denied connect from while the daemon was down",
        |r| endpoint_is(r, "net:connect", "deny", &d),
    );
    assert_eq!(
        lines(&daemon.agent("web", &["tcp", &d])),
        [format!("tcp {d} errno EPERM")]
    );
}

#[test]
fn sighup_reloads_the_allowlist_and_a_broken_policy_changes_nothing() {
    if !need_root("sighup_reloads_the_allowlist_and_a_broken_policy_changes_nothing") {
        return;
    }
    let (_first, first) = listener();
    let (_second, second) = listener();
    let (f, s) = (format!("127.0.0.1:{first}"), format!("127.0.0.1:{second}"));
    let daemon = Daemon::start(&binaries(), &policy(&[first]));
    assert_eq!(
        lines(&daemon.agent("web", &["tcp", &f, "tcp", &s])),
        [format!("tcp {f} ok"), format!("tcp {s} errno EPERM")]
    );

    std::fs::write(daemon.dir.join("policy.yaml"), policy(&[first, second])).unwrap();
    daemon.signal(libc::SIGHUP);
    wait_until(
        || lines(&daemon.agent("web", &["tcp", &s])) == [format!("tcp {s} ok")],
        "the new allowlist to apply",
    );

    std::fs::write(
        daemon.dir.join("policy.yaml"),
        "version: 1\nagents: [oops\n",
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    wait_until(
        || {
            daemon
                .status()
                .is_some_and(|st| st["last_reload_error"].is_string())
        },
        "the broken policy to be refused",
    );
    let error = daemon.status().unwrap()["last_reload_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains("policy.yaml:2:"),
        "the refusal names file and line: {error}"
    );
    assert_eq!(
        lines(&daemon.agent("web", &["tcp", &f, "tcp", &s])),
        [format!("tcp {f} ok"), format!("tcp {s} ok")],
        "the previous policy stays in force"
    );

    // Every reload is audited: what set it off, and the policy's hash old -> new.
    let (started, reloads): (Vec<Value>, Vec<Value>) = daemon
        .records()
        .into_iter()
        .filter(|r| r["action"] == "sys:policy")
        .partition(|r| {
            r["reason"]
                .as_str()
                .is_some_and(|s| s.starts_with("policy in force at daemon start: sha256 "))
        });
    assert_eq!(
        started.len(),
        1,
        "the policy in force at start is recorded: {started:#?}"
    );
    let applied = reloads
        .iter()
        .find(|r| r["verdict"] == "allow")
        .unwrap_or_else(|| panic!("no reload record: {reloads:#?}"));
    let reason = applied["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("policy reloaded (SIGHUP)")
            || reason.starts_with("policy reloaded (a policy file changed)"),
        "{reason}"
    );
    let hashes: Vec<&str> = reason
        .split_once("sha256 ")
        .map(|(_, rest)| rest.split(';').next().unwrap().split(" -> ").collect())
        .unwrap_or_default();
    assert_eq!(hashes.len(), 2, "{reason}");
    assert_ne!(hashes[0], hashes[1], "{reason}");
    assert!(hashes.iter().all(|h| h.len() == 64), "{reason}");
    let refused = reloads
        .iter()
        .find(|r| r["verdict"] == "deny")
        .unwrap_or_else(|| panic!("no refused reload: {reloads:#?}"));
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("stays: the new policy is not valid"),
        "{refused}"
    );
    assert_eq!(refused["source"], "daemon");
}

#[test]
fn agents_cannot_register_agents_and_unknown_agents_are_refused() {
    if !need_root("agents_cannot_register_agents_and_unknown_agents_are_refused") {
        return;
    }
    let daemon = Daemon::start(&binaries(), &policy(&[9]));
    let out = daemon
        .secops()
        .args(["run", "--agent", "nobody", "--socket"])
        .arg(daemon.socket())
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent named \"nobody\""));
    // An agent asking the daemon to start another agent is refused.
    let nested = daemon
        .secops()
        .args(["run", "--agent", "web", "--socket"])
        .arg(daemon.socket())
        .arg("--")
        .arg(SECOPS)
        .args(["run", "--agent", "web", "--socket"])
        .arg(daemon.socket())
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(nested.status.code(), Some(125), "{nested:?}");
    assert!(
        String::from_utf8_lossy(&nested.stderr).contains("cannot start agents"),
        "{nested:?}"
    );
}

#[test]
fn host_names_in_allowlists_are_resolved_into_the_kernel() {
    if !need_root("host_names_in_allowlists_are_resolved_into_the_kernel") {
        return;
    }
    let (_allowed, allowed) = listener();
    let (_other, other) = listener();
    let daemon = Daemon::start(
        &binaries(),
        &format!(
            "version: 1\nagents:\n  - name: web\n    workspace: /tmp\n    user: root\n\
             egress:\n  web:\n    allow:\n      - host: localhost\n        ports: [{allowed}]\n"
        ),
    );
    let (a, o) = (format!("127.0.0.1:{allowed}"), format!("127.0.0.1:{other}"));
    // Resolution runs in the background: until it lands, the name allows nothing.
    wait_until(
        || lines(&daemon.agent("web", &["tcp", &a])) == [format!("tcp {a} ok")],
        "localhost to resolve into the allowlist",
    );
    assert_eq!(
        lines(&daemon.agent("web", &["tcp", &o])),
        [format!("tcp {o} errno EPERM")]
    );
}

#[test]
fn events_lost_past_the_ring_buffer_are_counted_exactly_and_audited() {
    if !need_root("events_lost_past_the_ring_buffer_are_counted_exactly_and_audited") {
        return;
    }
    const BURST: u64 = 20_000;
    let daemon = Daemon::start_with(&binaries(), &policy(&[9]), &["--ring-buffer-kib", "64"]);
    let prefix = daemon.dir.join("gone-").to_string_lossy().into_owned();
    let out = daemon.agent("web", &["unlinks", &BURST.to_string(), &prefix]);
    assert!(
        lines(&out)[0].starts_with(&format!("unlinks {BURST} done")),
        "{out:?}"
    );
    let (audited, lost) = daemon.settled_unlink_counts(&prefix, BURST);
    assert!(
        lost > 0,
        "a 64 KiB ring buffer cannot hold {BURST} events at once; nothing was lost?"
    );
    assert_eq!(audited + lost, BURST, "audited {audited} + lost {lost}");
    assert!(daemon.status().unwrap()["events"]["lost"].as_u64().unwrap() >= lost);
}

fn wait_until(mut condition: impl FnMut() -> bool, what: &str) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_state_directory_and_the_audit_log_are_the_daemons_alone() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !need_root("the_state_directory_and_the_audit_log_are_the_daemons_alone") {
        return;
    }
    let mut daemon = Daemon::start_with(&binaries(), &policy(&[8080]), &[]);
    let state = daemon.dir.join("state");
    let private = |daemon: &Daemon| {
        assert_eq!(std::fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
        // Every file the daemon wrote there: the log's segments and head, its index, the
        // approval queue, the keys, the state files.
        let mut dirs = vec![state.clone()];
        let mut files = 0;
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    dirs.push(path);
                    continue;
                }
                files += 1;
                let mode = meta.mode() & 0o777;
                assert_eq!(
                    mode & 0o077,
                    0,
                    "{} is {mode:o}\n{}",
                    path.display(),
                    daemon.log()
                );
            }
        }
        assert!(files >= 3, "the log, the queue and the key are there");
    };
    private(&daemon);
    // A state directory someone opened up meanwhile is made private again at the next start.
    daemon.kill_and_wait();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    daemon.spawn();
    private(&daemon);
    assert!(daemon.log().contains("it is 0700 now"), "{}", daemon.log());
    daemon.kill_and_wait();

    // One that another user owns is refused before anything is loaded or pinned.
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    let name = secops_host_tests::kernel::unique_name();
    let out = std::process::Command::new(SECOPS)
        .arg("--state-dir")
        .arg(&state)
        .args(["daemon", "--policy"])
        .arg(daemon.dir.join("policy.yaml"))
        .arg("--socket")
        .arg(daemon.dir.join("other.sock"))
        .args([
            "--pin-dir",
            &format!("/sys/fs/bpf/{name}"),
            "--cgroup-root",
            &name,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("owned by uid 65534"), "{stderr}");
    assert!(
        !std::path::Path::new(&format!("/sys/fs/bpf/{name}")).exists(),
        "nothing was pinned"
    );
    std::os::unix::fs::chown(&state, Some(0), Some(0)).unwrap();
}
