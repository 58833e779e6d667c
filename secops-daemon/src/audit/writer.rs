//! Batching for the daemon: one thread owns the [`AuditStore`], takes whatever records are
//! waiting as one batch (one write, one `fdatasync`), and acknowledges each record only after
//! the sync returned. Two more threads work behind it: one sends checkpoints to the head file
//! and the witnesses, one keeps the index up to date; neither is on the commit path.
//!
//! Producers get a [`CommitTicket`] per record; tickets of one batch share one slot, so a
//! record costs no channel. A ticket that resolves to a seq means the record is durable; a
//! process killed at any point loses only records whose tickets had not resolved.
//!
//! What a crash can lose of records nobody waited for ([`AuditWriter::enqueue`], the API's
//! non-durable checks) is bounded: such a record is refused (and the check answered 503)
//! whenever the records not yet committed already number [`WriterOptions::unacked_records`],
//! weigh [`WriterOptions::unacked_bytes`], or the oldest of them is older than
//! [`WriterOptions::unacked_age`], and whenever the log is failing.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::chain;
use super::error::AuditError;
use super::index::Index;
use super::paths::AuditPaths;
use super::record::NewRecord;
use super::store::{audit_note, AuditStore, Checkpoint, CheckpointPolicy, StoreOptions};
use super::witness::{WitnessSet, WitnessSpec, WitnessStatus, WitnessedCheckpoint};

/// Tuning for [`AuditWriter`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// Most records per batch.
    pub max_batch: usize,
    /// How long a batch nobody waits on may wait for more records before it is written
    /// (fewer syncs at low rates). A batch someone waits on is written at once.
    pub linger: Duration,
    /// Records queued before `append` blocks (back-pressure instead of unbounded memory).
    pub queue: usize,
    /// The bound on what a crash can lose of records nobody waits for: see the module docs.
    pub unacked_records: usize,
    pub unacked_bytes: usize,
    pub unacked_age: Duration,
    /// Where to send each checkpoint besides the head file.
    pub witnesses: Vec<WitnessSpec>,
    /// Keep the index up to date behind the writer.
    pub index: bool,
    /// Allowed records of these action types are counted, not itemized: one record per
    /// (agent, action, rule) per window says how many there were.
    pub aggregate: Vec<Aggregate>,
    /// Run the writer at nice 10 / SCHED_BATCH so answering decisions takes the CPU first
    /// (the API latency work); false runs it at normal priority.
    pub low_priority: bool,
}

/// An action type whose allowed records are aggregated, and over how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregate {
    pub action: String,
    pub window: Duration,
}

impl Aggregate {
    /// What is aggregated unless configured otherwise: process exits (an exit's record says
    /// nothing a count does not, and every short-lived process makes one).
    pub fn defaults() -> Vec<Aggregate> {
        vec![Aggregate {
            action: "proc:exit".into(),
            window: Duration::from_secs(5),
        }]
    }
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            max_batch: 1024,
            linger: Duration::from_millis(10),
            queue: 16 * 1024,
            unacked_records: 4096,
            unacked_bytes: 4 << 20,
            unacked_age: Duration::from_millis(50),
            witnesses: Vec::new(),
            index: true,
            aggregate: Aggregate::defaults(),
            low_priority: true,
        }
    }
}

/// How the audit log is doing, for `/v1/status`, `/metrics` and `/v1/check`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuditHealth {
    /// `None` while records are being written; the reason while they cannot be.
    pub failing: Option<String>,
    /// When the current failure started (ns since the epoch).
    pub failing_since_ns: Option<i64>,
    pub committed_seq: u64,
    pub checkpoint_seq: u64,
    pub checkpoint_number: u64,
    /// Records acknowledged as committed since the writer started.
    pub records_committed: u64,
    /// Records that could not be written (their producers were told).
    pub records_failed: u64,
    /// Records refused before they were queued (failing log, or the loss bound reached).
    pub records_refused: u64,
    pub queued_records: usize,
    pub queued_bytes: usize,
    pub witnesses: Vec<WitnessStatus>,
    pub index_error: Option<String>,
    /// Whether the open segment is append-only (and closed ones immutable) by inode flags.
    pub inode_protected: bool,
}

/// The result of one batch, shared by every ticket in it.
struct Slot {
    /// The first seq of the batch, or why it failed.
    done: Mutex<Option<Result<u64, String>>>,
    cv: Condvar,
    /// A producer waits on this batch: write it without lingering.
    urgent: AtomicBool,
}

impl Slot {
    fn new() -> Arc<Slot> {
        Arc::new(Slot {
            done: Mutex::new(None),
            cv: Condvar::new(),
            urgent: AtomicBool::new(false),
        })
    }
}

/// The promise of a seq for one appended record.
#[must_use = "a record is only known to be committed once its ticket resolves"]
pub struct CommitTicket {
    slot: Option<(Arc<Slot>, usize)>,
    refused: Option<String>,
    shared: Option<Arc<Shared>>,
    db: Arc<PathBuf>,
}

impl CommitTicket {
    /// Whether the record reached the writer's queue (false: the writer is gone or the
    /// record was refused, and [`CommitTicket::wait`] will say so).
    pub fn queued(&self) -> bool {
        self.slot.is_some()
    }

    /// Blocks until the record's batch committed (returns its seq) or failed.
    pub fn wait(self) -> Result<u64, AuditError> {
        let Some((slot, index)) = self.slot else {
            return Err(match self.refused {
                Some(why) => AuditError::InvalidRecord { why },
                None => AuditError::WriterGone {
                    path: self.db.to_path_buf(),
                },
            });
        };
        if !slot.urgent.load(Ordering::Acquire) {
            if let Some(shared) = &self.shared {
                // Under the queue lock, so the writer cannot miss it between its look and its
                // wait.
                let q = lock(&shared.queue);
                slot.urgent.store(true, Ordering::Release);
                drop(q);
                shared.wake.notify_all();
            }
        }
        let mut done = lock(&slot.done);
        loop {
            match done.as_ref() {
                Some(Ok(first)) => return Ok(first + index as u64),
                Some(Err(reason)) => {
                    return Err(AuditError::CommitFailed {
                        path: self.db.to_path_buf(),
                        reason: reason.clone(),
                    })
                }
                None => done = slot.cv.wait(done).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }
}

/// Records being counted instead of itemized, by what their summary will name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct AggKey {
    agent: Option<String>,
    cgroup_id: Option<u64>,
    action: String,
    rule_id: Option<String>,
    source: super::record::Source,
}

struct AggEntry {
    count: u64,
    first_ts: i64,
    last_ts: i64,
    risk: secops_common::RiskLevel,
    reason: String,
    window: Duration,
    started: Instant,
    /// The summary's slot: every counted record's ticket resolves with the summary's seq.
    slot: Arc<Slot>,
}

/// What producers and the writer thread share.
struct Shared {
    aggregates: Mutex<std::collections::HashMap<AggKey, AggEntry>>,
    queue: Mutex<Queue>,
    /// The writer waits here for records; producers wait here for room.
    wake: Condvar,
    room: Condvar,
    health: Mutex<AuditHealth>,
}

struct Batch {
    records: Vec<NewRecord>,
    slot: Arc<Slot>,
    bytes: usize,
    started: Instant,
}

#[derive(Default)]
struct Queue {
    batches: VecDeque<Batch>,
    records: usize,
    bytes: usize,
    /// Records taken by the writer and not yet committed.
    in_flight: usize,
    in_flight_bytes: usize,
    in_flight_since: Option<Instant>,
    checkpoint_acks: Vec<std::sync::mpsc::SyncSender<Result<Option<u64>, String>>>,
    closing: bool,
    stopped: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn record_bytes(r: &NewRecord) -> usize {
    let s = |o: &Option<String>| o.as_ref().map_or(0, String::len);
    96 + s(&r.agent)
        + s(&r.comm)
        + s(&r.exe)
        + r.action.len()
        + r.object.as_ref().map_or(0, |o| o.value.len())
        + s(&r.rule_id)
        + r.reason.len()
}

/// A thread that owns an [`AuditStore`] and commits records in batches.
pub struct AuditWriter {
    shared: Arc<Shared>,
    options: WriterOptions,
    threads: Vec<JoinHandle<Result<(), String>>>,
    db: PathBuf,
    /// The same, for tickets (one reference count per record instead of a copy).
    ticket_db: Arc<PathBuf>,
}

impl AuditWriter {
    /// Opens the store and starts the writer thread.
    pub fn open(
        paths: &AuditPaths,
        policy: CheckpointPolicy,
        options: WriterOptions,
    ) -> Result<AuditWriter, AuditError> {
        let store = AuditStore::open_with(
            paths,
            StoreOptions {
                checkpoints: policy,
                ..StoreOptions::default()
            },
        )?;
        AuditWriter::start(store, options)
    }

    /// Starts the writer thread (and the witness and index threads) on an open store.
    pub fn start(mut store: AuditStore, options: WriterOptions) -> Result<AuditWriter, AuditError> {
        let paths = store.paths().clone();
        let db = paths.audit_dir.clone();
        store.defer_head_file();
        let health = AuditHealth {
            inode_protected: store.inode_protected(),
            committed_seq: store.last_seq(),
            checkpoint_seq: store.last_checkpoint().map_or(0, |c| c.seq),
            checkpoint_number: store.last_checkpoint().map_or(0, |c| c.number),
            ..AuditHealth::default()
        };
        let shared = Arc::new(Shared {
            aggregates: Mutex::new(std::collections::HashMap::new()),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            room: Condvar::new(),
            health: Mutex::new(health),
        });
        let (cp_tx, cp_rx) = std::sync::mpsc::channel::<Vec<Checkpoint>>();
        let (ix_tx, ix_rx) = std::sync::mpsc::channel::<()>();
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() -> Result<(), String> + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| AuditError::io(&db, "starting an audit thread", e))
        };
        {
            let witness_shared = shared.clone();
            let specs = options.witnesses.clone();
            let log_id = store.log_id();
            let public = store.public_key().0;
            let head_paths = paths.clone();
            threads.push(spawn(
                "secops-witness",
                Box::new(move || {
                    yield_to_decisions();
                    run_witnesses(witness_shared, cp_rx, &specs, log_id, public, &head_paths);
                    Ok(())
                }),
            )?);
        }
        if options.index {
            let index_shared = shared.clone();
            let index_paths = paths.clone();
            let log_id = hex::encode(store.log_id());
            threads.push(spawn(
                "secops-index",
                Box::new(move || {
                    only_when_idle();
                    run_index(index_shared, ix_rx, &index_paths, &log_id);
                    Ok(())
                }),
            )?);
        }
        let writer_shared = shared.clone();
        let writer_options = options.clone();
        threads.insert(
            0,
            spawn(
                "secops-audit",
                Box::new(move || {
                    if writer_options.low_priority {
                        yield_to_decisions();
                    }
                    run(store, writer_shared, writer_options, cp_tx, ix_tx)
                }),
            )?,
        );
        Ok(AuditWriter {
            shared,
            options,
            threads,
            ticket_db: Arc::new(db.clone()),
            db,
        })
    }

    /// Queues a record. Blocks only if the queue is full.
    pub fn append(&self, record: NewRecord) -> CommitTicket {
        if let Err(why) = chain::validate(&record) {
            return self.refused(Some(format!("audit record rejected: {why}")));
        }
        match self.push(record, true) {
            Some(slot) => CommitTicket {
                slot: Some(slot),
                refused: None,
                shared: Some(self.shared.clone()),
                db: self.ticket_db.clone(),
            },
            None => self.refused(None),
        }
    }

    /// Queues a record whose commit nobody waits for. Returns whether it was queued: it is
    /// refused (never blocks) when the log is failing or the loss bound is reached, so the
    /// caller must not act on a decision the log may never have.
    pub fn enqueue(&self, record: NewRecord) -> bool {
        if let Err(why) = chain::validate(&record) {
            tracing::error!(action = %record.action, "audit record rejected: {why}");
            return false;
        }
        self.push(record, false).is_some()
    }

    /// Whether a record nobody waits for would be accepted now.
    pub fn accepting(&self) -> bool {
        let q = lock(&self.shared.queue);
        self.within_bound(&q, 0) && lock(&self.shared.health).failing.is_none()
    }

    /// How the log is doing.
    pub fn health(&self) -> AuditHealth {
        let mut h = lock(&self.shared.health).clone();
        let q = lock(&self.shared.queue);
        h.queued_records = q.records + q.in_flight;
        h.queued_bytes = q.bytes + q.in_flight_bytes;
        h
    }

    fn within_bound(&self, q: &Queue, bytes: usize) -> bool {
        let o = &self.options;
        let unacked = q.records + q.in_flight;
        let oldest = q
            .in_flight_since
            .into_iter()
            .chain(q.batches.front().map(|b| b.started))
            .min();
        unacked < o.unacked_records
            && q.bytes + q.in_flight_bytes + bytes <= o.unacked_bytes
            && oldest.is_none_or(|t| t.elapsed() <= o.unacked_age)
    }

    fn push(&self, record: NewRecord, wait_for_room: bool) -> Option<(Arc<Slot>, usize)> {
        if record.verdict == secops_common::Verdict::Allow {
            if let Some(rule) = self
                .options
                .aggregate
                .iter()
                .find(|a| a.action == record.action)
            {
                return self.count(record, rule.window);
            }
        }
        let bytes = record_bytes(&record);
        let mut q = lock(&self.shared.queue);
        if !wait_for_room {
            let failing = lock(&self.shared.health).failing.is_some();
            if failing || !self.within_bound(&q, bytes) || q.closing || q.stopped {
                drop(q);
                lock(&self.shared.health).records_refused += 1;
                return None;
            }
        }
        while q.records >= self.options.queue.max(1) && !q.closing && !q.stopped {
            q = self.shared.room.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        if q.closing || q.stopped {
            return None;
        }
        let max_batch = self.options.max_batch.max(1);
        if q.batches
            .back()
            .is_none_or(|b| b.records.len() >= max_batch)
        {
            q.batches.push_back(Batch {
                records: Vec::with_capacity(max_batch.min(64)),
                slot: Slot::new(),
                bytes: 0,
                started: Instant::now(),
            });
        }
        let batch = q.batches.back_mut()?;
        let index = batch.records.len();
        batch.records.push(record);
        batch.bytes += bytes;
        let slot = batch.slot.clone();
        let first_of_queue = q.records == 0;
        q.records += 1;
        q.bytes += bytes;
        drop(q);
        if first_of_queue || index + 1 >= max_batch {
            self.shared.wake.notify_all();
        }
        Some((slot, index))
    }

    /// Counts an aggregated record into its summary.
    fn count(&self, r: NewRecord, window: Duration) -> Option<(Arc<Slot>, usize)> {
        if lock(&self.shared.queue).stopped {
            return None;
        }
        let key = AggKey {
            agent: r.agent,
            cgroup_id: r.cgroup_id,
            action: r.action,
            rule_id: r.rule_id,
            source: r.source,
        };
        let mut aggs = lock(&self.shared.aggregates);
        let e = aggs.entry(key).or_insert_with(|| AggEntry {
            count: 0,
            first_ts: r.ts_ns,
            last_ts: r.ts_ns,
            risk: r.risk,
            reason: r.reason,
            window,
            started: Instant::now(),
            slot: Slot::new(),
        });
        e.count += 1;
        e.first_ts = e.first_ts.min(r.ts_ns);
        e.last_ts = e.last_ts.max(r.ts_ns);
        Some((e.slot.clone(), 0))
    }

    fn refused(&self, why: Option<String>) -> CommitTicket {
        CommitTicket {
            slot: None,
            refused: why,
            shared: None,
            db: self.ticket_db.clone(),
        }
    }

    /// Commits everything queued so far and seals it with a checkpoint. Returns the seq the
    /// new checkpoint covers, or `None` if everything was already sealed.
    pub fn checkpoint(&self) -> Result<Option<u64>, AuditError> {
        let gone = || AuditError::WriterGone {
            path: self.db.clone(),
        };
        let (ack, rx) = std::sync::mpsc::sync_channel(1);
        {
            let mut q = lock(&self.shared.queue);
            if q.stopped {
                return Err(gone());
            }
            q.checkpoint_acks.push(ack);
            if let Some(b) = q.batches.back() {
                b.slot.urgent.store(true, Ordering::Release);
            }
        }
        self.shared.wake.notify_all();
        rx.recv()
            .map_err(|_| gone())?
            .map_err(|reason| AuditError::CommitFailed {
                path: self.db.clone(),
                reason,
            })
    }

    /// Commits what is queued, writes a final checkpoint and stops the threads.
    pub fn close(mut self) -> Result<(), AuditError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), AuditError> {
        lock(&self.shared.queue).closing = true;
        self.shared.wake.notify_all();
        self.shared.room.notify_all();
        let mut result = Ok(());
        for thread in self.threads.drain(..) {
            let r = match thread.join() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(reason)) => Err(AuditError::CommitFailed {
                    path: self.db.clone(),
                    reason,
                }),
                Err(_) => Err(AuditError::WriterGone {
                    path: self.db.clone(),
                }),
            };
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "audit writer did not shut down cleanly");
        }
    }
}

/// Lowers this thread's CPU priority (nice 10, SCHED_BATCH), so a thread that answers a
/// decision takes the CPU from a commit in progress instead of waiting behind it: committing
/// is throughput work, answering is latency work. On a loaded machine the writer still gets
/// its share (nice 10 is about a tenth), and a full queue pushes back on producers.
fn yield_to_decisions() {
    // SAFETY: plain syscalls on the calling thread.
    unsafe {
        let tid = libc::gettid();
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

/// The index is derived and may lag: it gets only CPU nobody else wants (SCHED_IDLE), so it
/// never takes time from the writer or from decisions; queries read what it has not reached
/// from the segments.
fn only_when_idle() {
    // SAFETY: a plain syscall on the calling thread.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

/// What the writer loop takes from the queue in one round.
enum Work {
    Batch(Batch),
    Seal,
    Close,
}

/// Moves summaries whose window is over, or that someone waits on (all of them when closing),
/// into the queue; returns when the next one is due.
fn flush_aggregates(shared: &Shared, q: &mut Queue) -> Option<Duration> {
    let mut aggs = lock(&shared.aggregates);
    let closing = q.closing;
    let due: Vec<AggKey> = aggs
        .iter()
        // A summary someone waits on (the kernel pipeline settles each batch) is written now:
        // it then counts what arrived until then.
        .filter(|(_, e)| {
            closing || e.started.elapsed() >= e.window || e.slot.urgent.load(Ordering::Acquire)
        })
        .map(|(k, _)| k.clone())
        .collect();
    for key in due {
        let Some(e) = aggs.remove(&key) else { continue };
        let reason = format!(
            "{} {} allowed from {} to {}, counted, not itemized (one record per {}; the first \
             said: {})",
            e.count,
            key.action,
            crate::time::format_ns(e.first_ts),
            crate::time::format_ns(e.last_ts),
            humantime::format_duration(e.window),
            e.reason
        );
        let summary = NewRecord {
            agent: key.agent,
            cgroup_id: key.cgroup_id,
            rule_id: key.rule_id,
            ..NewRecord::new(
                e.last_ts,
                &key.action,
                secops_common::Verdict::Allow,
                e.risk,
                reason,
                key.source,
            )
        };
        e.slot.urgent.store(true, Ordering::Release);
        let bytes = record_bytes(&summary);
        q.records += 1;
        q.bytes += bytes;
        q.batches.push_front(Batch {
            bytes,
            records: vec![summary],
            slot: e.slot,
            started: e.started,
        });
    }
    aggs.values()
        .map(|e| e.window.saturating_sub(e.started.elapsed()))
        .min()
}

fn next_work(
    shared: &Shared,
    store: &AuditStore,
    options: &WriterOptions,
    retry_at: Option<Instant>,
) -> Work {
    let mut q = lock(&shared.queue);
    loop {
        let aggregate_in = flush_aggregates(shared, &mut q);
        let ready = q.batches.front().is_some_and(|b| {
            b.records.len() >= options.max_batch.max(1)
                || b.slot.urgent.load(Ordering::Acquire)
                || b.started.elapsed() >= options.linger
                || q.batches.len() > 1
                || q.closing
        });
        if ready || (!q.checkpoint_acks.is_empty() && q.batches.is_empty()) {
            if let Some(b) = q.batches.pop_front() {
                q.records -= b.records.len();
                q.bytes -= b.bytes;
                q.in_flight = b.records.len();
                q.in_flight_bytes = b.bytes;
                q.in_flight_since = Some(b.started);
                shared.room.notify_all();
                return Work::Batch(b);
            }
            return Work::Seal;
        }
        if q.closing {
            return Work::Close;
        }
        let seal_in = store.seal_due_in().map(|d| match retry_at {
            Some(at) => d.max(at.saturating_duration_since(Instant::now())),
            None => d,
        });
        if seal_in == Some(Duration::ZERO) {
            return Work::Seal;
        }
        let linger_in = q
            .batches
            .front()
            .map(|b| options.linger.saturating_sub(b.started.elapsed()));
        let timeout = [seal_in, linger_in, aggregate_in]
            .into_iter()
            .flatten()
            .min();
        q = match timeout {
            Some(t) => {
                shared
                    .wake
                    .wait_timeout(q, t)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => shared.wake.wait(q).unwrap_or_else(|e| e.into_inner()),
        };
    }
}

fn run(
    mut store: AuditStore,
    shared: Arc<Shared>,
    options: WriterOptions,
    checkpoints: std::sync::mpsc::Sender<Vec<Checkpoint>>,
    index: std::sync::mpsc::Sender<()>,
) -> Result<(), String> {
    // After a failed idle checkpoint, when to try again: a persistent error must not spin.
    let mut retry_at: Option<Instant> = None;
    let result = loop {
        match next_work(&shared, &store, &options, retry_at) {
            Work::Batch(b) => {
                let n = b.records.len() as u64;
                let result = commit_with_note(&mut store, &shared, &b.records);
                {
                    let mut h = lock(&shared.health);
                    match &result {
                        Ok(_) => {
                            h.records_committed += n;
                            h.committed_seq = store.last_seq();
                        }
                        Err(_) => h.records_failed += n,
                    }
                }
                {
                    let mut q = lock(&shared.queue);
                    q.in_flight = 0;
                    q.in_flight_bytes = 0;
                    q.in_flight_since = None;
                }
                *lock(&b.slot.done) = Some(result.map_err(|e| e.to_string()));
                b.slot.cv.notify_all();
            }
            Work::Seal => {
                let acks: Vec<_> = std::mem::take(&mut lock(&shared.queue).checkpoint_acks);
                let r = store.checkpoint_now();
                match &r {
                    Ok(_) => retry_at = None,
                    Err(e) => {
                        tracing::error!(error = %e, "audit checkpoint failed");
                        retry_at = Some(Instant::now() + Duration::from_secs(1));
                    }
                }
                for ack in acks {
                    let _ = ack.send(
                        r.as_ref()
                            .map(|c| c.map(|c| c.seq))
                            .map_err(|e| e.to_string()),
                    );
                }
            }
            Work::Close => {
                break store
                    .checkpoint_now()
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        }
        let made = store.take_checkpoints();
        if let Some(last) = made.last() {
            let mut h = lock(&shared.health);
            h.checkpoint_seq = last.seq;
            h.checkpoint_number = last.number;
        }
        if !made.is_empty() {
            let _ = checkpoints.send(made);
        }
        let _ = index.send(());
    };
    let made = store.take_checkpoints();
    if !made.is_empty() {
        let _ = checkpoints.send(made);
    }
    let mut q = lock(&shared.queue);
    q.stopped = true;
    // Anyone still queued after close gets an answer instead of waiting forever.
    for b in q.batches.drain(..) {
        *lock(&b.slot.done) = Some(Err("the audit writer stopped".into()));
        b.slot.cv.notify_all();
    }
    for ack in q.checkpoint_acks.drain(..) {
        let _ = ack.send(Err("the audit writer stopped".into()));
    }
    shared.room.notify_all();
    result
}

/// Commits a batch. While the log is failing, the first batch that goes through again is
/// preceded by a record of the outage, and a failure is noted once.
fn commit_with_note(
    store: &mut AuditStore,
    shared: &Shared,
    records: &[NewRecord],
) -> Result<u64, AuditError> {
    let failing = lock(&shared.health).failing.clone();
    if let Some(why) = &failing {
        let since = lock(&shared.health).failing_since_ns.unwrap_or(0);
        let note = audit_note(
            secops_common::RiskLevel::High,
            format!(
                "the audit log could not be written from {} until now: {why}; decisions that \
                 needed a record were refused meanwhile",
                crate::time::format_ns(since)
            ),
        );
        if store.append(&note).is_ok() {
            let mut h = lock(&shared.health);
            tracing::warn!("the audit log is being written again");
            h.failing = None;
            h.failing_since_ns = None;
        }
    }
    match store.append_batch(records) {
        Ok(seqs) => {
            let mut h = lock(&shared.health);
            if h.failing.take().is_some() {
                h.failing_since_ns = None;
            }
            Ok(seqs.first().copied().unwrap_or(0))
        }
        Err(e) => {
            let mut h = lock(&shared.health);
            if h.failing.is_none() {
                tracing::error!(error = %e, records = records.len(), "the audit log is failing");
                h.failing_since_ns = Some(crate::time::now_ns());
            }
            h.failing = Some(e.to_string());
            Err(e)
        }
    }
}

fn run_witnesses(
    shared: Arc<Shared>,
    rx: std::sync::mpsc::Receiver<Vec<Checkpoint>>,
    specs: &[WitnessSpec],
    log_id: [u8; 16],
    public: [u8; 32],
    paths: &AuditPaths,
) {
    let mut set = WitnessSet::new(specs);
    let host = super::witness::hostname();
    loop {
        // Retry failing witnesses every few seconds even when no checkpoint comes.
        let got = match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(c) => Some(c),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut cps = got.unwrap_or_default();
        while let Ok(more) = rx.try_recv() {
            cps.extend(more);
        }
        if let Some(last) = cps.last() {
            let head = super::head::HeadFile::new(&log_id, last, crate::time::now_ns());
            if let Err(e) = head.write(&paths.head_file) {
                tracing::error!("audit head file not updated: {e}");
            }
        }
        if set.is_empty() {
            continue;
        }
        let lines: Vec<WitnessedCheckpoint> = cps
            .iter()
            .map(|c| WitnessedCheckpoint::new(&log_id, &public, c, host.clone()))
            .collect();
        set.send(&lines);
        lock(&shared.health).witnesses = set.status();
    }
}

fn run_index(
    shared: Arc<Shared>,
    rx: std::sync::mpsc::Receiver<()>,
    paths: &AuditPaths,
    log_id: &str,
) {
    let mut index: Option<Index> = None;
    while rx.recv().is_ok() {
        while rx.try_recv().is_ok() {}
        let result = match index.as_mut() {
            Some(ix) => ix.catch_up(&paths.audit_dir),
            None => Index::open_rw(paths, log_id).and_then(|mut ix| {
                let n = ix.catch_up(&paths.audit_dir);
                index = Some(ix);
                n
            }),
        };
        let error = result.err().map(|e| e.to_string());
        if let Some(e) = &error {
            tracing::warn!("audit index behind: {e}");
            index = None;
        }
        lock(&shared.health).index_error = error;
    }
}
