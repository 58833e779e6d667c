//! Audit append throughput with the hash chain, on disk, synchronous=FULL: directly through
//! `AuditStore::append_batch` (1024 records per transaction) and through the batching
//! `AuditWriter` the daemon uses. Also verify throughput. Criterion reports records/s.
//!
//! The target from the issue is at least 50,000 records/s sustained.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use secops_common::{RiskLevel, Verdict};
use secops_daemon::audit::{
    verify, AuditObject, AuditPaths, AuditStore, AuditWriter, CheckpointPolicy, NewRecord,
    ObjectKind, Source, WriterOptions,
};

const BATCH: usize = 1024;

/// A realistic kernel decision: about 200 bytes of field data.
fn record(i: u64) -> NewRecord {
    NewRecord {
        ts_ns: 1_700_000_000_000_000_000 + i as i64 * 1_000,
        agent: Some("claude-builder".into()),
        cgroup_id: Some(0x0000_7f3a_0000_1000 + i % 16),
        pid: Some(20_000 + (i % 4096) as u32),
        tgid: Some(20_000),
        uid: Some(1000),
        comm: Some("python3".into()),
        exe: Some("/usr/lib/python3.11/venv/bin/python3".into()),
        action: "fs:delete".into(),
        object: Some(AuditObject {
            kind: ObjectKind::Path,
            value: format!("/home/dev/work/project/build/artifacts/output-{i:08}.tmp"),
        }),
        verdict: Verdict::Deny,
        risk: RiskLevel::High,
        rule_id: Some("no-delete-outside-workspace".into()),
        reason: "rule no-delete-outside-workspace: path is outside ${workspace}".into(),
        source: Source::Kernel,
    }
}

fn state_dir() -> tempfile::TempDir {
    // On the target dir's disk, not a tmpfs: fsync cost is part of what is measured.
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir")
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("audit_append");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(10));

    // Fresh records for every iteration, with increasing timestamps as real decisions have:
    // re-appending one fixed batch would pile identical timestamps into the middle of the
    // ts_ns index and measure a workload that never happens.
    let mut next = 0u64;
    let mut fresh = move || {
        let batch: Vec<NewRecord> = (next..next + BATCH as u64).map(record).collect();
        next += BATCH as u64;
        batch
    };

    {
        let dir = state_dir();
        let paths = AuditPaths::new(dir.path());
        let mut store = AuditStore::open(&paths, CheckpointPolicy::default()).expect("open");
        group.bench_function("store_batch_1024_sync_full", |b| {
            b.iter_batched(
                &mut fresh,
                |batch| store.append_batch(&batch).expect("append"),
                BatchSize::SmallInput,
            )
        });
    }

    {
        let dir = state_dir();
        let paths = AuditPaths::new(dir.path());
        let writer = AuditWriter::open(
            &paths,
            CheckpointPolicy::default(),
            WriterOptions::default(),
        )
        .expect("open");
        group.bench_function("writer_1024_in_flight", |b| {
            b.iter_batched(
                &mut fresh,
                |batch| {
                    let tickets: Vec<_> = batch.into_iter().map(|r| writer.append(r)).collect();
                    for t in tickets {
                        t.wait().expect("commit");
                    }
                },
                BatchSize::SmallInput,
            )
        });
        writer.close().expect("close");
    }
    group.finish();
}

fn verify_log(c: &mut Criterion) {
    const RECORDS: u64 = 100_000;
    let dir = state_dir();
    let paths = AuditPaths::new(dir.path());
    {
        let mut store = AuditStore::open(&paths, CheckpointPolicy::default()).expect("open");
        let all: Vec<NewRecord> = (0..RECORDS).map(record).collect();
        for chunk in all.chunks(BATCH) {
            store.append_batch(chunk).expect("append");
        }
    }
    let mut group = c.benchmark_group("audit_verify");
    group.throughput(Throughput::Elements(RECORDS));
    // One verify takes a few hundred ms: flat sampling keeps this group to seconds.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.bench_function("verify_100k", |b| {
        b.iter(|| assert!(verify(&paths).expect("verify").is_ok()))
    });
    group.finish();
}

criterion_group!(benches, append, verify_log);
criterion_main!(benches);
