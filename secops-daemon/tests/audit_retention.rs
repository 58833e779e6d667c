//! Retention: a million records in many segments, the closed ones moved into an archive; the
//! archive verifies with the live log as one chain, the live log alone says what it archived,
//! and an archived segment that goes missing is named.

use std::time::{Duration, Instant};

use secops_common::{RiskLevel, Verdict};
use secops_daemon::audit::retention::{archive, RetentionPolicy};
use secops_daemon::audit::segment;
use secops_daemon::audit::{
    verify, verify_with, AuditPaths, AuditReader, AuditStore, CheckpointPolicy, NewRecord, Problem,
    QueryFilter, Source, StoreOptions, VerifyOptions,
};

const RECORDS: u64 = 1_000_000;

fn rec(i: u64) -> NewRecord {
    NewRecord {
        agent: Some(format!("agent-{}", i % 4)),
        ..NewRecord::new(
            1_700_000_000_000_000_000 + i as i64 * 1_000,
            "proc:exit",
            Verdict::Allow,
            RiskLevel::Low,
            format!("exit {i}"),
            Source::Kernel,
        )
    }
}

#[test]
fn a_million_records_rotated_into_an_archive_verify_across_it() {
    let dir = tempfile::tempdir().unwrap();
    let paths = AuditPaths::new(dir.path().join("state"));
    let archive_dir = dir.path().join("archive");
    let t = Instant::now();
    let mut store = AuditStore::open_with(
        &paths,
        StoreOptions {
            checkpoints: CheckpointPolicy {
                every_records: 8192,
                every: Duration::from_secs(3600),
            },
            segment_bytes: 8 << 20,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let mut batch = Vec::with_capacity(4096);
    for i in 1..=RECORDS {
        batch.push(rec(i));
        if batch.len() == 4096 {
            store.append_batch(&batch).unwrap();
            batch.clear();
        }
    }
    store.append_batch(&batch).unwrap();
    store.close_segment().unwrap();
    println!("wrote {RECORDS} records in {:?}", t.elapsed());
    let live_before = segment::list_segments(&paths.audit_dir).unwrap().len();
    assert!(live_before > 10, "{live_before} segments");

    // Keep 20 MiB live: the oldest segments move out, in order.
    let t = Instant::now();
    let moved = archive(
        &mut store,
        &RetentionPolicy {
            archive_dir: archive_dir.clone(),
            keep_age: None,
            keep_bytes: Some(20 << 20),
        },
        0,
    )
    .unwrap();
    println!("archived {} segments in {:?}", moved.len(), t.elapsed());
    assert!(
        moved.len() >= live_before - 4,
        "{} of {live_before}",
        moved.len()
    );
    assert_eq!(moved[0].first_seq, 1);
    assert!(moved
        .windows(2)
        .all(|w| w[0].last_seq + 1 == w[1].first_seq));
    drop(store);

    // Across the archive: one chain, every record.
    let t = Instant::now();
    let across = verify_with(
        &paths,
        &VerifyOptions {
            archives: vec![archive_dir.clone()],
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    println!("{across}\nverified across the archive in {:?}", t.elapsed());
    assert!(across.is_ok(), "{across}");
    assert_eq!(across.first_seq, 1);
    assert!(across.records > RECORDS, "{across}");

    // The live log alone: the archived range is one the log says it archived.
    let live = verify(&paths).unwrap();
    assert!(live.is_ok(), "{live}");
    assert!(live.first_seq > 1);
    assert!(
        live.to_string()
            .contains("archived segments not given here"),
        "{live}"
    );
    let notes = AuditReader::open(&paths)
        .unwrap()
        .query(&QueryFilter {
            action: Some("sys:audit".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(notes.len(), moved.len());

    // An archived segment gone missing is a gap, named.
    let gone = &moved[1];
    std::fs::remove_file(&gone.path).unwrap();
    let report = verify_with(
        &paths,
        &VerifyOptions {
            archives: vec![archive_dir],
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        report.problem(),
        Some(&Problem::Deleted {
            from: gone.first_seq,
            to: gone.last_seq
        }),
        "{report}"
    );
}

#[test]
fn a_live_segment_removed_without_archiving_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let paths = AuditPaths::new(dir.path().join("state"));
    let mut store = AuditStore::open_with(
        &paths,
        StoreOptions {
            segment_bytes: 64 << 10,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    for chunk in (1..=3000).map(rec).collect::<Vec<_>>().chunks(500) {
        store.append_batch(chunk).unwrap();
    }
    drop(store);
    let segs = segment::list_segments(&paths.audit_dir).unwrap();
    assert!(segs.len() > 2);
    std::fs::remove_file(&segs[0].path).unwrap();
    let report = verify(&paths).unwrap();
    assert!(
        matches!(report.problem(), Some(Problem::NotArchived { from: 1, .. })),
        "{report}"
    );
}
