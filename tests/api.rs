//! The daemon's HTTP API over its real Unix socket: identity from the kernel, admin-only
//! routes, limits, approvals, output scanning, metrics, and every answer checked against
//! `secops-daemon/api/openapi.yaml`. Agents are real processes in real agent cgroups, started
//! with `secops run`.

use std::path::Path;
use std::time::Duration;

use secops_host_tests::daemon::{Binaries, Daemon};
use secops_host_tests::kernel::need_root;
use secops_host_tests::openapi::OpenApi;
use serde_json::{json, Value};

const SECOPS: &str = env!("CARGO_BIN_EXE_secops-under-test");
const NETPROBE: &str = env!("CARGO_BIN_EXE_secops-netprobe");
const APIPROBE: &str = env!("CARGO_BIN_EXE_secops-apiprobe");

/// nobody:nogroup on Debian.
const NOBODY: u32 = 65534;

fn binaries() -> Binaries {
    Binaries {
        secops: SECOPS.into(),
        probe: NETPROBE.into(),
    }
}

const POLICY: &str = "version: 1
agents:
  - name: web
    workspace: /tmp
    user: root
    autonomy: semi
  - name: vault
    workspace: /tmp
    user: root
    autonomy: semi
    output_scan: withhold
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

fn start(extra: &[&str]) -> Daemon {
    let mut args = vec!["--socket-gid", "65534"];
    args.extend_from_slice(extra);
    Daemon::start_with(&binaries(), POLICY, &args)
}

/// Runs the API probe as `agent`; returns its stdout.
fn as_agent(daemon: &Daemon, agent: &str, args: &[&str]) -> String {
    daemon.api_probe(
        Path::new(APIPROBE),
        agent,
        args[0],
        &daemon.socket(),
        &args[1..],
    )
}

/// One request from inside `agent`'s cgroup: (status, body), the body checked against the
/// OpenAPI document.
fn agent_request(
    daemon: &Daemon,
    agent: &str,
    method: &str,
    path: &str,
    body: &str,
    doc_path: &str,
) -> (u16, String) {
    let line = as_agent(daemon, agent, &["request", method, path, body]);
    documented_answer(&line, method, doc_path)
}

/// The probe's `STATUS BODY` line, the body checked against the OpenAPI document.
fn documented_answer(line: &str, method: &str, doc_path: &str) -> (u16, String) {
    let (status, body) = line.split_once(' ').unwrap_or((line, ""));
    let status: u16 = status
        .parse()
        .unwrap_or_else(|_| panic!("no status: {line}"));
    OpenApi::load().check_response(method, doc_path, status, body);
    (status, body.to_owned())
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// A request as this test process: root, outside every agent cgroup.
fn admin_request(
    daemon: &Daemon,
    method: &str,
    path: &str,
    body: &str,
    doc_path: &str,
) -> (u16, String) {
    let socket = daemon.socket();
    let out = std::process::Command::new(APIPROBE)
        .args(["request"])
        .arg(&socket)
        .args([method, path, body])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
    documented_answer(&line, method, doc_path)
}

fn records(daemon: &Daemon, want: impl Fn(&Value) -> bool) -> Vec<Value> {
    daemon.records().into_iter().filter(|r| want(r)).collect()
}

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let documented = OpenApi::load().operations();
    let served: std::collections::BTreeSet<(String, String)> = secops_daemon::daemon::API_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, served,
        "openapi.yaml and the server's routes differ"
    );
}

#[test]
fn a_check_is_attributed_to_the_calling_agent_whatever_the_body_says() {
    if !need_root("a_check_is_attributed_to_the_calling_agent_whatever_the_body_says") {
        return;
    }
    let daemon = start(&[]);
    let (status, body) = agent_request(&daemon, "web", "GET", "/v1/whoami", "", "/v1/whoami");
    assert_eq!(status, 200);
    let who = json_of(&body);
    assert_eq!(
        (who["role"].as_str(), who["agent"].as_str()),
        (Some("agent"), Some("web"))
    );

    let claim = json!({
        "action": "vcs:push",
        "object": {"host": "github.com", "port": 443},
        "tool": "git",
        "arguments": "git push origin main",
        "agent": "vault",
        "durable": true
    })
    .to_string();
    let (status, body) = agent_request(&daemon, "web", "POST", "/v1/check", &claim, "/v1/check");
    assert_eq!(status, 200, "{body}");
    let decision = json_of(&body);
    assert_eq!(decision["agent"], "web");
    assert_eq!(decision["verdict"], "allow");
    assert_eq!(decision["rule_id"], "pushes-are-fine");
    let seq = decision["audit_seq"]
        .as_u64()
        .expect("durable answers carry the seq");

    let record = records(&daemon, |r| r["seq"] == seq);
    assert_eq!(record.len(), 1);
    let r = &record[0];
    assert_eq!(
        (r["agent"].as_str(), r["source"].as_str()),
        (Some("web"), Some("api"))
    );
    assert_eq!(r["action"], "vcs:push");
    assert_eq!(r["object"]["value"], "github.com:443");
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("named agent \"vault\", ignored"),
        "{reason}"
    );
    assert!(reason.contains("git push origin main"), "{reason}");
    assert!(r["pid"].is_u64() && r["cgroup_id"].is_u64(), "{r}");
}

#[test]
fn callers_outside_agent_cgroups_are_not_agents_and_admin_routes_refuse_agents() {
    if !need_root("callers_outside_agent_cgroups_are_not_agents_and_admin_routes_refuse_agents") {
        return;
    }
    let daemon = start(&[]);
    let check = json!({"action": "vcs:push"}).to_string();

    // Root outside every agent cgroup: an admin, not an agent.
    let (status, body) = admin_request(&daemon, "GET", "/v1/whoami", "", "/v1/whoami");
    assert_eq!(status, 200);
    assert_eq!(json_of(&body)["role"], "admin");
    let (status, body) = admin_request(&daemon, "POST", "/v1/check", &check, "/v1/check");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not in an agent cgroup"), "{body}");
    let (status, _) = admin_request(&daemon, "GET", "/v1/status", "", "/v1/status");
    assert_eq!(status, 200);

    // Another user outside every agent cgroup (allowed to connect by the socket's group):
    // neither agent nor admin.
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new(APIPROBE)
        .arg("request")
        .arg(daemon.socket())
        .args(["GET", "/v1/status"])
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.starts_with("403 "), "nobody asked for status: {line}");
    assert!(
        line.contains("neither root nor in the daemon's admin group"),
        "{line}"
    );

    // Agents are refused every admin route.
    for (method, path, doc) in [
        ("GET", "/v1/status", "/v1/status"),
        ("GET", "/v1/agents", "/v1/agents"),
        ("POST", "/v1/reload", "/v1/reload"),
        ("GET", "/v1/audit", "/v1/audit"),
        ("GET", "/v1/approvals", "/v1/approvals"),
        ("GET", "/v1/approvals/1", "/v1/approvals/{id}"),
        (
            "POST",
            "/v1/agents/web/register",
            "/v1/agents/{name}/register",
        ),
        ("GET", "/metrics", "/metrics"),
    ] {
        let (status, body) = agent_request(&daemon, "web", method, path, "", doc);
        assert_eq!(status, 403, "{method} {path} as an agent: {body}");
        assert!(body.contains("inside an agent cgroup"), "{body}");
    }
}

#[test]
fn escalations_open_tickets_and_only_a_human_approval_lets_the_retry_through() {
    if !need_root("escalations_open_tickets_and_only_a_human_approval_lets_the_retry_through") {
        return;
    }
    let daemon = start(&[]);
    let release =
        json!({"action": "deploy:release", "object": {"host": "prod.example.com"}}).to_string();
    let check = |agent: &str| {
        let (status, body) =
            agent_request(&daemon, agent, "POST", "/v1/check", &release, "/v1/check");
        assert_eq!(status, 200, "{body}");
        json_of(&body)
    };
    let first = check("web");
    assert_eq!(first["verdict"], "escalate");
    let ticket = first["ticket"]
        .as_u64()
        .expect("an escalation names its ticket");
    let again = check("web");
    assert_eq!(
        again["ticket"].as_u64(),
        Some(ticket),
        "a repeated attempt joins the ticket"
    );
    // Another agent's same action is its own ticket.
    assert_ne!(check("vault")["ticket"].as_u64(), Some(ticket));

    let (status, body) = admin_request(
        &daemon,
        "GET",
        "/v1/approvals?status=open",
        "",
        "/v1/approvals",
    );
    assert_eq!(status, 200);
    let tickets = json_of(&body)["tickets"].as_array().unwrap().clone();
    let mine = tickets.iter().find(|t| t["id"] == ticket).expect("listed");
    assert_eq!(
        (mine["count"].as_u64(), mine["agent"].as_str()),
        (Some(2), Some("web"))
    );
    assert_eq!(mine["object"], "prod.example.com");

    // The agent cannot approve its own ticket, and the attempt is audited.
    let path = format!("/v1/approvals/{ticket}/approve");
    let (status, body) = agent_request(
        &daemon,
        "web",
        "POST",
        &path,
        "{}",
        "/v1/approvals/{id}/approve",
    );
    assert_eq!(status, 403, "{body}");
    let refusals = records(&daemon, |r| {
        r["source"] == "approval"
            && r["verdict"] == "deny"
            && r["agent"] == "web"
            && r["reason"]
                .as_str()
                .is_some_and(|s| s.contains(&format!("approve ticket #{ticket}")))
    });
    assert_eq!(refusals.len(), 1, "the refused self-approval is audited");
    assert_eq!(check("web")["verdict"], "escalate");

    // A human approves for 2 s: the retry passes, and after 2 s it escalates again.
    let (status, body) = admin_request(
        &daemon,
        "POST",
        &path,
        &json!({"for": "2s", "reason": "release window"}).to_string(),
        "/v1/approvals/{id}/approve",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["status"], "approved");
    let granted = check("web");
    assert_eq!(granted["verdict"], "allow", "{granted}");
    assert!(granted["reason"]
        .as_str()
        .unwrap()
        .contains(&format!("ticket #{ticket}")));
    // The grant is the web agent's only.
    assert_eq!(check("vault")["verdict"], "escalate");
    // Deciding twice is a conflict.
    let (status, _) = admin_request(
        &daemon,
        "POST",
        &format!("/v1/approvals/{ticket}/deny"),
        "",
        "/v1/approvals/{id}/deny",
    );
    assert_eq!(status, 409);
    std::thread::sleep(Duration::from_millis(2200));
    let expired = check("web");
    assert_eq!(expired["verdict"], "escalate");
    let new_ticket = expired["ticket"].as_u64().unwrap();
    assert_ne!(new_ticket, ticket);

    // Denied: it stays escalated, and the decision is audited with who made it.
    let (status, _) = admin_request(
        &daemon,
        "POST",
        &format!("/v1/approvals/{new_ticket}/deny"),
        "{\"reason\":\"no\"}",
        "/v1/approvals/{id}/deny",
    );
    assert_eq!(status, 200);
    assert_eq!(check("web")["verdict"], "escalate");
    let decisions = records(&daemon, |r| {
        r["source"] == "approval" && r["action"] == "deploy:release" && r["uid"] == 0
    });
    assert_eq!(decisions.len(), 2, "{decisions:#?}");

    // A deny is never ticketed, so never approvable.
    let force = json!({"action": "vcs:force_push"}).to_string();
    let (_, body) = agent_request(&daemon, "web", "POST", "/v1/check", &force, "/v1/check");
    let denied = json_of(&body);
    assert_eq!(
        (denied["verdict"].as_str(), denied["ticket"].as_u64()),
        (Some("deny"), None)
    );

    // The CLI reads the same queue.
    let out = daemon
        .secops()
        .args(["approvals", "list", "--all", "--socket"])
        .arg(daemon.socket())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&format!("#{ticket}")),
        "{text}"
    );
}

#[test]
fn bad_requests_get_precise_4xx_and_the_daemon_keeps_serving() {
    if !need_root("bad_requests_get_precise_4xx_and_the_daemon_keeps_serving") {
        return;
    }
    let daemon = start(&["--api-request-timeout", "1s", "--api-header-timeout", "1s"]);
    let cases: Vec<(String, u16, &str)> = vec![
        ("{\"action\": ".into(), 400, "EOF while parsing"),
        (
            "{\"action\": \"vcs:push\", \"object\": {\"port\": \"443\"}}".into(),
            400,
            "`object.port`",
        ),
        (
            "{\"action\": \"vcs:push\", \"as_root\": true}".into(),
            400,
            "unknown field `as_root`",
        ),
        (
            "{\"action\": \"fs:delte\"}".into(),
            400,
            "unknown action type \"fs:delte\"",
        ),
        (
            "{\"action\": \"fs:delete\", \"object\": {\"path\": \"relative\"}}".into(),
            400,
            "object.path",
        ),
        ("[1, 2]".into(), 400, "malformed request body"),
        (
            "{\"action\": \"vcs:push\"} trailing".into(),
            400,
            "trailing characters",
        ),
        (
            format!(
                "{{\"action\": \"vcs:push\", \"tool\": \"{}\"}}",
                "x".repeat(70 << 10)
            ),
            413,
            "larger than the limit of 65536 bytes",
        ),
    ];
    for (body, want, says) in &cases {
        let (status, answer) =
            agent_request(&daemon, "web", "POST", "/v1/check", body, "/v1/check");
        assert_eq!(status, *want, "{} => {answer}", &body[..body.len().min(80)]);
        let message = json_of(&answer)["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains(says), "expected {says:?} in {message}");
    }
    let slow = as_agent(&daemon, "web", &["slow-body", "/v1/check"]);
    assert!(slow.starts_with("408 "), "slow body: {slow}");
    OpenApi::load().check_response("POST", "/v1/check", 408, slow.split_once(' ').unwrap().1);
    let slow = as_agent(&daemon, "web", &["slow-headers"]);
    eprintln!("slow headers: {slow}");
    assert!(
        slow.starts_with("408") || slow.starts_with("closed"),
        "slow headers: {slow}"
    );
    let garbage = as_agent(&daemon, "web", &["garbage"]);
    assert!(
        garbage.starts_with("400") || garbage == "closed",
        "garbage: {garbage}"
    );
    let missing = as_agent(&daemon, "web", &["request", "GET", "/v1/nothing"]);
    assert!(
        missing.starts_with("404 ") && missing.contains("no route GET /v1/nothing"),
        "{missing}"
    );

    // Still serving, and nothing of the above was audited as a decision.
    let ok = json!({"action": "vcs:push"}).to_string();
    let (status, _) = agent_request(&daemon, "web", "POST", "/v1/check", &ok, "/v1/check");
    assert_eq!(status, 200);
    // Answers come before the commit; wait for it.
    let api = daemon.wait_for_records(1, "the one check", |r| r["source"] == "api");
    assert_eq!(api.len(), 1, "{api:#?}");
}

#[test]
fn a_thousand_concurrent_checks_are_all_answered_and_audited() {
    if !need_root("a_thousand_concurrent_checks_are_all_answered_and_audited") {
        return;
    }
    // Fewer connection slots than callers: the rest wait in the backlog, none is dropped.
    let daemon = start(&["--api-max-connections", "64"]);
    let body = json!({"action": "vcs:push", "tool": "concurrency"}).to_string();
    let out = as_agent(&daemon, "web", &["concurrent", "1000", &body]);
    assert!(out.contains("answered 1000 of 1000"), "{out}");
    assert!(out.contains("200 allow 1000"), "{out}");
    let started = std::time::Instant::now();
    loop {
        let n = records(&daemon, |r| {
            r["source"] == "api" && r["agent"] == "web" && r["action"] == "vcs:push"
        })
        .len();
        if n == 1000 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{n} of 1000 checks audited"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

const AWS_KEY: &str = "AKIAQ3EGRV7PLMNX5ZQW";

#[test]
fn scan_applies_the_agents_policy_and_audits_counts_never_the_secret() {
    if !need_root("scan_applies_the_agents_policy_and_audits_counts_never_the_secret") {
        return;
    }
    let daemon = start(&[]);
    let output = format!("deploy log\nkey id {AWS_KEY}\nmail ops@corp.io\n");
    let body = json!({"output": output, "tool": "cat"}).to_string();
    let (status, answer) = agent_request(&daemon, "web", "POST", "/v1/scan", &body, "/v1/scan");
    assert_eq!(status, 200, "{answer}");
    let scanned = json_of(&answer);
    assert_eq!(scanned["action"], "redacted");
    let text = scanned["output"].as_str().unwrap();
    assert!(
        text.contains("[REDACTED:aws_access_key]") && !text.contains(AWS_KEY),
        "{text}"
    );
    assert_eq!(scanned["findings"]["aws_access_key"], 1);
    assert_eq!(scanned["findings"]["email"], 1);

    // The vault agent's policy withholds.
    let (_, answer) = agent_request(&daemon, "vault", "POST", "/v1/scan", &body, "/v1/scan");
    let withheld = json_of(&answer);
    assert_eq!(
        (withheld["action"].as_str(), withheld["output"].is_null()),
        (Some("withheld"), true)
    );

    // Clean output passes untouched.
    let clean = json!({"output": "all 12 tests passed"}).to_string();
    let (_, answer) = agent_request(&daemon, "web", "POST", "/v1/scan", &clean, "/v1/scan");
    assert_eq!(json_of(&answer)["output"], "all 12 tests passed");

    let scans = daemon.wait_for_records(2, "scans", |r| r["action"] == "tool:output");
    assert_eq!(
        scans.len(),
        2,
        "one record per scan with findings: {scans:#?}"
    );
    let reason = scans[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("1 aws_access_key") && reason.contains("1 email"),
        "{reason}"
    );
    let all = serde_json::to_string(&daemon.records()).unwrap();
    assert!(
        !all.contains(AWS_KEY) && !all.contains("ops@corp.io"),
        "a secret reached the audit log"
    );
}

#[test]
fn metrics_count_decisions_findings_and_losses_on_the_socket_and_loopback() {
    if !need_root("metrics_count_decisions_findings_and_losses_on_the_socket_and_loopback") {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let daemon = start(&["--metrics-listen", &listen]);
    let check = json!({"action": "vcs:push"}).to_string();
    agent_request(&daemon, "web", "POST", "/v1/check", &check, "/v1/check");
    let scan = json!({"output": format!("id {AWS_KEY}")}).to_string();
    agent_request(&daemon, "web", "POST", "/v1/scan", &scan, "/v1/scan");

    let (status, text) = daemon.admin_client().get_text("/metrics").unwrap();
    assert_eq!(status, 200);
    for want in [
        "secops_decisions_total{source=\"api\",verdict=\"allow\",action=\"vcs:push\",agent=\"web\"} 1",
        "secops_decision_latency_seconds_bucket{",
        "secops_kernel_events_lost_total ",
        "secops_approval_tickets{state=\"open\"} 0",
        "secops_scan_findings_total{category=\"aws_access_key\"} 1",
    ] {
        assert!(text.contains(want), "metrics lack {want:?}:\n{text}");
    }
    let mut tcp = std::net::TcpStream::connect(&listen).unwrap();
    use std::io::{Read, Write};
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    tcp.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.contains("secops_decisions_total"),
        "{reply}"
    );
}

#[test]
fn an_agent_holding_hundreds_of_connections_cannot_starve_the_admins_or_other_agents() {
    if !need_root(
        "an_agent_holding_hundreds_of_connections_cannot_starve_the_admins_or_other_agents",
    ) {
        return;
    }
    let daemon = start(&["--api-agent-queue", "200"]);
    // 600 kept-busy connections from one agent: 64 served, 200 waiting, the rest refused.
    let mut holder = daemon
        .agent_program("web", Path::new(APIPROBE), &["hold"])
        .arg(daemon.socket())
        .args(["600", "6"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(holder.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    assert_eq!(first.trim(), "holding 600");
    std::thread::sleep(Duration::from_millis(500));

    // The admins' routes and the kill switch answer at once, and so does another agent.
    let started = std::time::Instant::now();
    let (status, _) = admin_request(&daemon, "GET", "/v1/status", "", "/v1/status");
    assert_eq!(status, 200);
    let (status, _) = admin_request(&daemon, "GET", "/v1/approvals", "", "/v1/approvals");
    assert_eq!(status, 200);
    let (status, body) = admin_request(
        &daemon,
        "POST",
        "/v1/agents/vault/freeze",
        "",
        "/v1/agents/{name}/freeze",
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = admin_request(
        &daemon,
        "POST",
        "/v1/agents/vault/thaw",
        "",
        "/v1/agents/{name}/thaw",
    );
    assert_eq!(status, 200);
    let check = json!({"action": "vcs:push"}).to_string();
    let (status, _) = agent_request(&daemon, "vault", "POST", "/v1/check", &check, "/v1/check");
    assert_eq!(status, 200, "another agent has its own budget");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "admins waited {took:?}");

    let rest: String = std::io::Read::bytes(out)
        .map(|b| b.unwrap() as char)
        .collect();
    assert!(holder.wait().unwrap().success());
    let tally: std::collections::BTreeMap<&str, usize> = rest
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k, v.parse().unwrap()))
        .collect();
    assert_eq!(
        tally.get("429"),
        Some(&336),
        "600 - 64 served - 200 waiting: {rest}"
    );
    assert_eq!(tally.get("200"), Some(&64), "{rest}");
}

/// Audit before action, also when the disk says no: with the state directory full, checks
/// that must be recorded are not answered allow, `secops status` and `/metrics` say the log
/// is failing, and once there is room again records are written again.
#[test]
fn a_full_disk_under_the_audit_log_shows_in_status_and_metrics_and_checks_are_not_allowed() {
    if !need_root(
        "a_full_disk_under_the_audit_log_shows_in_status_and_metrics_and_checks_are_not_allowed",
    ) {
        return;
    }
    let daemon =
        Daemon::start_on_small_state(&binaries(), POLICY, &["--socket-gid", "65534"], "16m");
    let push = json!({"action": "vcs:push", "arguments": "git push origin main"}).to_string();
    let (status, body) = agent_request(&daemon, "web", "POST", "/v1/check", &push, "/v1/check");
    assert_eq!(
        (status, json_of(&body)["verdict"].as_str()),
        (200, Some("allow")),
        "{body}"
    );
    let healthy = daemon.status().expect("status");
    assert!(healthy["audit"]["failing"].is_null(), "{healthy:#}");

    // Fill the state directory's file system.
    let fill = daemon.dir.join("state").join("fill");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", fill.display()))
        .stderr(std::process::Stdio::null())
        .status();
    // A durable check is answered only once its record is committed: never allow now.
    let durable =
        json!({"action": "vcs:push", "arguments": "git push origin main", "durable": true})
            .to_string();
    let mut refused = 0;
    let mut failing = None;
    for _ in 0..400 {
        let (status, body) =
            agent_request(&daemon, "web", "POST", "/v1/check", &durable, "/v1/check");
        if status == 200 {
            // Space left in a page already allocated still takes records: an allow is fine
            // as long as its record is committed.
            let answer = json_of(&body);
            if answer["verdict"] == "allow" {
                assert!(answer["audit_seq"].is_u64(), "an unrecorded allow: {body}");
            }
        } else {
            refused += 1;
        }
        if let Some(why) = daemon
            .status()
            .and_then(|s| s["audit"]["failing"].as_str().map(str::to_owned))
        {
            failing = Some(why);
            break;
        }
    }
    let failing = failing
        .unwrap_or_else(|| panic!("the audit log never reported failing:\n{}", daemon.log()));
    let (status, body) = agent_request(&daemon, "web", "POST", "/v1/check", &durable, "/v1/check");
    assert_ne!(
        status, 200,
        "a durable check answered while the log is failing: {body}"
    );
    refused += 1;
    eprintln!("checks refused while the disk was full: {refused}; failing: {failing}");
    // While the log is failing, a non-durable check is refused too (its loss window would
    // have no end).
    let (status, body) = agent_request(&daemon, "web", "POST", "/v1/check", &push, "/v1/check");
    assert_ne!(status, 200, "{body}");
    let text = daemon.status_text();
    assert!(text.contains("audit log: FAILING"), "{text}");
    assert!(text.contains(&failing), "{text}");
    let (status, metrics) = admin_request(&daemon, "GET", "/metrics", "", "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("secops_audit_log_up 0"), "{metrics}");

    // Room again: records are written again.
    std::fs::remove_file(&fill).unwrap();
    let mut recovered = false;
    for _ in 0..100 {
        let (status, body) = agent_request(&daemon, "web", "POST", "/v1/check", &push, "/v1/check");
        if status == 200 && json_of(&body)["verdict"] == "allow" {
            recovered = daemon
                .status()
                .is_some_and(|s| s["audit"]["failing"].is_null());
            if recovered {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        recovered,
        "the audit log did not recover:\n{}",
        daemon.log()
    );
    let (_, metrics) = admin_request(&daemon, "GET", "/metrics", "", "/metrics");
    assert!(metrics.contains("secops_audit_log_up 1"), "{metrics}");
}
