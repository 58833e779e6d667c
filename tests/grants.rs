//! Approvals the kernel honours, on this kernel: a connect outside the allowlist of an agent
//! whose policy asks about such destinations is denied and becomes a ticket; an approval
//! installs a grant in `secops_grants` that the cgroup connect hook checks (expiry on the
//! boot clock, one-shot grants spent by their use), so the retry passes and the same connect
//! after the approval ran out is denied again with no daemon action.

use std::net::TcpListener;
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

fn policy(allowed: u16) -> String {
    format!(
        "version: 1\nagents:\n  - name: web\n    workspace: /tmp\n    user: root\n    autonomy: semi\n\
         egress:\n  web:\n    allow:\n      - cidr: 127.0.0.1/32\n        ports: [{allowed}]\n\
         \x20   dns_resolvers: [127.0.0.53]\n    unlisted: escalate\n"
    )
}

/// The agent's connects, one output line each ("tcp ADDR ok" / "tcp ADDR errno EPERM").
fn connects(daemon: &Daemon, endpoint: &str, times: usize) -> Vec<String> {
    let mut args = Vec::new();
    for _ in 0..times {
        args.extend(["tcp", endpoint]);
    }
    let out = daemon.agent("web", &args);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches(&format!("tcp {endpoint} ")).to_owned())
        .collect()
}

fn cli(daemon: &Daemon, args: &[&str]) -> Value {
    let out = daemon
        .secops()
        .args(args)
        .arg("--socket")
        .arg(daemon.socket())
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn open_tickets(daemon: &Daemon) -> Vec<Value> {
    cli(daemon, &["approvals", "list", "--json"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The one open ticket for `endpoint`, once the pipeline has opened it.
fn ticket_for(daemon: &Daemon, endpoint: &str, count: u64) -> Value {
    let started = Instant::now();
    loop {
        let found = open_tickets(daemon)
            .into_iter()
            .find(|t| t["object"] == endpoint && t["count"].as_u64() >= Some(count));
        if let Some(t) = found {
            return t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no open ticket for {endpoint} with count {count}: {:#?}\n{}",
            open_tickets(daemon),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn approve(daemon: &Daemon, id: u64, extra: &[&str]) {
    let id = id.to_string();
    let mut args = vec!["approvals", "approve", id.as_str()];
    args.extend(extra);
    let out = daemon
        .secops()
        .args(&args)
        .arg("--socket")
        .arg(daemon.socket())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn an_approved_connect_passes_in_the_kernel_until_the_grant_runs_out() {
    if !need_root("an_approved_connect_passes_in_the_kernel_until_the_grant_runs_out") {
        return;
    }
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let asked = TcpListener::bind("127.0.0.1:0").unwrap();
    let allowed_port = allowed.local_addr().unwrap().port();
    let endpoint = asked.local_addr().unwrap().to_string();
    let daemon = Daemon::start(&binaries(), &policy(allowed_port));

    // Denied, and a ticket from the kernel path; a repeat joins it.
    assert_eq!(connects(&daemon, &endpoint, 2), ["errno EPERM"; 2]);
    let ticket = ticket_for(&daemon, &endpoint, 2);
    assert_eq!(ticket["source"], "kernel");
    assert_eq!(ticket["action"], "net:connect");
    assert_eq!(ticket["rule_id"], "egress.web.unlisted");
    let id = ticket["id"].as_u64().unwrap();
    let escalations = daemon.wait_for_records(2, "escalated connects", |r| {
        r["verdict"] == "escalate" && r["object"]["value"] == endpoint.as_str()
    });
    assert!(escalations[0]["reason"]
        .as_str()
        .unwrap()
        .contains(&format!("approval ticket {id}")));

    // Approved for 3 s: the retries pass in the kernel, each one audited with the ticket.
    approve(&daemon, id, &["--for", "3s"]);
    let approved_at = Instant::now();
    let decision = daemon.wait_for_records(1, "the approval", |r| {
        r["source"] == "approval" && r["verdict"] == "allow"
    });
    assert!(
        decision[0]["reason"]
            .as_str()
            .unwrap()
            .contains("kernel grant for this destination"),
        "{:#}",
        decision[0]
    );
    assert_eq!(connects(&daemon, &endpoint, 2), ["ok"; 2]);
    let uses = daemon.wait_for_records(2, "connects allowed by the grant", |r| {
        r["verdict"] == "allow"
            && r["source"] == "kernel"
            && r["object"]["value"] == endpoint.as_str()
    });
    assert!(uses[0]["reason"]
        .as_str()
        .unwrap()
        .contains(&format!("approval ticket {id}")));

    // Once it ran out the kernel denies again by itself, and a new ticket opens.
    let left = Duration::from_millis(3300).saturating_sub(approved_at.elapsed());
    std::thread::sleep(left);
    assert_eq!(connects(&daemon, &endpoint, 1), ["errno EPERM"]);
    let second = ticket_for(&daemon, &endpoint, 1);
    let second_id = second["id"].as_u64().unwrap();
    assert_ne!(second_id, id);

    // A denial keeps it failing.
    let out = daemon
        .secops()
        .args(["approvals", "deny", &second_id.to_string(), "--socket"])
        .arg(daemon.socket())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(connects(&daemon, &endpoint, 1), ["errno EPERM"]);

    // One-shot: the first connect spends it, the second is denied.
    let third = ticket_for(&daemon, &endpoint, 1);
    let third_id = third["id"].as_u64().unwrap();
    assert!(third_id != second_id);
    approve(&daemon, third_id, &["--once"]);
    assert_eq!(connects(&daemon, &endpoint, 2), ["ok", "errno EPERM"]);
    daemon.wait_for_records(1, "the one-shot use", |r| {
        r["verdict"] == "allow"
            && r["reason"]
                .as_str()
                .is_some_and(|s| s.contains(&format!("approval ticket {third_id}, one use")))
    });

    // Grants are exact: the allowlisted port was never affected, other ports stay denied.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = other.local_addr().unwrap().to_string();
    assert_eq!(connects(&daemon, &other, 1), ["errno EPERM"]);
}

fn spawn_asked(daemon: &Daemon, endpoint: &str) -> std::process::Child {
    daemon
        .asked_probe("web", &["tcp", endpoint])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a child this test started; fails (after killing it, by pid) if it takes longer
/// than `limit`.
fn finish(mut child: std::process::Child, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            return (text, started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("the asked agent did not finish in {limit:?}: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_parked_connect_waits_for_a_human_and_fails_when_nobody_decides() {
    if !need_root("a_parked_connect_waits_for_a_human_and_fails_when_nobody_decides") {
        return;
    }
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let asked = TcpListener::bind("127.0.0.1:0").unwrap();
    let ignored = TcpListener::bind("127.0.0.1:0").unwrap();
    let allowed_endpoint = allowed.local_addr().unwrap().to_string();
    let endpoint = asked.local_addr().unwrap().to_string();
    let ignored_endpoint = ignored.local_addr().unwrap().to_string();
    let policy = format!(
        "{}approvals:\n  timeout: 3s\n  on_timeout:\n    high: deny\n",
        policy(allowed.local_addr().unwrap().port())
    );
    let daemon = Daemon::start(&binaries(), &policy);

    // What the policy allows continues at once.
    let (out, _) = finish(
        spawn_asked(&daemon, &allowed_endpoint),
        Duration::from_secs(10),
    );
    assert_eq!(out, format!("tcp {allowed_endpoint} ok"));

    // Escalated: the connect waits in the kernel on a ticket, then passes on approval.
    let child = spawn_asked(&daemon, &endpoint);
    let ticket = ticket_for(&daemon, &endpoint, 1);
    assert_eq!(ticket["source"], "parked");
    std::thread::sleep(Duration::from_millis(300));
    let mut child = child;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the connect did not wait for the decision"
    );
    approve(&daemon, ticket["id"].as_u64().unwrap(), &["--for", "1m"]);
    let (out, _) = finish(child, Duration::from_secs(10));
    assert_eq!(out, format!("tcp {endpoint} ok"));

    // Nobody decides: the timeout policy denies after 3 s and the connect fails.
    let child = spawn_asked(&daemon, &ignored_endpoint);
    let (out, waited) = finish(child, Duration::from_secs(15));
    assert_eq!(out, format!("tcp {ignored_endpoint} errno EPERM"));
    assert!(waited >= Duration::from_millis(2500), "{waited:?}");
    let parked = daemon.wait_for_records(1, "the parked escalation", |r| {
        r["verdict"] == "escalate"
            && r["object"]["value"] == ignored_endpoint.as_str()
            && r["reason"]
                .as_str()
                .is_some_and(|s| s.contains("parked until a human decides"))
    });
    assert_eq!(parked[0]["agent"], "web");
    daemon.wait_for_records(1, "the timeout's denial", |r| {
        r["source"] == "approval"
            && r["verdict"] == "deny"
            && r["object"]["value"] == ignored_endpoint.as_str()
            && r["reason"]
                .as_str()
                .is_some_and(|s| s.contains("timeout policy"))
    });
}
