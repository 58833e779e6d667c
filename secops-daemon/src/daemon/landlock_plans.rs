//! The Landlock plans agents were started with, by agent: what `secops status` summarizes
//! and what the file tracepoints' records are read against.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use secops_common::CoreAction;

use super::locks::{lock, read, write};
use crate::api::LandlockPlan;
use crate::enforce::landlock::{plan_denies, summary};

/// Launchers remembered until their domain shows in the kernel's records; the oldest are
/// forgotten past this (a start whose domain never refuses anything never shows).
const MAX_LAUNCHERS: usize = 4096;

/// The plans `secops run` was given, by agent (the newest start of each), and which kernel
/// Landlock domains are which agent's.
#[derive(Default)]
pub(crate) struct LandlockPlans {
    by_agent: std::sync::RwLock<HashMap<String, Arc<LandlockPlan>>>,
    /// `secops run` processes that were given a plan, by pid (they restrict themselves).
    launchers: std::sync::Mutex<std::collections::VecDeque<(u32, String)>>,
    /// Kernel domain ids, as the audit records name them, by agent.
    domains: std::sync::RwLock<HashMap<u64, String>>,
    /// Whether the kernel's Landlock records are read (then they tell of every refusal).
    kernel_records: std::sync::atomic::AtomicBool,
    /// Compiled plans by agent, for the engine they were compiled with: a start under the
    /// same policy (no reload, no autonomy change since) and within [`PLAN_REUSE`] reuses
    /// it instead of compiling again.
    compiled: std::sync::Mutex<HashMap<String, CompiledPlan>>,
    /// Deletes and renames the file tracepoints saw and the plan refuses, waiting for the
    /// kernel's record of the refusal.
    awaiting: std::sync::Mutex<std::collections::VecDeque<AwaitingRecord>>,
}

/// A delete or rename the file tracepoints saw, as the decision path would record it.
pub(crate) struct AwaitingRecord {
    pub(crate) seen: std::time::Instant,
    pub(crate) action: CoreAction,
    /// Where a rename goes.
    pub(crate) target: Option<std::path::PathBuf>,
    pub(crate) request: super::decide::Request,
}

/// A plan, and what it was compiled from.
struct CompiledPlan {
    engine: std::sync::Weak<crate::engine::Engine>,
    at: std::time::Instant,
    plan: LandlockPlan,
}

/// How long a compiled plan is reused under the same engine: the filesystem it was
/// compiled against (existing matches of globs, symlinked anchors, binary directories)
/// drifts; a path gone since is left out by the launcher (fail closed), a new one waits for
/// the next compile.
pub(crate) const PLAN_REUSE: std::time::Duration = std::time::Duration::from_secs(300);

/// Tracepoint records kept waiting for the kernel's; the oldest go first past it.
const MAX_AWAITING: usize = 4096;
/// How long a tracepoint record waits for the kernel's; unmatched, the call failed before
/// Landlock's check (nothing to record as Landlock's refusal).
pub(crate) const AWAIT_KERNEL: std::time::Duration = std::time::Duration::from_secs(3);

impl LandlockPlans {
    /// Keeps the plan of the agent's newest start.
    pub(crate) fn remember(&self, agent: &str, plan: LandlockPlan) {
        write(&self.by_agent).insert(agent.to_owned(), Arc::new(plan));
    }

    /// The plan compiled for `agent` under `engine` within [`PLAN_REUSE`], if any.
    pub(crate) fn compiled_for(
        &self,
        agent: &str,
        engine: &Arc<crate::engine::Engine>,
    ) -> Option<LandlockPlan> {
        let compiled = lock(&self.compiled);
        let entry = compiled.get(agent)?;
        (std::sync::Weak::ptr_eq(&entry.engine, &Arc::downgrade(engine))
            && entry.at.elapsed() < PLAN_REUSE)
            .then(|| entry.plan.clone())
    }

    /// Keeps `plan`, compiled for `agent` under `engine`, for the next starts.
    pub(crate) fn keep_compiled(
        &self,
        agent: &str,
        engine: &Arc<crate::engine::Engine>,
        plan: &LandlockPlan,
    ) {
        let mut compiled = lock(&self.compiled);
        // Plans of an engine no longer in force are never used again.
        compiled.retain(|_, c| c.engine.strong_count() > 0);
        compiled.insert(
            agent.to_owned(),
            CompiledPlan {
                engine: Arc::downgrade(engine),
                at: std::time::Instant::now(),
                plan: plan.clone(),
            },
        );
    }

    /// The kernel's Landlock records are read from now on.
    pub(crate) fn reading_kernel_records(&self) {
        self.kernel_records
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Keeps `request` for the kernel's record of the refusal, when those are read; false
    /// when they are not (the caller records it now).
    pub(crate) fn await_kernel_record(
        &self,
        action: CoreAction,
        target: Option<std::path::PathBuf>,
        request: &super::decide::Request,
    ) -> bool {
        if !self
            .kernel_records
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return false;
        }
        let mut awaiting = lock(&self.awaiting);
        let now = std::time::Instant::now();
        while awaiting.front().is_some_and(|a| {
            awaiting.len() >= MAX_AWAITING || now.duration_since(a.seen) > AWAIT_KERNEL
        }) {
            awaiting.pop_front();
        }
        awaiting.push_back(AwaitingRecord {
            seen: now,
            action,
            target,
            request: request.clone(),
        });
        true
    }

    /// The oldest tracepoint record of `action` by process `tgid` of `agent` waiting for
    /// the kernel's record (that record's call).
    pub(crate) fn take_awaiting(
        &self,
        agent: &str,
        tgid: u32,
        action: CoreAction,
    ) -> Option<AwaitingRecord> {
        let mut awaiting = lock(&self.awaiting);
        let at = awaiting.iter().position(|a| {
            a.action == action
                && a.request.actor.tgid == Some(tgid)
                && a.request.actor.agent.as_deref() == Some(agent)
                && a.seen.elapsed() <= AWAIT_KERNEL
        })?;
        awaiting.remove(at)
    }

    /// `pid` (a `secops run` that registered) will restrict itself to `agent`'s plan.
    pub(crate) fn launcher(&self, pid: u32, agent: &str) {
        let mut launchers = lock(&self.launchers);
        launchers.retain(|(p, _)| *p != pid);
        if launchers.len() >= MAX_LAUNCHERS {
            launchers.pop_front();
        }
        launchers.push_back((pid, agent.to_owned()));
    }

    /// The kernel says task `pid` created Landlock domain `domain`: an agent's, when `pid`
    /// is a `secops run` that was given a plan.
    pub(crate) fn domain_created(&self, domain: u64, pid: u32) {
        let agent = {
            let mut launchers = lock(&self.launchers);
            let Some(at) = launchers.iter().position(|(p, _)| *p == pid) else {
                return;
            };
            launchers.remove(at).map(|(_, agent)| agent)
        };
        if let Some(agent) = agent {
            write(&self.domains).insert(domain, agent);
        }
    }

    /// The kernel freed domain `domain` (its last task ended): it never shows again.
    pub(crate) fn domain_freed(&self, domain: u64) {
        write(&self.domains).remove(&domain);
    }

    /// The agent whose ruleset is kernel domain `domain`, if it is an agent's.
    pub(crate) fn agent_of_domain(&self, domain: u64) -> Option<String> {
        read(&self.domains).get(&domain).cloned()
    }

    pub(crate) fn summary(&self, agent: &str) -> Option<String> {
        read(&self.by_agent).get(agent).map(|plan| summary(plan))
    }

    /// Whether the agent's last plan denies `action` on `path` (false when it has none).
    pub(crate) fn denies(&self, agent: &str, action: CoreAction, path: &Path) -> bool {
        read(&self.by_agent)
            .get(agent)
            .is_some_and(|plan| plan_denies(plan, action, path))
    }
}
