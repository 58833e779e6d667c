//! Ticket decisions, published for the syscalls parked on them (`secops run --ask`) and the
//! API clients waiting for them (`/v1/tickets/{id}?wait=`, `/v1/check` with `wait`).

use std::time::Duration;

use crate::approvals::TicketStatus;

/// Decisions parked calls wait for. A decision is published here only after everything it
/// entails is in place (an approval's kernel grant installed), so a call continued on it
/// meets the grant. Kept a while for calls that join a ticket late.
#[derive(Default)]
pub(crate) struct DecidedTickets {
    decided: std::sync::Mutex<std::collections::HashMap<u64, (TicketStatus, std::time::Instant)>>,
    changed: std::sync::Condvar,
    /// The same news for tasks on the API thread.
    changed_async: tokio::sync::Notify,
}

const KEEP_DECIDED: Duration = Duration::from_secs(600);

impl DecidedTickets {
    pub(crate) fn publish(&self, id: u64, status: TicketStatus) {
        let mut decided = self.decided.lock().unwrap_or_else(|p| p.into_inner());
        decided.retain(|_, (_, at)| at.elapsed() < KEEP_DECIDED);
        decided.insert(id, (status, std::time::Instant::now()));
        self.changed.notify_all();
        self.changed_async.notify_waiters();
    }

    fn get(&self, id: u64) -> Option<TicketStatus> {
        let decided = self.decided.lock().unwrap_or_else(|p| p.into_inner());
        decided.get(&id).map(|(status, _)| *status)
    }

    /// [`wait`](Self::wait) for async callers: no thread is held while waiting.
    pub(crate) async fn wait_async(&self, id: u64, timeout: Duration) -> Option<TicketStatus> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before looking, so a publish between the look and the wait wakes it.
            let changed = self.changed_async.notified();
            if let Some(status) = self.get(id) {
                return Some(status);
            }
            if tokio::time::timeout_at(until, changed).await.is_err() {
                return self.get(id);
            }
        }
    }

    /// The decision on ticket `id`, waiting up to `timeout` for one.
    pub(crate) fn wait(&self, id: u64, timeout: Duration) -> Option<TicketStatus> {
        let decided = self.decided.lock().unwrap_or_else(|p| p.into_inner());
        let (decided, _) = self
            .changed
            .wait_timeout_while(decided, timeout, |d| !d.contains_key(&id))
            .unwrap_or_else(|p| p.into_inner());
        decided.get(&id).map(|(status, _)| *status)
    }
}
