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
use super::events::{
    allowed_egress_record, capture, file_count_record, lost_events_record, request_for, Captured,
    ExeCache,
};
use super::state::{lock, read, Shared};
use crate::audit::{AuditWriter, CommitTicket, NewRecord};
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
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let reader_shared = shared.clone();
    let reader = std::thread::Builder::new()
        .name("secops-ringbuf".into())
        .spawn(move || read_ring(reader_shared, reader, tx))
        .context("starting the ring buffer reader")?;
    std::thread::Builder::new()
        .name("secops-events".into())
        .spawn(move || Pipeline::new(shared, rx, writer).run(reader))
        .context("starting the event pipeline thread")
}

/// Moves events from the ring buffer into the queue as fast as they come, with what /proc
/// says about their process, until shutdown (after one last drain).
fn read_ring(shared: Arc<Shared>, mut reader: EventReader, tx: SyncSender<Captured>) {
    let mut exes = ExeCache::default();
    loop {
        let stopping = shared.shutdown.load(Ordering::SeqCst);
        if let Err(e) = reader.wait(Duration::from_millis(100)) {
            tracing::warn!("waiting for kernel events: {e}");
        }
        while let Some(next) = reader.try_next() {
            match next {
                Ok(event) => {
                    shared.counters.received.fetch_add(1, Ordering::Relaxed);
                    if tx.send(capture(event, &mut exes)).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!("unreadable kernel event: {e}"),
            }
        }
        if stopping {
            return;
        }
    }
}

struct Pipeline {
    shared: Arc<Shared>,
    events: Receiver<Captured>,
    writer: Arc<AuditWriter>,
    /// Lost-event counts already audited. Kept in the state directory: the pinned counters
    /// outlive a daemon, and a restarted daemon must neither hide nor repeat losses.
    lost_audited: LostCounts,
    lost_file: PathBuf,
    /// When the allowed-file counters were last drained (UTC ns): the window their counts
    /// cover. (Counts pinned before this daemon started fall in its first window.)
    file_counts_since: i64,
}

impl Pipeline {
    fn new(shared: Arc<Shared>, events: Receiver<Captured>, writer: Arc<AuditWriter>) -> Pipeline {
        let lost_file = shared.options.state_dir.join("kernel-lost-events.audited");
        let lost_audited = read_lost(&lost_file);
        Pipeline {
            shared,
            events,
            writer,
            lost_audited,
            lost_file,
            file_counts_since: crate::time::now_ns(),
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
            if stopping || last_lost_check.elapsed() >= LOST_CHECK {
                last_lost_check = Instant::now();
                self.audit_lost();
                self.heartbeat();
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
            while let Some(mut captured) = item.take() {
                if let KernelEvent::Granted { ticket, .. } = captured.event {
                    captured.path = self.granted_object(ticket);
                }
                let mut request = request_for(&captured, self.agent_of(&captured), &files, &clock);
                // A call the ruleset refuses, which the kernel's own record will tell of,
                // waits for it (the kernel names only the directory; this, the path).
                let deferred = super::landlock::judge_by_plan(
                    &self.shared.landlock,
                    &mut request,
                    captured.target.as_deref(),
                );
                if !deferred {
                    let outcome = decide(
                        self.shared.as_ref(),
                        &self.writer,
                        request,
                        AuditMode::Commit,
                    );
                    match outcome.recorded {
                        Recorded::Committing(ticket) => tickets.push(ticket),
                        Recorded::Refused => {
                            tracing::error!("the audit log refused a kernel event's record")
                        }
                        Recorded::Queued | Recorded::NotNeeded => {}
                    }
                }
                if tickets.len() < BATCH {
                    item = self.events.try_recv().ok();
                }
            }
            let full = tickets.len() >= BATCH;
            self.settle(tickets);
            if full {
                next = self.events.try_recv().ok();
            }
        }
        true
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
