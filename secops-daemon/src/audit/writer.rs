//! Batching for the daemon: one thread owns the [`AuditStore`], groups whatever records are
//! waiting into one transaction, and acknowledges each record only after COMMIT returned.
//!
//! Producers get a [`CommitTicket`] per record. A ticket that resolves to a seq means the
//! record is durable (synchronous=FULL); a process killed at any point loses only records
//! whose tickets had not resolved yet.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::chain;
use super::error::AuditError;
use super::record::NewRecord;
use super::store::{AuditPaths, AuditStore, CheckpointPolicy};

/// Tuning for [`AuditWriter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// Most records per transaction.
    pub max_batch: usize,
    /// After the first record of a batch arrives (and the queue is drained), how long to
    /// sleep before taking what else arrived and committing. Short: every producer waiting
    /// on a ticket waits this long too.
    pub linger: Duration,
    /// Records queued before `append` blocks (back-pressure instead of unbounded memory).
    pub queue: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            max_batch: 1024,
            linger: Duration::from_millis(10),
            queue: 64 * 1024,
        }
    }
}

type Ack = SyncSender<Result<u64, String>>;

enum Msg {
    /// A record, and where to say its seq (None: nobody waits for it).
    Append(Box<NewRecord>, Option<Ack>),
    Checkpoint(SyncSender<Result<Option<u64>, String>>),
    Close,
}

/// The promise of a seq for one appended record.
#[must_use = "a record is only known to be committed once its ticket resolves"]
pub struct CommitTicket {
    rx: Option<Receiver<Result<u64, String>>>,
    db: PathBuf,
}

impl CommitTicket {
    /// Whether the record reached the writer's queue (false: the writer is gone, and
    /// [`CommitTicket::wait`] will say so).
    pub fn queued(&self) -> bool {
        self.rx.is_some()
    }

    /// Blocks until the record's transaction committed (returns its seq) or failed.
    pub fn wait(self) -> Result<u64, AuditError> {
        let Some(rx) = self.rx else {
            return Err(AuditError::WriterGone { path: self.db });
        };
        match rx.recv() {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(reason)) => Err(AuditError::CommitFailed {
                path: self.db,
                reason,
            }),
            Err(_) => Err(AuditError::WriterGone { path: self.db }),
        }
    }
}

/// A thread that owns an [`AuditStore`] and commits records in batches.
pub struct AuditWriter {
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<Result<(), String>>>,
    db: PathBuf,
}

impl AuditWriter {
    /// Opens the store and starts the writer thread.
    pub fn open(
        paths: &AuditPaths,
        policy: CheckpointPolicy,
        options: WriterOptions,
    ) -> Result<AuditWriter, AuditError> {
        AuditWriter::start(AuditStore::open(paths, policy)?, options)
    }

    /// Starts the writer thread on an open store.
    pub fn start(store: AuditStore, options: WriterOptions) -> Result<AuditWriter, AuditError> {
        let db = store.paths().db.clone();
        let (tx, rx) = mpsc::sync_channel(options.queue.max(1));
        let thread = std::thread::Builder::new()
            .name("secops-audit".into())
            .spawn(move || {
                yield_to_decisions();
                run(store, rx, options)
            })
            .map_err(|e| AuditError::io(&db, "starting the audit writer thread", e))?;
        Ok(AuditWriter {
            tx: Some(tx),
            thread: Some(thread),
            db,
        })
    }

    /// Queues a record. Blocks only if the queue is full.
    pub fn append(&self, record: NewRecord) -> CommitTicket {
        let (ack, rx) = mpsc::sync_channel(1);
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(Msg::Append(Box::new(record), Some(ack))).is_ok());
        CommitTicket {
            rx: sent.then_some(rx),
            db: self.db.clone(),
        }
    }

    /// Queues a record whose commit nobody waits for, without the reply channel a
    /// [`CommitTicket`] needs. Returns whether it reached the queue. Blocks only if the queue
    /// is full.
    pub fn enqueue(&self, record: NewRecord) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.send(Msg::Append(Box::new(record), None)).is_ok())
    }

    /// Commits everything queued so far and seals it with a checkpoint. Returns the seq the
    /// new checkpoint covers, or `None` if everything was already sealed.
    pub fn checkpoint(&self) -> Result<Option<u64>, AuditError> {
        let gone = || AuditError::WriterGone {
            path: self.db.clone(),
        };
        let (ack, rx) = mpsc::sync_channel(1);
        self.tx
            .as_ref()
            .ok_or_else(gone)?
            .send(Msg::Checkpoint(ack))
            .map_err(|_| gone())?;
        rx.recv()
            .map_err(|_| gone())?
            .map_err(|reason| AuditError::CommitFailed {
                path: self.db.clone(),
                reason,
            })
    }

    /// Commits what is queued, writes a final checkpoint and stops the thread.
    pub fn close(mut self) -> Result<(), AuditError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), AuditError> {
        if let Some(tx) = self.tx.take() {
            // If the thread is already gone the send fails; join below reports why.
            let _ = tx.send(Msg::Close);
        }
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        match thread.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(AuditError::CommitFailed {
                path: self.db.clone(),
                reason,
            }),
            Err(_) => Err(AuditError::WriterGone {
                path: self.db.clone(),
            }),
        }
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

/// What one round of the writer loop collected.
struct Batch {
    records: Vec<NewRecord>,
    acks: Vec<Option<Ack>>,
    checkpoint_acks: Vec<SyncSender<Result<Option<u64>, String>>>,
    closing: bool,
}

impl Batch {
    fn take(&mut self, m: Msg) {
        match m {
            Msg::Append(r, ack) => {
                // One bad record must not fail the transaction of everyone batched with it.
                if let Err(why) = chain::validate(&r) {
                    let reason = format!("audit record rejected: {why}");
                    match ack {
                        Some(ack) => {
                            let _ = ack.send(Err(reason));
                        }
                        None => tracing::error!(action = %r.action, "{reason}"),
                    }
                    return;
                }
                self.records.push(*r);
                self.acks.push(ack);
            }
            Msg::Checkpoint(ack) => self.checkpoint_acks.push(ack),
            Msg::Close => self.closing = true,
        }
    }
}

fn run(mut store: AuditStore, rx: Receiver<Msg>, options: WriterOptions) -> Result<(), String> {
    let max_batch = options.max_batch.max(1);
    let mut b = Batch {
        records: Vec::with_capacity(max_batch),
        acks: Vec::with_capacity(max_batch),
        checkpoint_acks: Vec::new(),
        closing: false,
    };
    // After a failed idle checkpoint, when to try again: a persistent error must not spin,
    // and records must keep flowing meanwhile.
    let mut retry_seal_at: Option<Instant> = None;
    loop {
        // Sleep until a record arrives or unsealed records are due for a checkpoint.
        let due = store.seal_due_in().map(|due| match retry_seal_at {
            Some(at) => due.max(at.saturating_duration_since(Instant::now())),
            None => due,
        });
        let first = match due {
            Some(due) => match rx.recv_timeout(due) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => {
                    match store.checkpoint_now() {
                        Ok(_) => retry_seal_at = None,
                        Err(e) => {
                            tracing::error!(error = %e, "audit checkpoint failed");
                            let pause = store.policy().every.max(Duration::from_secs(1));
                            retry_seal_at = Some(Instant::now() + pause);
                        }
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => None,
            },
            None => rx.recv().ok(),
        };
        match first {
            Some(m) => b.take(m),
            None => b.closing = true,
        }
        // Gather the batch: whatever is queued now, then, if the batch is not full, whatever
        // arrives during one sleep of `linger`. Sleeping (rather than waiting on the channel)
        // means producers do not wake this thread once per record.
        let mut slept = false;
        while !b.closing && !b.records.is_empty() && b.records.len() < max_batch {
            match rx.try_recv() {
                Ok(m) => b.take(m),
                Err(TryRecvError::Disconnected) => b.closing = true,
                Err(TryRecvError::Empty) if !slept && !options.linger.is_zero() => {
                    std::thread::sleep(options.linger);
                    slept = true;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        if !b.records.is_empty() {
            match store.append_batch(&b.records) {
                Ok(seqs) => {
                    for (ack, seq) in b.acks.drain(..).zip(seqs) {
                        // The producer may have stopped waiting; the record is committed anyway.
                        if let Some(ack) = ack {
                            let _ = ack.send(Ok(seq));
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, records = b.records.len(), "audit batch failed");
                    let reason = e.to_string();
                    for ack in b.acks.drain(..).flatten() {
                        let _ = ack.send(Err(reason.clone()));
                    }
                }
            }
            b.records.clear();
            b.acks.clear();
        }
        for ack in b.checkpoint_acks.drain(..) {
            let r = store
                .checkpoint_now()
                .map(|cp| cp.map(|c| c.seq))
                .map_err(|e| e.to_string());
            let _ = ack.send(r);
        }
        if b.closing {
            // Close is the last message the (single) sender ever sends: seal and stop.
            return store
                .checkpoint_now()
                .map(|_| ())
                .map_err(|e| e.to_string());
        }
    }
}
