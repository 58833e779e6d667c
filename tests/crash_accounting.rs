//! Exact loss accounting across crashes (issue 20, item 4), on this kernel, nothing mocked:
//! an agent floods a denied loopback port with connects while its real daemon is killed
//! with SIGKILL five times and started again each time. Afterwards every connect the kernel
//! refused is in the audit log exactly once: as its own deny record, inside a typed record of
//! denials lost in a crash, or inside a record of events the full ring buffer dropped; and
//! the kernel's decision counters agree with the log's account of them.

use std::net::TcpListener;
use std::process::Output;
use std::time::{Duration, Instant};

use secops_host_tests::daemon::{Binaries, Daemon};
use secops_host_tests::kernel::need_root;
use serde_json::Value;

const SECOPS: &str = env!("CARGO_BIN_EXE_secops-under-test");
const PROBE: &str = env!("CARGO_BIN_EXE_secops-netprobe");

const LOST_IN_CRASH: &str = "kernel.decisions-lost-in-crash";
const RING_FULL: &str = "kernel.events-lost";

fn policy() -> String {
    "version: 1\nagents:\n  - name: web\n    workspace: /tmp\n    user: root\n    autonomy: semi\n\
     egress:\n  web:\n    allow:\n      - cidr: 127.0.0.1/32\n        ports: [9]\n    dns_resolvers: [127.0.0.53]\n"
        .to_owned()
}

/// Every `net:connect` record of agent `web`, oldest first.
fn connect_records(daemon: &Daemon) -> Vec<Value> {
    let out = daemon
        .secops()
        .args(["audit", "query", "--json", "--action", "net:connect"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit query: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["agent"] == "web" || r["rule_id"] == RING_FULL)
        .collect()
}

/// The count a loss record stands for: the first word of its reason.
fn count_of(record: &Value) -> u64 {
    record["reason"]
        .as_str()
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a loss record without its count: {record}"))
}

/// (own deny records, lost in crashes, dropped by the full ring buffer) for `endpoint`.
fn tally(records: &[Value], endpoint: &str) -> (u64, u64, u64) {
    let mut own = 0;
    let mut crashed = 0;
    let mut ring_full = 0;
    for r in records {
        match r["rule_id"].as_str() {
            Some(LOST_IN_CRASH) => crashed += count_of(r),
            Some(RING_FULL) => ring_full += count_of(r),
            _ if r["verdict"] == "deny" && r["object"]["value"] == endpoint => own += 1,
            _ => {}
        }
    }
    (own, crashed, ring_full)
}

fn flood_result(out: &Output) -> (u64, u64) {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("flood "))
        .unwrap_or_else(|| panic!("the flood printed no result: {text}"));
    let words: Vec<&str> = line.split(' ').collect();
    (words[3].parse().unwrap(), words[5].parse().unwrap())
}

#[test]
fn every_denial_is_a_record_or_counted_lost_across_five_kill_9_restarts() {
    if !need_root("every_denial_is_a_record_or_counted_lost_across_five_kill_9_restarts") {
        return;
    }
    let denied = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("127.0.0.1:{}", denied.local_addr().unwrap().port());
    let mut daemon = Daemon::start(
        &Binaries {
            secops: SECOPS.into(),
            probe: PROBE.into(),
        },
        &policy(),
    );
    let stop = daemon.dir.join("stop-flood");
    let agent = daemon.agent_spawn("web", &["flood", &endpoint, stop.to_str().unwrap()]);

    // Killed at different points of its work: while committing, while reading, at rest.
    for pause_ms in [700, 1_300, 400, 1_000, 1_600] {
        std::thread::sleep(Duration::from_millis(pause_ms));
        daemon.kill_and_wait();
        std::thread::sleep(Duration::from_millis(200));
        daemon.spawn();
    }
    std::thread::sleep(Duration::from_millis(800));
    std::fs::write(&stop, b"").unwrap();
    let out = agent.wait_with_output().unwrap();
    let (refused, other) = flood_result(&out);
    assert_eq!(
        other, 0,
        "every connect of the flood was refused by the kernel"
    );
    assert!(refused > 1_000, "the flood made {refused} connects");

    // Wait until the last daemon has audited what is left in the ring buffer.
    let started = Instant::now();
    let (own, crashed, ring_full) = loop {
        let now = tally(&connect_records(&daemon), &endpoint);
        if now.0 + now.1 + now.2 >= refused || started.elapsed() > Duration::from_secs(120) {
            break now;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    eprintln!(
        "{refused} connects refused: {own} deny records, {crashed} lost in crashes, \
         {ring_full} dropped by the full ring buffer"
    );
    assert_eq!(
        own + crashed + ring_full,
        refused,
        "every refused connect is accounted for exactly once\n{}",
        daemon.log()
    );
    assert!(
        daemon
            .log()
            .matches("kernel denials are counted in a new decision epoch")
            .count()
            >= 6,
        "each start began an epoch"
    );

    // The kernel's counters and the log's account of them: after one more (clean) restart
    // the earlier epochs are settled, and what the counters held is all committed or lost.
    let status = daemon.status().unwrap();
    let denials = &status["events"]["denials"];
    let committed = denials["committed"].as_u64().unwrap();
    let lost = denials["lost_in_crash"].as_u64().unwrap();
    assert_eq!(lost, crashed, "status counts the lost records: {denials}");
    assert_eq!(
        committed, own,
        "every deny record of the flood is a counted one: {denials}"
    );
    assert_eq!(denials["pending"], 0, "{denials}");
    let text = daemon.status_text();
    assert!(
        text.contains(&format!(
            "kernel denials: {} counted, {committed} committed, {lost} lost in crashes, 0 pending",
            denials["counted"]
        )),
        "{text}"
    );
}
