//! Approvals reach a person: a real HTTP receiver on loopback, started here, gets a
//! webhook when an agent's escalation opens a ticket and when an admin decides it — JSON
//! signed with HMAC-SHA256 (a first attempt answered 500 is retried), and the
//! Slack-compatible shape on a second webhook — and `/metrics` counts the deliveries.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
  - id: ask-before-release
    actions: [deploy:release]
    verdict: escalate
    risk: high
";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 server on a loopback port: records every request; answers 500 to the first
/// `fail_first` requests on `/json`, 200 to the rest. Its thread ends with the test process.
fn receiver(fail_first: usize) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        let mut failed = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((n, v)) = h.trim_end().split_once(':') {
                    headers.push((n.trim().to_owned(), v.trim().to_owned()));
                }
            }
            let length: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let fail = path == "/json" && failed < fail_first;
            if fail {
                failed += 1;
            }
            record.lock().unwrap().push(Received {
                path,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            let status = if fail {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (address, seen)
}

fn wait_for(seen: &Mutex<Vec<Received>>, what: &str, want: impl Fn(&[Received]) -> bool) {
    let started = Instant::now();
    while !want(&seen.lock().unwrap()) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the receiver never got {what}: {:#?}",
            seen.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_webhook_receiver_sees_a_ticket_opened_and_decided() {
    if !need_root("a_webhook_receiver_sees_a_ticket_opened_and_decided") {
        return;
    }
    let (address, seen) = receiver(1);
    let config_dir = tempfile_dir();
    let key = config_dir.join("webhook.key");
    std::fs::write(&key, "hook-secret\n").unwrap();
    let config = config_dir.join("notifications.yaml");
    std::fs::write(
        &config,
        format!(
            "webhooks:\n  - url: {address}/json\n    secret_file: {}\n    backoff: 100ms\n  - url: {address}/slack\n    format: slack\n",
            key.display()
        ),
    )
    .unwrap();
    let binaries = Binaries {
        secops: SECOPS.into(),
        probe: NETPROBE.into(),
    };
    let daemon = Daemon::start_with(
        &binaries,
        POLICY,
        &["--notifications", config.to_str().unwrap()],
    );
    let body = json!({"action": "deploy:release", "object": {"host": "prod"}}).to_string();
    let answer = daemon.api_probe(
        std::path::Path::new(APIPROBE),
        "web",
        "request",
        &daemon.socket(),
        &["POST", "/v1/check", &body],
    );
    let answer: Value = serde_json::from_str(answer.split_once(' ').unwrap().1).unwrap();
    let ticket = answer["ticket"]
        .as_u64()
        .expect("the escalation opened a ticket");

    // Opened: the JSON webhook's first attempt failed and was retried; Slack's got it too.
    wait_for(&seen, "ticket.opened on both webhooks", |r| {
        r.iter().filter(|r| r.path == "/json").count() >= 2 && r.iter().any(|r| r.path == "/slack")
    });
    let opened: Vec<Received> = seen.lock().unwrap().clone();
    let json_hooks: Vec<&Received> = opened.iter().filter(|r| r.path == "/json").collect();
    assert_eq!(
        json_hooks[0].body, json_hooks[1].body,
        "a retry sends the same notification"
    );
    let hook = json_hooks[1];
    assert_eq!(hook.header("X-Secops-Event"), Some("ticket.opened"));
    let timestamp: i64 = hook.header("X-Secops-Timestamp").unwrap().parse().unwrap();
    assert_eq!(
        hook.header("X-Secops-Signature").unwrap(),
        secops_daemon::notify::signature(b"hook-secret", timestamp, &hook.body),
        "signed with the key's bytes over TIMESTAMP.BODY"
    );
    let payload: Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(payload["event"], "ticket.opened");
    assert_eq!(payload["ticket"]["id"], ticket);
    assert_eq!(payload["ticket"]["agent"], "web");
    assert_eq!(payload["ticket"]["action"], "deploy:release");
    assert_eq!(payload["ticket"]["status"], "open");
    let command = payload["ticket"]["command"].as_str().unwrap_or("");
    assert!(
        command.contains("secops-apiprobe request"),
        "the agent's command line: {command:?}"
    );
    let slack = opened.iter().find(|r| r.path == "/slack").unwrap();
    assert_eq!(
        slack.header("X-Secops-Signature"),
        None,
        "no key, no signature"
    );
    let text: Value = serde_json::from_str(&slack.body).unwrap();
    let text = text["text"].as_str().unwrap();
    assert!(
        text.contains("*web* asks for `deploy:release` `prod`")
            && text.contains(&format!("secops approvals approve {ticket}")),
        "{text}"
    );

    let _: Value = daemon
        .admin_client()
        .post(
            &format!("/v1/approvals/{ticket}/deny"),
            &json!({"reason": "not today"}),
        )
        .unwrap();
    wait_for(&seen, "ticket.decided on both webhooks", |r| {
        r.iter()
            .filter(|r| r.header("X-Secops-Event") == Some("ticket.decided"))
            .count()
            >= 2
    });
    let all = seen.lock().unwrap().clone();
    let decided = all
        .iter()
        .find(|r| r.path == "/json" && r.header("X-Secops-Event") == Some("ticket.decided"))
        .unwrap();
    let payload: Value = serde_json::from_str(&decided.body).unwrap();
    assert_eq!(payload["ticket"]["status"], "denied");
    assert_eq!(payload["ticket"]["decision_reason"], "not today");
    let slack = all
        .iter()
        .find(|r| r.path == "/slack" && r.header("X-Secops-Event") == Some("ticket.decided"))
        .unwrap();
    assert!(
        slack.body.contains(&format!("ticket #{ticket}")) && slack.body.contains("denied by"),
        "{}",
        slack.body
    );

    // The receiver has the last request a moment before the daemon has its answer.
    let wants = [
        "secops_notifications_total{result=\"delivered\"} 4",
        "secops_notifications_total{result=\"retried\"} 1",
        "secops_notifications_total{result=\"failed\"} 0",
    ];
    let started = Instant::now();
    loop {
        let (_, metrics) = daemon.admin_client().get_text("/metrics").unwrap();
        if wants.iter().all(|w| metrics.contains(w)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "metrics lack {wants:?}:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&config_dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(secops_host_tests::kernel::unique_name());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
