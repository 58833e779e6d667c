//! Decision latency on a 1,000-rule policy.
//!
//! Criterion measures each request shape; a second pass times 200,000 single decisions
//! over a mix of shapes and prints the median and p99, which criterion does not report.
//! Target (issue 2): median below 2 µs, p99 below 10 µs, one core.

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use secops_daemon::engine::{ActionRequest, Engine, NormalizedPath};
use secops_daemon::policy::parse_policy_str;

const RULES: usize = 1000;

/// A policy shaped like a large real one: agents with workspaces, file rules of every glob
/// shape (prefix trees, extensions, `**/name`, `~`, `${workspace}`), exec rules, network
/// rules and in-process rules, with and without `unless`.
fn thousand_rule_policy() -> String {
    let mut p = String::from("version: 1\nagents:\n");
    for a in 0..8 {
        writeln!(
            p,
            "  - name: agent{a}\n    workspace: /srv/agents/agent{a}\n    autonomy: semi"
        )
        .unwrap();
    }
    p.push_str("rules:\n");
    let verdicts = ["allow", "deny", "escalate", ""];
    for i in 0..RULES {
        let verdict = match verdicts[i % 4] {
            "" => String::new(),
            v => format!(", verdict: {v}"),
        };
        let body = match i % 10 {
            0 => format!("actions: [\"fs:*\"], paths: [\"/data/project{i}/**\"]"),
            1 => format!("actions: [fs:write, fs:delete], paths: [\"**/*.ext{i}\"]"),
            2 => format!("actions: [fs:read], paths: [\"~/.config/tool{i}/**\"]"),
            3 => format!("actions: [fs:delete], paths: [\"${{workspace}}/build{i}/**\"], unless: {{paths: [\"**/keep{i}\"]}}"),
            4 => format!("actions: [fs:read, secret:read], paths: [\"/etc/app{i}/*.key\", \"/opt/app{i}/**/secret\"]"),
            5 => format!("actions: [proc:exec], binaries: [\"/opt/bin{i}/*\", \"**/tool{i}\"]"),
            6 => format!("actions: [net:connect], cidrs: [\"10.{}.{}.0/24\"], ports: [{}]", i / 256 % 256, i % 256, 1000 + i),
            7 => format!("actions: [net:connect], hosts: [\"svc{i}.example.com\"], ports: [443]"),
            8 => format!("actions: [fs:write], paths: [\"/var/log/app{i}/**\"], agents: [agent{}]", i % 8),
            _ => format!("actions: [tool:call, vcs:push], hosts: [\"*.host{i}.example.org\"]"),
        };
        writeln!(p, "  - {{id: rule{i}, {body}, risk: medium{verdict}}}").unwrap();
    }
    p.push_str("egress:\n  agent0:\n    allow:\n      - cidr: 127.0.0.0/8\n        ports: [\"1024-65535\"]\n");
    p
}

struct Shape {
    name: &'static str,
    action: &'static str,
    path: Option<NormalizedPath>,
    binary: Option<NormalizedPath>,
    addr: Option<IpAddr>,
    port: Option<u16>,
}

fn shapes() -> Vec<Shape> {
    let path = |p: &str| Some(NormalizedPath::new(p).unwrap());
    let s = |name, action, p: Option<NormalizedPath>| Shape {
        name,
        action,
        path: p,
        binary: None,
        addr: None,
        port: None,
    };
    vec![
        s(
            "fs:write in workspace, no rule",
            "fs:write",
            path("/srv/agents/agent0/src/lib.rs"),
        ),
        s(
            "fs:delete hitting a prefix rule",
            "fs:delete",
            path("/data/project500/deep/file.txt"),
        ),
        s(
            "fs:write hitting an extension rule",
            "fs:write",
            path("/srv/agents/agent0/x/y.ext31"),
        ),
        s(
            "fs:delete with unless",
            "fs:delete",
            path("/srv/agents/agent0/build3/out/keep3"),
        ),
        s(
            "secret:read miss",
            "secret:read",
            path("/etc/app99/server.pem"),
        ),
        Shape {
            binary: path("/opt/bin405/run"),
            ..s("proc:exec hitting a binary rule", "proc:exec", None)
        },
        Shape {
            addr: Some("10.1.226.0".parse().unwrap()),
            port: Some(1482),
            ..s("net:connect hitting a cidr rule", "net:connect", None)
        },
        Shape {
            addr: Some("127.0.0.1".parse().unwrap()),
            port: Some(8080),
            ..s("net:connect via egress", "net:connect", None)
        },
    ]
}

fn request<'a>(engine: &Engine, shape: &'a Shape) -> ActionRequest<'a> {
    let (action, _) = engine.policy().registry.resolve(shape.action).unwrap();
    ActionRequest {
        agent: engine.agent_index("agent0"),
        action,
        path: shape.path.as_ref(),
        binary: shape.binary.as_ref(),
        addr: shape.addr,
        host: None,
        port: shape.port,
    }
}

fn build_engine() -> Engine {
    let started = Instant::now();
    let policy = parse_policy_str(Path::new("bench.yaml"), &thousand_rule_policy())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.rules.len(), RULES);
    let engine = Engine::new(Arc::new(policy));
    eprintln!(
        "loaded and compiled {RULES} rules for 8 agents in {:?}",
        started.elapsed()
    );
    engine
}

fn decisions(c: &mut Criterion) {
    let engine = build_engine();
    let shapes = shapes();
    let mut group = c.benchmark_group("decide_1000_rules");
    for shape in &shapes {
        let req = request(&engine, shape);
        group.bench_function(shape.name, |b| {
            b.iter(|| black_box(engine.decide(black_box(&req))))
        });
    }
    group.finish();
}

/// Times single decisions over the mix of shapes and prints the distribution.
fn latency_distribution() {
    let engine = build_engine();
    let shapes = shapes();
    let requests: Vec<ActionRequest<'_>> = shapes.iter().map(|s| request(&engine, s)).collect();
    for r in requests.iter().cycle().take(20_000) {
        black_box(engine.decide(r));
    }
    let mut samples: Vec<Duration> = Vec::with_capacity(200_000);
    for r in requests.iter().cycle().take(200_000) {
        let start = Instant::now();
        black_box(engine.decide(black_box(r)));
        samples.push(start.elapsed());
    }
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "decision latency, {RULES}-rule policy, {} decisions over {} shapes: median {:?}, p99 {:?}, p99.9 {:?}, max {:?} (targets: median < 2µs, p99 < 10µs)",
        samples.len(),
        shapes.len(),
        pct(0.50),
        pct(0.99),
        pct(0.999),
        samples[samples.len() - 1]
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = decisions
}

fn main() {
    benches();
    latency_distribution();
    Criterion::default().configure_from_args().final_summary();
}
