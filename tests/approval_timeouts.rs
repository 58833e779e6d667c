//! Timeout policies with a real daemon: tickets opened by `/v1/check` from inside an agent
//! cgroup are closed, once nobody decided them in time, with their risk tier's decision, and
//! each closing is in the audit log like a human's decision. A reload changes what happens to
//! tickets already open.

use std::path::Path;
use std::time::{Duration, Instant};

use secops_host_tests::daemon::{Binaries, Daemon};
use secops_host_tests::kernel::need_root;
use secops_host_tests::openapi::OpenApi;
use serde_json::{json, Value};

const SECOPS: &str = env!("CARGO_BIN_EXE_secops-under-test");
const NETPROBE: &str = env!("CARGO_BIN_EXE_secops-netprobe");
const APIPROBE: &str = env!("CARGO_BIN_EXE_secops-apiprobe");

const RULES: &str = "agents:
  - name: web
    workspace: /tmp
    user: root
    autonomy: semi
rules:
  - id: ask-low
    actions: [vcs:push]
    verdict: escalate
    risk: low
  - id: ask-medium
    actions: [deploy:rollback]
    verdict: escalate
    risk: medium
  - id: ask-critical
    actions: [deploy:release]
    verdict: escalate
    risk: critical
";

fn policy(critical: &str) -> String {
    format!(
        "version: 1
approvals:
  timeout: 2s
  on_timeout:
    low: allow
    medium: deny
    critical: {critical}
{RULES}"
    )
}

/// `STATUS BODY` from the API probe, the body checked against the OpenAPI document.
fn answer(line: &str, method: &str, doc_path: &str) -> Value {
    let (status, body) = line.split_once(' ').unwrap_or((line, ""));
    assert_eq!(status, "200", "{method} {doc_path}: {line}");
    OpenApi::load().check_response(method, doc_path, 200, body);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// `/v1/check` from inside the web agent's cgroup.
fn check(daemon: &Daemon, action: &str) -> Value {
    let body = json!({"action": action, "object": {"host": "prod.example.com"}}).to_string();
    let line = daemon.api_probe(
        Path::new(APIPROBE),
        "web",
        "request",
        &daemon.socket(),
        &["POST", "/v1/check", &body],
    );
    answer(&line, "POST", "/v1/check")
}

/// A request as this test process: root, outside every agent cgroup (an admin).
fn admin(daemon: &Daemon, method: &str, path: &str, doc_path: &str) -> Value {
    let out = std::process::Command::new(APIPROBE)
        .arg("request")
        .arg(daemon.socket())
        .args([method, path, ""])
        .output()
        .unwrap();
    answer(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        method,
        doc_path,
    )
}

fn ticket(daemon: &Daemon, id: u64) -> Value {
    admin(
        daemon,
        "GET",
        &format!("/v1/approvals/{id}"),
        "/v1/approvals/{id}",
    )
}

/// Waits until ticket `id` is no longer open.
fn decided(daemon: &Daemon, id: u64) -> Value {
    let started = Instant::now();
    loop {
        let t = ticket(daemon, id);
        if t["status"] != "open" {
            return t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "ticket #{id} still open: {t}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn timeout_record(records: &[Value], id: u64) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| {
            r["source"] == "approval"
                && r["reason"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(&format!("ticket #{id} ")))
        })
        .collect()
}

#[test]
fn expired_tickets_are_closed_with_their_tiers_decision_and_audited() {
    if !need_root("expired_tickets_are_closed_with_their_tiers_decision_and_audited") {
        return;
    }
    let binaries = Binaries {
        secops: SECOPS.into(),
        probe: NETPROBE.into(),
    };
    let mut daemon = Daemon::start(&binaries, &policy("wait"));
    let mut tickets = Vec::new();
    for action in ["vcs:push", "deploy:rollback", "deploy:release"] {
        let first = check(&daemon, action);
        assert_eq!(first["verdict"], "escalate", "{first}");
        tickets.push(first["ticket"].as_u64().expect("a ticket"));
    }
    let [low, medium, critical] = tickets[..] else {
        unreachable!()
    };
    // Not before the timeout.
    assert_eq!(ticket(&daemon, low)["status"], "open");

    let low_t = decided(&daemon, low);
    let medium_t = decided(&daemon, medium);
    let opened = low_t["first_seen_ns"].as_i64().unwrap();
    let closed = low_t["decided_at_ns"].as_i64().unwrap();
    assert!(
        closed - opened >= 2_000_000_000,
        "closed {} ms after opening, before the 2 s timeout",
        (closed - opened) / 1_000_000
    );
    assert_eq!(low_t["status"], "approved", "{low_t}");
    assert_eq!(low_t["decided_by"], "timeout policy");
    assert_eq!(
        low_t["decision_reason"],
        "no human decided within 2s; the timeout policy for low risk says allow (for 10m)"
    );
    let grant = low_t["grant_until_ns"].as_i64().unwrap() - closed;
    assert_eq!(grant, 600_000_000_000, "the default grant");
    assert_eq!(medium_t["status"], "denied", "{medium_t}");
    assert_eq!(medium_t["decided_by"], "timeout policy");
    assert_eq!(
        medium_t["decision_reason"],
        "no human decided within 2s; the timeout policy for medium risk says deny"
    );

    // `wait`: a sweep later, still open for a human.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ticket(&daemon, critical)["status"], "open");

    // The low-risk approval lets the same check through; the medium one stays escalated,
    // in a new ticket.
    let again = check(&daemon, "vcs:push");
    assert_eq!(again["verdict"], "allow", "{again}");
    assert!(
        again["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("approved in ticket #{low} by timeout policy")),
        "{again}"
    );
    let again = check(&daemon, "deploy:rollback");
    assert_eq!(again["verdict"], "escalate");
    assert_ne!(again["ticket"].as_u64(), Some(medium));

    // Audited like a human's decision: source approval, the ticket's agent, action, object
    // and risk, no process (nobody decided), and the reason says it was the timeout.
    let records = daemon.wait_for_records(2, "timeout decisions", |r| {
        r["source"] == "approval"
            && r["reason"]
                .as_str()
                .is_some_and(|s| s.contains("by timeout policy"))
    });
    for (id, action, verdict, risk, says) in [
        (low, "vcs:push", "allow", "low", "says allow"),
        (medium, "deploy:rollback", "deny", "medium", "says deny"),
    ] {
        let found = timeout_record(&records, id);
        assert_eq!(found.len(), 1, "ticket #{id}: {records:#?}");
        let r = found[0];
        assert_eq!(
            (
                r["agent"].as_str(),
                r["action"].as_str(),
                r["verdict"].as_str(),
                r["risk"].as_str()
            ),
            (Some("web"), Some(action), Some(verdict), Some(risk)),
            "{r}"
        );
        assert_eq!(r["object"]["value"], "prod.example.com");
        assert!(r["uid"].is_null() && r["pid"].is_null(), "{r}");
        let reason = r["reason"].as_str().unwrap();
        assert!(
            reason.contains("no human decided within 2s") && reason.contains(says),
            "{reason}"
        );
    }
    assert!(timeout_record(&daemon.records(), critical).is_empty());

    // The CLI shows which decisions nobody made.
    let out = daemon
        .secops()
        .args(["approvals", "list", "--all", "--socket"])
        .arg(daemon.socket())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |id: u64| {
        text.lines()
            .find(|l| l.starts_with(&format!("#{id} ")))
            .unwrap_or_else(|| panic!("no #{id} in {text}"))
            .to_owned()
    };
    assert!(line(low).contains("timed out"), "{text}");
    assert!(line(medium).contains("timed out"), "{text}");
    assert!(!line(critical).contains("timed out"), "{text}");

    // A reload changes the decision for tickets already open: the policy at sweep time rules.
    std::fs::write(daemon.dir.join("policy.yaml"), policy("deny")).unwrap();
    admin(&daemon, "POST", "/v1/reload", "/v1/reload");
    let critical_t = decided(&daemon, critical);
    assert_eq!(
        (
            critical_t["status"].as_str(),
            critical_t["decided_by"].as_str()
        ),
        (Some("denied"), Some("timeout policy")),
        "{critical_t}"
    );

    // The sweeper stops with the daemon, before the audit log is closed.
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        daemon.log()
    );
    assert!(!daemon.log().contains("still shared"), "{}", daemon.log());
}
