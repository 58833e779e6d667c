//! `/metrics` as monitoring tools read it, from a live daemon that has decided, escalated,
//! had a ticket approved, frozen and thawed an agent and changed its autonomy: the
//! Prometheus text format passes `promtool check metrics`, the OpenMetrics one (asked for by
//! `Accept`) passes the `prometheus_client` OpenMetrics parser, each with its own content
//! type, and every metric the Grafana dashboard in the repository uses is served.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use secops_host_tests::daemon::{Binaries, Daemon};
use secops_host_tests::kernel::need_root;
use serde_json::{json, Value};

const SECOPS: &str = env!("CARGO_BIN_EXE_secops-under-test");
const NETPROBE: &str = env!("CARGO_BIN_EXE_secops-netprobe");
const APIPROBE: &str = env!("CARGO_BIN_EXE_secops-apiprobe");

const POLICY: &str = "version: 1
agents:
  - name: web
    workspace: /tmp
    user: root
    autonomy: semi
rules:
  - id: pushes-are-fine
    actions: [vcs:push]
    verdict: allow
    risk: low
  - id: ask-before-release
    actions: [deploy:release]
    verdict: escalate
    risk: high
";

/// One scrape of the loopback metrics port: (content type, body).
fn scrape(listen: &str, accept: Option<&str>) -> (String, String) {
    let mut tcp = std::net::TcpStream::connect(listen).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        tcp,
        "GET /metrics HTTP/1.1\r\nHost: x\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    tcp.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .expect("a content type");
    (content_type, body.to_owned())
}

/// Runs `program args` with `input` on stdin; (success, stdout + stderr).
fn feed(program: &str, args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The metric names the dashboard's queries use.
fn dashboard_metrics() -> Vec<String> {
    let path = secops_host_tests::workspace_root()
        .join("secops-daemon/packaging/grafana/secops-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut names = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            let mut rest = expr;
            while let Some(at) = rest.find("secops_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                names.push(name);
            }
        }
    }
    names.sort();
    names.dedup();
    assert!(names.len() >= 8, "the dashboard uses {names:?}");
    names
}

#[test]
fn metrics_pass_promtool_and_the_openmetrics_parser_and_feed_the_dashboard() {
    if !need_root("metrics_pass_promtool_and_the_openmetrics_parser_and_feed_the_dashboard") {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let binaries = Binaries {
        secops: SECOPS.into(),
        probe: NETPROBE.into(),
    };
    let daemon = Daemon::start_with(&binaries, POLICY, &["--metrics-listen", &listen]);
    let apiprobe = std::path::Path::new(APIPROBE);
    let socket = daemon.socket();
    let check = |action: &str| {
        let body = json!({ "action": action }).to_string();
        daemon.api_probe(
            apiprobe,
            "web",
            "request",
            &socket,
            &["POST", "/v1/check", &body],
        )
    };
    assert!(check("vcs:push").contains("\"allow\""));
    let scan = json!({"output": "key AKIAQ3EGRV7PLMNX5ZQW"}).to_string();
    let scanned = daemon.api_probe(
        apiprobe,
        "web",
        "request",
        &socket,
        &["POST", "/v1/scan", &scan],
    );
    assert!(scanned.starts_with("200 "), "{scanned}");
    let escalated = check("deploy:release");
    let answer: Value = serde_json::from_str(escalated.split_once(' ').unwrap().1).unwrap();
    let ticket = answer["ticket"].as_u64().expect("a ticket");
    let admin = daemon.admin_client();
    let _: Value = admin
        .post(
            &format!("/v1/approvals/{ticket}/approve"),
            &json!({"for": "1m"}),
        )
        .unwrap();
    for verb in ["freeze", "thaw"] {
        let _: Value = admin
            .post(&format!("/v1/agents/web/{verb}"), &json!({}))
            .unwrap();
    }
    let _: Value = admin
        .post(
            "/v1/agents/web/autonomy",
            &json!({"level": "supervised", "reason": "metrics test"}),
        )
        .unwrap();

    let (content_type, text) = scrape(&listen, None);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let (ok, said) = feed("promtool", &["check", "metrics"], &text);
    assert!(ok && said.trim().is_empty(), "promtool: {said}\n{text}");
    for want in [
        "# HELP secops_decisions_total ",
        "# TYPE secops_decisions_total counter",
        "secops_approval_tickets{state=\"approved\"} 1",
        "secops_approval_tickets{state=\"open\"} 0",
        "secops_approval_tickets_opened_total{source=\"api\"} 1",
        "secops_approval_decisions_total{decision=\"approved\",by=\"person\"} 1",
        "secops_kill_switch_actions_total{agent=\"web\",action=\"freeze\"} 1",
        "secops_kill_switch_actions_total{agent=\"web\",action=\"thaw\"} 1",
        "secops_autonomy_changes_total{agent=\"web\",by=\"person\"} 1",
        "secops_agent_autonomy{agent=\"web\",level=\"supervised\"} 1",
        "secops_agent_autonomy{agent=\"web\",level=\"semi\"} 0",
        "secops_agent_frozen{agent=\"web\"} 0",
        "secops_layer_active{layer=\"egress allowlist\"} 1",
    ] {
        assert!(text.contains(want), "metrics lack {want:?}:\n{text}");
    }
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"));

    let (content_type, open_metrics) = scrape(
        &listen,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(open_metrics.ends_with("# EOF\n"), "{open_metrics}");
    let parse = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        families = list(text_string_to_metric_families(sys.stdin.read()))\n\
        print(len(families))\n";
    let (ok, said) = feed("/usr/bin/python3", &["-c", parse], &open_metrics);
    assert!(ok, "the OpenMetrics parser: {said}\n{open_metrics}");
    let families: usize = said.trim().parse().unwrap();
    assert!(families >= 12, "{families} families:\n{open_metrics}");

    for name in dashboard_metrics() {
        // A histogram's series are its family's name with a suffix.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        let served = text.lines().any(|l| {
            l.starts_with(&format!("# TYPE {name} ")) || l == format!("# TYPE {family} histogram")
        });
        assert!(
            served,
            "the dashboard uses {name}, which /metrics does not serve"
        );
    }
}
