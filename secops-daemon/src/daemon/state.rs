//! What the daemon's threads and tasks share, and the order its locks are taken in.
//!
//! **Lock order**: `live`, then `kernel`, then `agents`, then the DNS layer's listener
//! registry (`dns`, taken while agents' entries are written and for the status). `tickets`,
//! `denials`, `hosts`,
//! `last_reload_error` and the `RwLock`ed snapshots (`engine`, `files`) are each taken alone
//! and let go before any other lock is taken. The API thread never holds `tickets` (SQLite)
//! itself: it runs what needs it on the blocking pool.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub(crate) use super::locks::{lock, read, write};

use tokio::sync::Notify;

use super::agents::{AgentSlot, AgentTable};
use super::autonomy;
use super::decided::DecidedTickets;
use super::dns::DnsLayer;
use super::metrics::Metrics;
use super::options::DaemonOptions;
use crate::api::{AgentStatus, CapabilityStatus, EventCounters, StatusReport};
use crate::approvals::TicketStore;
use crate::cgroups::CgroupDir;
use crate::enforce::{FileRules, HostAddrs};
use crate::engine::Engine;
use crate::kernel::Kernel;
use crate::policy::Policy;
use crate::scan::Scanner;

/// State shared by the daemon's tasks.
pub(crate) struct Shared {
    pub(crate) options: DaemonOptions,
    pub(crate) engine: RwLock<Arc<Engine>>,
    pub(crate) kernel: Mutex<Kernel>,
    pub(crate) agents: RwLock<AgentTable>,
    pub(crate) hosts: Mutex<HostAddrs>,
    pub(crate) root: CgroupDir,
    pub(crate) capabilities: Vec<CapabilityStatus>,
    pub(crate) last_reload_error: Mutex<Option<String>>,
    /// Counts reloads started (and given up): only the newest may put its policy in force.
    pub(crate) reload_generation: AtomicU64,
    pub(crate) counters: Counters,
    pub(crate) metrics: Metrics,
    /// The output scanner: `/v1/scan`, and every audit record before it is stored.
    pub(crate) scanner: Scanner,
    /// The approval queue. Held only in blocking tasks, never across an await.
    pub(crate) tickets: Mutex<TicketStore>,
    /// The file rules as compiled into the kernel's inode entries (for reading LSM events).
    pub(crate) files: RwLock<Arc<FileRules>>,
    /// Ticket decisions, for syscalls parked on them (`secops run --ask`).
    pub(crate) decided: DecidedTickets,
    /// The policy as loaded and the autonomy overrides on top of it. Held for the whole of
    /// every change to what is in force (reload, autonomy change), so two changes cannot
    /// interleave and one undo the other.
    pub(crate) live: Mutex<autonomy::Live>,
    /// Recent denials per agent, for `auto_lower`.
    pub(crate) denials: Mutex<autonomy::DenialWindows>,
    /// The agents' DNS listeners and what the resolver reports.
    pub(crate) dns: DnsLayer,
    pub(crate) shutdown: AtomicBool,
    pub(crate) shutdown_notify: Notify,
    /// Where people hear of tickets (webhooks).
    pub(crate) notifier: crate::notify::Notifier,
    /// The Landlock plans agents were started with.
    pub(crate) landlock: super::landlock_plans::LandlockPlans,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) audited: AtomicU64,
    pub(crate) lost: AtomicU64,
    /// From the pipeline's `decisions::Accounting`: counted denials committed as records,
    /// lost in crashes, and everything accounted for in the epochs the kernel still holds.
    pub(crate) denials_committed: AtomicU64,
    pub(crate) denials_lost_in_crash: AtomicU64,
    pub(crate) denials_accounted_open: AtomicU64,
}

impl Counters {
    pub(crate) fn publish_accounting(&self, accounting: &super::decisions::Accounting) {
        self.denials_committed
            .store(accounting.committed(), Ordering::Relaxed);
        self.denials_lost_in_crash
            .store(accounting.lost(), Ordering::Relaxed);
        self.denials_accounted_open
            .store(accounting.accounted_total(), Ordering::Relaxed);
    }

    /// The kernel's counted denials against what the log accounts for (`counted`: the sum of
    /// the kernel's counters now).
    pub(crate) fn kernel_denials(&self, counted: u64) -> crate::api::KernelDenials {
        let open = self.denials_accounted_open.load(Ordering::Relaxed);
        crate::api::KernelDenials {
            counted,
            committed: self.denials_committed.load(Ordering::Relaxed),
            lost_in_crash: self.denials_lost_in_crash.load(Ordering::Relaxed),
            pending: counted.saturating_sub(open),
        }
    }
}

impl Shared {
    pub(crate) fn engine(&self) -> Arc<Engine> {
        read(&self.engine).clone()
    }

    pub(crate) fn files(&self) -> Arc<FileRules> {
        read(&self.files).clone()
    }

    /// The agent's slot as it is now.
    pub(crate) fn agent_slot(&self, name: &str) -> Option<AgentSlot> {
        read(&self.agents).by_name(name).cloned()
    }

    pub(crate) fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    pub(crate) fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.shutdown_notify.notify_waiters();
    }

    /// Waits until [`request_shutdown`](Self::request_shutdown) was called.
    pub(crate) async fn stopped(&self) {
        while !self.stopping() {
            let notified = self.shutdown_notify.notified();
            if self.stopping() {
                break;
            }
            notified.await;
        }
    }

    pub(crate) fn status(&self) -> StatusReport {
        // Taken before `agents` (the lock order) and let go at once.
        let autonomy = lock(&self.live).view();
        let engine = self.engine();
        // `kernel` before `agents`.
        let denials = self.counters.kernel_denials(self.kernel_denials_counted());
        let agents = read(&self.agents);
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            policy_files: engine.policy().files.clone(),
            last_reload_error: lock(&self.last_reload_error).clone(),
            state_dir: self.options.state_dir.clone(),
            cgroup_root: self.root.path().to_path_buf(),
            pin_dir: self.options.pin_dir.clone(),
            capabilities: self.capabilities.clone(),
            agents: agents
                .slots()
                .map(|s| {
                    let mut status =
                        agent_status(s, &autonomy, engine.policy(), self.bpf_lsm_enforcing());
                    status.landlock = self.landlock.summary(&s.name);
                    status
                })
                .collect(),
            dns: self.dns.status(engine.policy()),
            audit: None,
            events: EventCounters {
                received: self.counters.received.load(Ordering::Relaxed),
                audited: self.counters.audited.load(Ordering::Relaxed),
                lost: self.counters.lost.load(Ordering::Relaxed),
                denials,
            },
        }
    }

    /// The sum of the kernel's decision counters (0 if they cannot be read).
    pub(crate) fn kernel_denials_counted(&self) -> u64 {
        match lock(&self.kernel).maps().decision_counts() {
            Ok(counts) => counts.iter().map(|(_, n)| n).sum(),
            Err(e) => {
                tracing::warn!("reading the kernel's decision counters: {e}");
                0
            }
        }
    }

    /// Whether the BPF LSM layer is attached and enforcing (it denies agents cgroup writes,
    /// so an agent running as root still cannot leave its cgroup).
    pub(crate) fn bpf_lsm_enforcing(&self) -> bool {
        self.layer_active(crate::policy::Layer::Lsm)
    }

    /// Whether `layer` is active on this kernel, as the daemon runs it.
    pub(crate) fn layer_active(&self, layer: crate::policy::Layer) -> bool {
        self.capabilities
            .iter()
            .any(|c| c.key == layer.as_str() && c.active)
    }

    /// Every agent's name by its kernel index.
    pub(crate) fn agent_names_by_index(&self) -> std::collections::HashMap<u32, String> {
        read(&self.agents)
            .slots()
            .map(|s| (s.index, s.name.clone()))
            .collect()
    }

    /// Every agent the daemon runs, by name.
    pub(crate) fn agent_names(&self) -> Vec<String> {
        read(&self.agents).slots().map(|s| s.name.clone()).collect()
    }
}

/// One agent as `secops agents list` and `secops status` show it. `lsm`: BPF LSM enforces
/// here (it keeps even a root agent in its cgroup).
pub(crate) fn agent_status(
    slot: &AgentSlot,
    autonomy: &autonomy::View,
    policy: &Policy,
    lsm: bool,
) -> AgentStatus {
    let cgroup = CgroupDir::open_path(&slot.cgroup).ok();
    let (policy_autonomy, autonomy_override) = autonomy.of(&slot.name);
    let user = policy.agent(&slot.name).and_then(|a| a.user.clone());
    let warning = match &user {
        Some(u) if u.is_root() && !lsm => Some(
            "runs as root and no kernel layer (BPF LSM) holds it in its cgroup here: its \
             identity is not enforceable (it could leave its cgroup and act as an admin)"
                .to_owned(),
        ),
        None => Some("the policy names no `user:`; secops run will not start it".to_owned()),
        _ => None,
    };
    AgentStatus {
        name: slot.name.clone(),
        cgroup: slot.cgroup.clone(),
        cgroup_id: slot.cgroup_id,
        autonomy: slot.autonomy.to_string(),
        // An agent gone from the policy has no policy level: it keeps the one it had.
        policy_autonomy: policy_autonomy.unwrap_or(slot.autonomy).to_string(),
        autonomy_override,
        egress_enforced: slot.egress_enforced,
        processes: cgroup
            .as_ref()
            .and_then(|c| c.procs().ok())
            .map_or(0, |p| p.len()),
        frozen: cgroup
            .as_ref()
            .and_then(|c| c.events().ok())
            .is_some_and(|e| e.frozen),
        user: user.map(|u| u.to_string()),
        warning,
        landlock: None,
    }
}
