//! `/v1/check` round trip over the daemon's Unix socket (issue 6), from one run: an agent
//! started with `secops run` sends checks at a fixed 1,000 requests/s on one kept-alive
//! connection to a real daemon, and the probe reports latency percentiles. Target: p99 below
//! 200 µs. Also the same load with `durable: true` (answered after the audit commit), for
//! comparison, and a few concurrent senders at the same total rate.
//!
//! Needs root; prints `skipped: ...` otherwise.

use std::path::Path;

use secops_host_tests::daemon::{Binaries, Daemon};
use secops_host_tests::kernel::need_root;

const RATE: &str = "1000";
const COUNT: &str = "20000";

const POLICY: &str = "version: 1
agents:
  - name: bench
    workspace: /tmp/secops-bench
    autonomy: semi
rules:
  - id: pushes-are-fine
    actions: [vcs:push]
    verdict: allow
    risk: low
";

fn run(daemon: &Daemon, label: &str, body: &str, get_path: &str) {
    let socket = daemon.socket();
    let out = daemon
        .agent_program(
            "bench",
            Path::new(env!("CARGO_BIN_EXE_secops-apiprobe")),
            &[
                "rate",
                socket.to_str().unwrap(),
                RATE,
                COUNT,
                body,
                get_path,
            ],
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "{label:<44} {RATE} req/s x {COUNT}: {} (µs)",
        String::from_utf8_lossy(&out.stdout).trim()
    );
}

fn main() {
    if !need_root("api bench") {
        return;
    }
    let daemon = Daemon::start(
        &Binaries {
            secops: env!("CARGO_BIN_EXE_secops-under-test").into(),
            probe: env!("CARGO_BIN_EXE_secops-netprobe").into(),
        },
        POLICY,
    );
    let check = r#"{"action":"vcs:push","object":{"host":"github.com","port":443},"tool":"git","arguments":"git push origin main"}"#;
    let durable =
        r#"{"action":"vcs:push","object":{"host":"github.com","port":443},"durable":true}"#;
    run(
        &daemon,
        "/v1/whoami (HTTP on the socket, no decision)",
        "",
        "/v1/whoami",
    );
    run(
        &daemon,
        "/v1/check (answered once queued for audit)",
        check,
        "",
    );
    print_handler_latency(&daemon);
    run(
        &daemon,
        "/v1/check durable (after the audit commit)",
        durable,
        "",
    );
}

/// The daemon's own view of the checks so far: `secops_decision_latency_seconds{source="api"}`,
/// the time inside the /v1/check handler (engine, tickets, audit queue), read from /metrics as
/// bucket upper bounds. The rest of a round trip is the socket and the scheduler.
fn print_handler_latency(daemon: &Daemon) {
    let text = match daemon.admin_client().get_text("/metrics") {
        Ok((_, text)) => text,
        Err(e) => {
            println!("handler time: /metrics: {e}");
            return;
        }
    };
    let buckets: Vec<(f64, u64)> = text
        .lines()
        .filter(|l| {
            l.starts_with("secops_decision_latency_seconds_bucket{") && l.contains("source=\"api\"")
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let count = l.rsplit(' ').next()?.parse().ok()?;
            Some((le.parse().unwrap_or(f64::INFINITY), count))
        })
        .collect();
    let total = buckets.last().map_or(0, |b| b.1);
    let at = |q: f64| {
        buckets
            .iter()
            .find(|(_, c)| *c as f64 >= q * total as f64)
            .map_or(f64::NAN, |(le, _)| le * 1e6)
    };
    println!(
        "{:<44} {total} checks: p50 <= {:.0}, p99 <= {:.0}, p99.9 <= {:.0} (µs, histogram buckets)",
        "  of which inside the /v1/check handler",
        at(0.5),
        at(0.99),
        at(0.999)
    );
}
