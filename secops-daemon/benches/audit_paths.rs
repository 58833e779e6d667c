//! The audit log's write paths side by side in one run, 1,024-record batches, each batch
//! synced (`fdatasync`) before the next counts: the raw segment store the log writes to, the
//! store with chain and signed checkpoints, and the daemon's path (writer thread, chain,
//! signatures, a file witness synced per checkpoint, the index built behind). Also the
//! previous shape (one SQLite table with four indexes) for reference, verify speed, the cost
//! of `audit query --agent X --since 1h` at two log sizes, and the largest unsealed tail at
//! 1,000 records/s.
//!
//! `cargo bench -p secops-daemon --bench audit_paths` (it replaces the criterion audit bench).
//! Prints one table; rounds alternate the
//! paths so a noisy neighbour hits them alike, and each ratio is the median of the rounds'.

use std::time::{Duration, Instant};

use secops_common::{RiskLevel, Verdict};
use secops_daemon::audit::frame::{self, SegmentHeader, SEGMENT_VERSION};
use secops_daemon::audit::segment::LiveSegment;
use secops_daemon::audit::witness::WitnessSpec;
use secops_daemon::audit::{
    chain, verify, AuditObject, AuditPaths, AuditReader, AuditStore, AuditWriter, CheckpointPolicy,
    NewRecord, ObjectKind, QueryFilter, Source, StoreOptions, WriterOptions,
};

const BATCH: usize = 1024;
const BATCHES: usize = 100;
const ROUNDS: usize = 5;

/// A realistic kernel decision: about 200 bytes of field data.
fn record(i: u64, ts_ns: i64) -> NewRecord {
    NewRecord {
        ts_ns,
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
            value: format!("/home/dev/work/project/build/artifacts/output-{i:08}.tmp"),
        }),
        verdict: Verdict::Deny,
        risk: RiskLevel::High,
        rule_id: Some("no-delete-outside-workspace".into()),
        reason: "rule no-delete-outside-workspace: path is outside ${workspace}".into(),
        source: Source::Kernel,
    }
}

fn batches(round: usize) -> Vec<Vec<NewRecord>> {
    (0..BATCHES)
        .map(|b| {
            (0..BATCH)
                .map(|i| {
                    let n = ((round * BATCHES + b) * BATCH + i) as u64;
                    record(n, 1_700_000_000_000_000_000 + n as i64 * 1000)
                })
                .collect()
        })
        .collect()
}

fn tempdir() -> tempfile::TempDir {
    // On the target dir's disk, not a tmpfs: the sync is part of what is measured.
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir")
}

fn rate(n: usize, t: Duration) -> f64 {
    n as f64 / t.as_secs_f64()
}

/// The raw store: the same record frames (canonical encoding, no hashes), one write and one
/// fdatasync per batch, by the calling thread.
fn raw_store(data: &[Vec<NewRecord>]) -> f64 {
    let dir = tempdir();
    let header = SegmentHeader {
        version: SEGMENT_VERSION,
        log_id: [1; 16],
        first_seq: 1,
        prev_hash: [0; 32],
        log_created_ns: 0,
        created_ns: 0,
        public_key: [0; 32],
        flags: 0,
    };
    let mut seg = LiveSegment::create(dir.path(), header, false).expect("segment");
    let mut buf = Vec::with_capacity(BATCH * 512);
    let mut seq = 0u64;
    let t = Instant::now();
    for b in data {
        buf.clear();
        for r in b {
            seq += 1;
            let start = frame::begin_frame(&mut buf, frame::RECORD_KIND);
            buf.extend_from_slice(&[0u8; 64]);
            chain::encode_record_into(seq, r, &mut buf);
            frame::end_frame(&mut buf, start);
        }
        seg.append(&buf).map_err(|_| "append").expect("append");
    }
    rate(BATCHES * BATCH, t.elapsed())
}

fn store(data: &[Vec<NewRecord>]) -> f64 {
    let dir = tempdir();
    let paths = AuditPaths::new(dir.path().join("s"));
    let mut store = AuditStore::open(&paths, CheckpointPolicy::default()).expect("open");
    let t = Instant::now();
    for b in data {
        store.append_batch(b).expect("append");
    }
    rate(BATCHES * BATCH, t.elapsed())
}

/// The daemon's path: producers queue 1,024 records and wait for their tickets;
/// `in_flight` batches are outstanding at once.
fn writer(data: &[Vec<NewRecord>], in_flight: usize, low_priority: bool) -> f64 {
    let dir = tempdir();
    let paths = AuditPaths::new(dir.path().join("s"));
    let witness = dir.path().join("witness.log");
    let writer = AuditWriter::open(
        &paths,
        CheckpointPolicy::default(),
        WriterOptions {
            witnesses: vec![WitnessSpec::File(witness)],
            low_priority,
            ..WriterOptions::default()
        },
    )
    .expect("open");
    let t = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for b in data {
        pending.push_back(
            b.iter()
                .cloned()
                .map(|r| writer.append(r))
                .collect::<Vec<_>>(),
        );
        if pending.len() >= in_flight {
            for t in pending.pop_front().unwrap_or_default() {
                t.wait().expect("commit");
            }
        }
    }
    for batch in pending {
        for t in batch {
            t.wait().expect("commit");
        }
    }
    let r = rate(BATCHES * BATCH, t.elapsed());
    writer.close().expect("close");
    r
}

/// The previous shape, for reference: one SQLite table, four secondary indexes, FULL sync.
fn sqlite_rows(data: &[Vec<NewRecord>]) -> f64 {
    let dir = tempdir();
    let mut c = rusqlite::Connection::open(dir.path().join("x.db")).expect("db");
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE r(seq INTEGER PRIMARY KEY, ts INTEGER, agent TEXT, action TEXT, object TEXT,
           verdict TEXT, reason TEXT, comm TEXT, exe TEXT, rule TEXT, prev BLOB, hash BLOB);
         CREATE INDEX ra ON r(agent, seq); CREATE INDEX rt ON r(ts);
         CREATE INDEX rv ON r(verdict, seq); CREATE INDEX rc ON r(action, seq);",
    )
    .expect("schema");
    let t = Instant::now();
    let mut seq = 0i64;
    for b in data {
        let tx = c.transaction().expect("tx");
        {
            let mut st = tx
                .prepare_cached("INSERT INTO r VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)")
                .expect("prepare");
            for r in b {
                seq += 1;
                st.execute(rusqlite::params![
                    seq,
                    r.ts_ns,
                    r.agent,
                    r.action,
                    r.object.as_ref().map(|o| o.value.clone()),
                    r.verdict.as_str(),
                    r.reason,
                    r.comm,
                    r.exe,
                    r.rule_id,
                    &[0u8; 32][..],
                    &[1u8; 32][..]
                ])
                .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    rate(BATCHES * BATCH, t.elapsed())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A log of `n` records over `hours` hours, eight agents; time of `audit query --agent
/// agent-3 --since 1h` (first page of 100 and the whole window).
fn query_cost(n: u64, hours: u64) -> (Duration, Duration, usize) {
    let dir = tempdir();
    let paths = AuditPaths::new(dir.path().join("s"));
    let now = secops_daemon::time::now_ns();
    let span = hours as i64 * 3600 * 1_000_000_000;
    {
        let mut store = AuditStore::open_with(&paths, StoreOptions::default()).expect("open");
        let mut b = Vec::with_capacity(BATCH);
        for i in 0..n {
            b.push(record(i, now - span + (span / n as i64) * i as i64));
            if b.len() == BATCH {
                store.append_batch(&b).expect("append");
                b.clear();
            }
        }
        store.append_batch(&b).expect("append");
    }
    drop(AuditReader::open(&paths).expect("index"));
    let filter = QueryFilter {
        agent: Some("agent-3".into()),
        since_ns: Some(now - 3600 * 1_000_000_000),
        ..QueryFilter::default()
    };
    let reader = AuditReader::open(&paths).expect("reader");
    let t = Instant::now();
    let first = reader
        .query(&QueryFilter {
            limit: Some(100),
            ..filter.clone()
        })
        .expect("query");
    let first_page = t.elapsed();
    assert_eq!(first.len(), 100);
    let t = Instant::now();
    let all = reader.query(&filter).expect("query");
    (first_page, t.elapsed(), all.len())
}

fn unsealed_tail_at_1000_per_s() -> (u64, u64, u64) {
    let dir = tempdir();
    let paths = AuditPaths::new(dir.path().join("s"));
    let writer = AuditWriter::open(
        &paths,
        CheckpointPolicy::default(),
        WriterOptions::default(),
    )
    .expect("open");
    let start = Instant::now();
    let mut max_unsealed = 0;
    let mut refused = 0;
    let mut i = 0u64;
    while start.elapsed() < Duration::from_secs(6) {
        let due = start + Duration::from_millis(i);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if !writer.enqueue(record(i, secops_daemon::time::now_ns())) {
            refused += 1;
        }
        i += 1;
        if i.is_multiple_of(10) {
            let h = writer.health();
            max_unsealed = max_unsealed.max(h.committed_seq.saturating_sub(h.checkpoint_seq));
        }
    }
    let checkpoints = writer.health().checkpoint_number;
    writer.close().expect("close");
    (max_unsealed, checkpoints, refused)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("raw segment store (frames, write + fdatasync)", vec![]),
        ("AuditStore (chain + signed checkpoints)", vec![]),
        ("daemon path: AuditWriter, 1 batch in flight", vec![]),
        ("daemon path: AuditWriter, 2 batches in flight", vec![]),
        ("  the same, writer at normal priority", vec![]),
        ("previous shape: SQLite, 4 indexes, FULL", vec![]),
    ];
    let mut ratio_1 = Vec::new();
    let mut ratio_2 = Vec::new();
    for round in 0..ROUNDS {
        let data = batches(round);
        let raw = raw_store(&data);
        let s = store(&data);
        let w1 = writer(&data, 1, true);
        let w2 = writer(&data, 2, true);
        let w2n = writer(&data, 2, false);
        let q = sqlite_rows(&data);
        ratio_1.push(w1 / raw);
        ratio_2.push(w2 / raw);
        for (row, v) in rows.iter_mut().zip([raw, s, w1, w2, w2n, q]) {
            row.1.push(v);
        }
    }
    println!("audit write paths, {ROUNDS} rounds x {BATCHES} batches x {BATCH} records (median; min..max)");
    for (name, v) in &rows {
        let lo = v.iter().copied().fold(f64::MAX, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        println!(
            "  {name:<48} {:>9.0}/s ({lo:.0}..{hi:.0})",
            median(v.clone())
        );
    }
    println!(
        "  daemon path / raw store: {:.2}x (1 in flight), {:.2}x (2 in flight); per round: {:?} / {:?}",
        median(ratio_1.clone()),
        median(ratio_2.clone()),
        ratio_1.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>(),
        ratio_2.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>()
    );

    // Verify speed.
    let dir = tempdir();
    let paths = AuditPaths::new(dir.path().join("s"));
    {
        let mut store = AuditStore::open(&paths, CheckpointPolicy::default()).expect("open");
        for b in batches(0) {
            store.append_batch(&b).expect("append");
        }
    }
    let t = Instant::now();
    let report = verify(&paths).expect("verify");
    assert!(report.is_ok(), "{report}");
    println!(
        "verify: {:.0} records/s ({} records)",
        rate(report.records as usize, t.elapsed()),
        report.records
    );

    for (n, hours) in [(100_000u64, 1u64), (1_000_000, 10)] {
        let (first, all, count) = query_cost(n, hours);
        println!(
            "audit query --agent agent-3 --since 1h on {n} records over {hours}h: first 100 in {:.1} ms, all {count} in {:.1} ms",
            first.as_secs_f64() * 1e3,
            all.as_secs_f64() * 1e3
        );
    }

    let (tail, checkpoints, refused) = unsealed_tail_at_1000_per_s();
    println!(
        "at 1,000 records/s for 6 s: largest unsealed tail {tail} records, {checkpoints} checkpoints, {refused} refused past the loss bound"
    );
}
