//! The event pipeline, two OS threads: the reader moves events out of the ring buffer into a
//! bounded queue as fast as they come (with what /proc says about their process); the auditor
//! decides each with the engine and appends its record to the audit log, and on timers audits
//! lost events and the aggregated allowed connections, and beats the heartbeat.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::decide::{decide, AuditMode, Recorded};
use super::decisions::{self, Accounting, EpochStart, Tagged};
use super::events::{
    allowed_egress_record, capture, file_count_record, lost_events_record, request_for, Captured,
    ExeCache,
};
use super::follow::{may_move, MoveWatch};
use super::state::{lock, read, Shared};
use crate::audit::{AuditPaths, AuditWriter, CommitTicket, NewRecord};
use crate::kernel::{EventReader, KernelEvent, LostCounts};
use crate::time::{boot_now_ns, Clock};

const LOST_CHECK: Duration = Duration::from_secs(1);
const EGRESS_DRAIN: Duration = Duration::from_secs(5);
/// Records waited on together: the writer commits them in few transactions.
const BATCH: usize = 4096;

/// Events waiting between the ring buffer reader and the auditor. A burst larger than the
/// kernel's ring buffer lands here (ordinary memory) instead of being lost; past this the
/// reader blocks, the ring buffer fills, and the kernel counts what it drops.
const QUEUE: usize = 131_072;

/// Starts the ring buffer reader and the auditor; the returned thread is the auditor, which
/// joins the reader when it stops.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    reader: EventReader,
    writer: Arc<AuditWriter>,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    // What the log accounts for is read before this daemon's first record; the new epoch
    // begins before the reader takes the first event out of the ring buffer.
    let map_id = lock(&shared.kernel).maps().decisions_map_id()?;
    let accounting = Accounting::from_log(&AuditPaths::new(&shared.options.state_dir), map_id)
        .context("reading what the audit log accounts for of the kernel's denials")?;
    let epoch = decisions::begin_epoch(lock(&shared.kernel).maps_mut(), || reader.produced())
        .context("beginning a new decision epoch")?;
    tracing::info!(
        epoch = epoch.epoch,
        committed = accounting.committed(),
        lost = accounting.lost(),
        "kernel denials are counted in a new decision epoch"
    );
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let reader_shared = shared.clone();
    let reader = std::thread::Builder::new()
        .name("secops-ringbuf".into())
        .spawn(move || read_ring(reader_shared, reader, tx, epoch.drain_to))
        .context("starting the ring buffer reader")?;
    std::thread::Builder::new()
        .name("secops-events".into())
        .spawn(move || Pipeline::new(shared, rx, writer, accounting, epoch).run(reader))
        .context("starting the event pipeline thread")
}

/// A counted event's counter and agent, accounted for once its record commits.
type Counted = (Tagged, Option<String>);
/// A record being committed, and what it accounts for.
type Pending = (CommitTicket, Option<Counted>);

/// What the reader hands the auditor.
enum Piped {
    Event(Box<Captured>),
    /// Every event of an earlier decision epoch has been handed over before this.
    EarlierEpochsRead,
}

/// Moves events from the ring buffer into the queue as fast as they come, with what /proc
/// says about their process, until shutdown (after one last drain). Says when it has
/// consumed up to `drain_to`.
fn read_ring(shared: Arc<Shared>, mut reader: EventReader, tx: SyncSender<Piped>, drain_to: u64) {
    let mut exes = ExeCache::default();
    let mut earlier_epochs_pending = true;
    loop {
        let stopping = shared.shutdown.load(Ordering::SeqCst);
        if let Err(e) = reader.wait(Duration::from_millis(100)) {
            tracing::warn!("waiting for kernel events: {e}");
        }
        while let Some(next) = reader.try_next() {
            match next {
                Ok(event) => {
                    shared.counters.received.fetch_add(1, Ordering::Relaxed);
                    let piped = Piped::Event(Box::new(capture(event, &mut exes)));
                    if tx.send(piped).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!("unreadable kernel event: {e}"),
            }
        }
        if earlier_epochs_pending && reader.consumed() >= drain_to {
            earlier_epochs_pending = false;
            if tx.send(Piped::EarlierEpochsRead).is_err() {
                return;
            }
        }
        if stopping {
            return;
        }
    }
}

struct Pipeline {
    shared: Arc<Shared>,
    events: Receiver<Piped>,
    writer: Arc<AuditWriter>,
    /// What the log accounts for of the kernel's counted denials (see `decisions`).
    accounting: Accounting,
    /// Whether `accounting` changed since its last record.
    accounting_changed: bool,
    epoch: EpochStart,
    /// Set once the earlier epochs' events are all read: reconciled after this batch.
    settle_earlier_epochs: bool,
    /// Lost-event counts already audited. Kept in the state directory: the pinned counters
    /// outlive a daemon, and a restarted daemon must neither hide nor repeat losses.
    lost_audited: LostCounts,
    lost_file: PathBuf,
    /// When the allowed-file counters were last drained (UTC ns): the window their counts
    /// cover. (Counts pinned before this daemon started fall in its first window.)
    file_counts_since: i64,
    /// Protected objects that moved, followed and audited (`follow`).
    moves: MoveWatch,
    /// The last batch held a rename: look for moved protected objects now.
    renamed: bool,
}

impl Pipeline {
    fn new(
        shared: Arc<Shared>,
        events: Receiver<Piped>,
        writer: Arc<AuditWriter>,
        accounting: Accounting,
        epoch: EpochStart,
    ) -> Pipeline {
        let lost_file = shared.options.state_dir.join("kernel-lost-events.audited");
        let lost_audited = read_lost(&lost_file);
        shared.counters.publish_accounting(&accounting);
        Pipeline {
            shared,
            events,
            writer,
            accounting,
            accounting_changed: false,
            epoch,
            settle_earlier_epochs: false,
            lost_audited,
            lost_file,
            file_counts_since: crate::time::now_ns(),
            moves: MoveWatch::default(),
            renamed: false,
        }
    }

    fn run(mut self, reader: JoinHandle<()>) -> anyhow::Result<()> {
        let mut last_lost_check = Instant::now() - LOST_CHECK;
        let mut last_drain = Instant::now();
        let mut reader = Some(reader);
        loop {
            let stopping = self.shared.shutdown.load(Ordering::SeqCst);
            if stopping {
                // The reader drains the ring one last time and hangs up; audit all of it.
                if let Some(reader) = reader.take() {
                    let _ = reader.join();
                }
            }
            let open = self.audit_events(Duration::from_millis(100));
            if std::mem::take(&mut self.settle_earlier_epochs) {
                self.audit_lost_in_crash();
            }
            if stopping || last_lost_check.elapsed() >= LOST_CHECK {
                last_lost_check = Instant::now();
                self.audit_lost();
                self.record_accounting();
                self.heartbeat();
                self.renamed = true;
            }
            if std::mem::take(&mut self.renamed) {
                self.moves.check(&self.shared, &self.writer);
            }
            if stopping || last_drain.elapsed() >= EGRESS_DRAIN {
                last_drain = Instant::now();
                self.audit_allowed_egress();
                self.audit_file_counts();
                self.sweep_grants();
            }
            if stopping && !open {
                return Ok(());
            }
        }
    }

    /// Audits what is queued (waiting up to `wait` for the first event), in batches whose
    /// commits are awaited together. Returns false once the reader has hung up and the queue
    /// is empty.
    fn audit_events(&mut self, wait: Duration) -> bool {
        let first = match self.events.recv_timeout(wait) {
            Ok(first) => first,
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        };
        let mut next = Some(first);
        while let Some(first) = next.take() {
            let clock = Clock::now();
            let files = self.shared.files();
            let mut tickets = Vec::with_capacity(BATCH);
            let mut item = Some(first);
            while let Some(piped) = item.take() {
                match piped {
                    Piped::Event(mut captured) => {
                        self.renamed |= may_move(&captured.event);
                        if let Some(ticket) = self.audit_event(&mut captured, &files, &clock) {
                            tickets.push(ticket);
                        }
                    }
                    Piped::EarlierEpochsRead => self.settle_earlier_epochs = true,
                }
                if tickets.len() < BATCH && !self.settle_earlier_epochs {
                    item = self.events.try_recv().ok();
                }
            }
            let full = tickets.len() >= BATCH;
            self.settle_counted(tickets);
            if full && !self.settle_earlier_epochs {
                next = self.events.try_recv().ok();
            }
        }
        true
    }

    /// Decides one event and hands its record to the writer: the ticket to wait on, with
    /// the counter the record accounts for if the kernel counted the event.
    fn audit_event(
        &self,
        captured: &mut Captured,
        files: &crate::enforce::FileRules,
        clock: &Clock,
    ) -> Option<Pending> {
        if let KernelEvent::Granted { ticket, .. } = captured.event {
            captured.path = self.granted_object(ticket);
        }
        let agent = self.agent_of(captured);
        let counted = captured.event.meta().counted.map(|key| {
            let tagged = Tagged { key, lost: None };
            (tagged, agent.as_ref().map(|(name, _)| name.clone()))
        });
        let mut request = request_for(captured, agent, files, clock);
        if let Some((tagged, _)) = &counted {
            request.note.push_str(&decisions::tag(&tagged.key));
        }
        super::landlock::judge_by_plan(&self.shared.landlock, &mut request);
        let outcome = decide(
            self.shared.as_ref(),
            &self.writer,
            request,
            AuditMode::Commit,
        );
        match outcome.recorded {
            Recorded::Committing(ticket) => Some((ticket, counted)),
            Recorded::Refused => {
                tracing::error!("the audit log refused a kernel event's record");
                None
            }
            Recorded::Queued | Recorded::NotNeeded => None,
        }
    }

    /// [`Pipeline::settle`], and what each committed record accounts for is added to the
    /// accounting (a record that did not commit is lost, and found so after a restart).
    fn settle_counted(&mut self, tickets: Vec<Pending>) {
        for (ticket, counted) in tickets {
            match ticket.wait() {
                Ok(_) => {
                    self.shared.counters.audited.fetch_add(1, Ordering::Relaxed);
                    if let Some((tagged, agent)) = counted {
                        self.accounting.add(&tagged, agent.as_deref());
                        self.accounting_changed = true;
                    }
                }
                Err(e) => tracing::error!("an event could not be written to the audit log: {e}"),
            }
        }
        self.shared.counters.publish_accounting(&self.accounting);
    }

    /// Writes what the log accounts for, if it changed, and waits for its commit.
    fn record_accounting(&mut self) {
        if !std::mem::take(&mut self.accounting_changed) {
            return;
        }
        let record = self.accounting.record(crate::time::now_ns());
        if let Err(e) = self.writer.append(record).wait() {
            self.accounting_changed = true;
            tracing::error!("recording what the log accounts for of the kernel's denials: {e}");
        }
    }

    /// Once every event of the earlier epochs is read and its record committed: audits what
    /// their counters say the kernel denied and the log does not account for, as lost.
    fn audit_lost_in_crash(&mut self) {
        let epoch = self.epoch.epoch;
        let counts = match lock(&self.shared.kernel).maps().decision_counts() {
            Ok(c) => c,
            Err(e) => return tracing::error!("reading the kernel's decision counters: {e}"),
        };
        let lost = {
            let agents = read(&self.shared.agents);
            self.accounting.settle_epochs_before(
                epoch,
                &counts,
                |cgroup| agents.by_cgroup_id(cgroup).map(|s| s.name.clone()),
                crate::time::now_ns(),
            )
        };
        let mut failed = false;
        let tickets: Vec<_> = lost
            .into_iter()
            .map(|(tagged, record)| {
                tracing::warn!(
                    count = tagged.lost,
                    action = %record.action,
                    agent = record.agent.as_deref().unwrap_or("?"),
                    "kernel denials lost in a daemon crash"
                );
                let agent = record.agent.clone();
                (self.writer.append(record), Some((tagged, agent)))
            })
            .collect();
        for (ticket, counted) in tickets {
            match ticket.wait() {
                Ok(_) => {
                    if let Some((tagged, agent)) = counted {
                        self.accounting.add(&tagged, agent.as_deref());
                    }
                }
                Err(e) => {
                    failed = true;
                    tracing::error!("recording kernel denials lost in a crash: {e}");
                }
            }
        }
        self.accounting_changed = true;
        if failed {
            // Left for the next start, which finds the same counters unaccounted for.
            self.record_accounting();
            return self.shared.counters.publish_accounting(&self.accounting);
        }
        // The counters go only once the log accounts for all of them; the state forgets the
        // epochs after that, so a crash in between finds them accounted for, not lost.
        if let Err(e) = lock(&self.shared.kernel)
            .maps_mut()
            .retire_decision_epochs_before(epoch)
        {
            tracing::warn!("removing the settled decision counters: {e}");
        } else {
            self.accounting.retire_before(epoch);
        }
        self.record_accounting();
        self.shared.counters.publish_accounting(&self.accounting);
    }

    /// The agent an event's cgroup belongs to (name, cgroup id), as the agent table says now.
    fn agent_of(&self, captured: &Captured) -> Option<(String, u64)> {
        let meta = captured.event.meta();
        let agents = read(&self.shared.agents);
        let slot = agents
            .by_cgroup_id(meta.cgroup_id)
            .or_else(|| agents.by_index(meta.agent_index))?;
        Some((slot.name.clone(), slot.cgroup_id))
    }

    /// Waits until every record is committed, counting what was and logging what was not.
    fn settle(&self, tickets: Vec<CommitTicket>) {
        for ticket in tickets {
            match ticket.wait() {
                Ok(_) => {
                    self.shared.counters.audited.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::error!("an event could not be written to the audit log: {e}"),
            }
        }
    }

    fn audit_lost(&mut self) {
        let current = {
            let kernel = lock(&self.shared.kernel);
            kernel.maps().lost_counts()
        };
        let current = match current {
            Ok(c) => c,
            Err(e) => return tracing::warn!("reading lost-event counters: {e}"),
        };
        let new = current.since(&self.lost_audited);
        if new.total() == 0 {
            return;
        }
        let now = crate::time::now_ns();
        let mut tickets = Vec::new();
        for (kind, sub, count) in new.slots() {
            let record = lost_events_record(kind, sub, count, now);
            tracing::warn!(
                count,
                action = %record.action,
                "kernel events lost: the ring buffer was full"
            );
            tickets.push(self.writer.append(record));
        }
        self.shared
            .counters
            .lost
            .fetch_add(new.total(), Ordering::Relaxed);
        self.settle(tickets);
        self.lost_audited = current;
        write_lost(&self.lost_file, &self.lost_audited);
    }

    fn audit_allowed_egress(&self) {
        let drained = {
            let mut kernel = lock(&self.shared.kernel);
            kernel.maps_mut().drain_allowed_egress()
        };
        let drained = match drained {
            Ok(d) => d,
            Err(e) => return tracing::warn!("reading allowed-egress counters: {e}"),
        };
        let clock = Clock::now();
        self.audit_per_agent(
            &drained,
            |allowed| allowed.agent_index,
            |allowed, agent, cgroup_id| allowed_egress_record(allowed, agent, cgroup_id, &clock),
        );
    }

    /// Audits one record per item drained from a kernel counter map, each for the agent
    /// its index names.
    fn audit_per_agent<T>(
        &self,
        items: &[T],
        agent_index: impl Fn(&T) -> u32,
        record: impl Fn(&T, Option<&str>, Option<u64>) -> NewRecord,
    ) {
        let agents = read(&self.shared.agents);
        let tickets: Vec<_> = items
            .iter()
            .map(|item| {
                let slot = agents.by_index(agent_index(item));
                self.writer.append(record(
                    item,
                    slot.map(|s| s.name.as_str()),
                    slot.map(|s| s.cgroup_id),
                ))
            })
            .collect();
        drop(agents);
        self.settle(tickets);
    }

    /// The object of the ticket behind a used grant, for its audit record.
    fn granted_object(&self, ticket: u64) -> Option<String> {
        match lock(&self.shared.tickets).get(ticket) {
            Ok(t) => Some(t.object),
            Err(e) => {
                tracing::warn!("reading ticket {ticket} for a used grant: {e}");
                None
            }
        }
    }

    /// Audits the deletes and renames the kernel counted instead of reporting.
    fn audit_file_counts(&mut self) {
        let drained = lock(&self.shared.kernel).maps_mut().drain_file_counts();
        let now = crate::time::now_ns();
        let since = std::mem::replace(&mut self.file_counts_since, now);
        if drained.is_empty() {
            return;
        }
        let files = read(&self.shared.files).clone();
        let agents = read(&self.shared.agents);
        let tickets: Vec<_> = drained
            .iter()
            .map(|counted| {
                let owner = files.count_slots.owner(counted.slot);
                let slot = owner.and_then(|o| agents.by_name(&o.agent));
                self.writer.append(file_count_record(
                    counted,
                    owner,
                    slot.map(|s| s.cgroup_id),
                    since,
                    now,
                ))
            })
            .collect();
        drop(agents);
        self.settle(tickets);
    }

    /// Removes grants that ran out. The kernel ignores them already; this only keeps the
    /// map from filling up.
    fn sweep_grants(&self) {
        let now = boot_now_ns();
        let mut kernel = lock(&self.shared.kernel);
        if let Err(e) = kernel.maps_mut().sweep_grants(now) {
            tracing::warn!("removing expired grants: {e}");
        }
    }

    fn heartbeat(&self) {
        let mut kernel = lock(&self.shared.kernel);
        let now = u64::try_from(crate::time::now_ns()).unwrap_or(0);
        if let Err(e) = kernel.maps_mut().set_heartbeat(now) {
            tracing::warn!("writing the heartbeat: {e}");
        }
    }
}

/// The lost-event counts already audited: `map <id>` (the `secops_stats` map they were read
/// from), then one count per slot. A file that is missing or does not read names no map, so
/// every count in the kernel is audited (once more, at worst).
fn read_lost(path: &std::path::Path) -> LostCounts {
    let mut counts = LostCounts::default();
    let Ok(text) = std::fs::read_to_string(path) else {
        return counts;
    };
    let mut words = text.split_whitespace();
    let map_id = match (words.next(), words.next().map(str::parse::<u32>)) {
        (Some("map"), Some(Ok(id))) => id,
        _ => {
            tracing::warn!(
                "{} does not say which map its counts are from; every lost event the kernel \
                 counted is audited again",
                path.display()
            );
            return counts;
        }
    };
    for (slot, value) in counts.by_slot.iter_mut().zip(words) {
        *slot = value.parse().unwrap_or(0);
    }
    counts.map_id = map_id;
    counts
}

fn write_lost(path: &std::path::Path, counts: &LostCounts) {
    let slots: Vec<String> = counts.by_slot.iter().map(u64::to_string).collect();
    let text = format!("map {}\n{}\n", counts.map_id, slots.join(" "));
    let tmp = path.with_extension("tmp");
    if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
        tracing::warn!(
            "recording audited lost-event counts in {}: {e}",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audited_loss_counts_survive_a_restart_but_not_a_new_map() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lost");
        let mut audited = LostCounts {
            map_id: 7,
            ..LostCounts::default()
        };
        audited.by_slot[6 * 32 + 1] = 5;
        write_lost(&file, &audited);
        let read = read_lost(&file);
        assert_eq!(read, audited);
        let mut now = audited.clone();
        now.by_slot[6 * 32 + 1] = 8;
        let new: Vec<_> = now.since(&read).slots().collect();
        assert_eq!(new, [(6, 1, 3)], "only what came since is new");
        let recreated = LostCounts {
            map_id: 9,
            ..now.clone()
        };
        assert_eq!(
            recreated.since(&read).total(),
            8,
            "a new map (after a teardown) starts from nothing audited"
        );
        std::fs::write(&file, "0 0 0 5").unwrap();
        assert_eq!(
            read_lost(&file),
            LostCounts::default(),
            "an old file names no map"
        );
    }
}
