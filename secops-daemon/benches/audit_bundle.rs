//! Evidence bundle size and speed: 100,000 records of 8 agents (1,024-record batches, the
//! default checkpoint policy's 8,192-record checkpoints), the policy recorded at the start;
//! a bundle of the whole window, and one for one agent (the other 7 agents' records
//! redacted), each built and then verified. One run; prints one table.
//!
//! `cargo bench -p secops-daemon --bench audit_bundle`

use std::time::{Duration, Instant};

use secops_common::{RiskLevel, Verdict};
use secops_daemon::audit::bundle::{build_bundle, verify_bundle, BundleOptions};
use secops_daemon::audit::{
    policy_copy, AuditObject, AuditPaths, AuditStore, CheckpointPolicy, NewRecord, ObjectKind,
    Source,
};

const RECORDS: u64 = 100_000;
const T0: i64 = 1_800_000_000_000_000_000;

/// A realistic kernel decision: about 200 bytes of field data (as in `audit_paths`).
fn record(i: u64) -> NewRecord {
    NewRecord {
        ts_ns: T0 + i as i64 * 1_000_000,
        agent: Some(format!("agent-{}", i % 8)),
        cgroup_id: Some(0x0000_7f3a_0000_1000 + i % 16),
        pid: Some(20_000 + (i % 4096) as u32),
        tgid: Some(20_000),
        uid: Some(1000),
        comm: Some("python3".into()),
        exe: Some("/usr/lib/python3.11/venv/bin/python3".into()),
        action: "fs:delete".into(),
        object: Some(AuditObject {
            kind: ObjectKind::Path,
            value: format!("/home/dev/project/build/output/artifact_{i}.o"),
        }),
        verdict: Verdict::Deny,
        risk: RiskLevel::High,
        rule_id: Some("no-delete-outside-workspace".into()),
        reason: "fs:delete outside the agent's workspace".into(),
        source: Source::Kernel,
    }
}

fn main() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let state = dir.path().join("state");
    let paths = AuditPaths::new(&state);
    let policy_file = dir.path().join("policy.yaml");
    std::fs::write(
        &policy_file,
        "agents:\n  - name: agent-0\n    workspace: /home/dev/project\nrules:\n  - id: no-delete-outside-workspace\n    actions: [fs:delete]\n    risk: high\n",
    )
    .expect("policy");
    let policy = secops_daemon::policy::load_policy(&policy_file).expect("policy loads");
    policy_copy::keep(&state, &policy).expect("policy copy");
    let mut store = AuditStore::open(&paths, CheckpointPolicy::default()).expect("store");
    let mut start = policy_copy::in_force_at_start(&policy);
    start.ts_ns = T0;
    store.append(&start).expect("start record");
    let records: Vec<NewRecord> = (1..=RECORDS).map(record).collect();
    for batch in records.chunks(1024) {
        store.append_batch(batch).expect("append");
    }
    store.checkpoint_now().expect("checkpoint");
    drop(store);
    let log_bytes: u64 = std::fs::read_dir(&paths.audit_dir)
        .expect("audit dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    println!("log: {RECORDS} records, {log_bytes} bytes of segments");
    println!("| bundle | bytes | bytes/100k records | build | verify | full / redacted |");
    println!("|---|---|---|---|---|---|");
    for agent in [None, Some("agent-3")] {
        let out = dir
            .path()
            .join(format!("{}.bundle", agent.unwrap_or("all")));
        let options = BundleOptions {
            since_ns: Some(T0),
            until_ns: None,
            agent: agent.map(str::to_owned),
            host: Some("bench".into()),
            ..BundleOptions::default()
        };
        let t = Instant::now();
        let summary = build_bundle(&paths, &options, &out).expect("bundle");
        let build = t.elapsed();
        let t = Instant::now();
        let report = verify_bundle(&out, None).expect("verify");
        let verify = t.elapsed();
        assert!(report.is_ok(), "{report}");
        let per_100k = summary.bytes as f64 * 100_000.0 / RECORDS as f64;
        println!(
            "| {} | {} | {:.1} MB | {} | {} | {} / {} |",
            agent.map_or("all agents".to_owned(), |a| format!("--agent {a}")),
            summary.bytes,
            per_100k / 1e6,
            ms(build),
            ms(verify),
            summary.manifest.records_full,
            summary.manifest.records_redacted
        );
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}
