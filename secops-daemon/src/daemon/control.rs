//! What people do to running agents: freeze, thaw and kill their cgroups, and change their
//! autonomy; and what repeated denials do to it. The API layer checks who asks and audits;
//! this module does the work. Everything here blocks (cgroup waits, file writes, recompiling
//! the kernel maps), so callers run it off the API thread.

use std::time::Instant;

use secops_common::AutonomyLevel;

use super::agents::AgentSlot;
use super::autonomy::{Live, Override};
use super::state::{agent_status, lock, read, Shared};
use crate::api::{AgentStatus, AutonomyChange};
use crate::cgroups::CgroupDir;
use crate::time::now_ns;

/// What the kill switch does to an agent's cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KillSwitch {
    Freeze,
    Thaw,
    Kill,
}

impl KillSwitch {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            KillSwitch::Freeze => "freeze",
            KillSwitch::Thaw => "thaw",
            KillSwitch::Kill => "kill",
        }
    }

    pub(crate) fn past(self) -> &'static str {
        match self {
            KillSwitch::Freeze => "frozen",
            KillSwitch::Thaw => "thawed",
            KillSwitch::Kill => "killed (every process, none left)",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    #[error("no agent named {name:?} (the daemon runs: {})", if known.is_empty() { "none".to_owned() } else { known.join(", ") })]
    UnknownAgent { name: String, known: Vec<String> },
    #[error("agent {name:?} is no longer in the policy, so it has no autonomy to change (it can still be frozen or killed)")]
    NotInPolicy { name: String },
    #[error("{what} agent {agent}: {source:#}")]
    Failed {
        what: &'static str,
        agent: String,
        source: anyhow::Error,
    },
}

impl Shared {
    fn slot_or_404(&self, name: &str) -> Result<AgentSlot, ControlError> {
        self.agent_slot(name)
            .ok_or_else(|| ControlError::UnknownAgent {
                name: name.to_owned(),
                known: read(&self.agents).slots().map(|s| s.name.clone()).collect(),
            })
    }

    pub(crate) fn agent_status_of(&self, name: &str) -> Result<AgentStatus, ControlError> {
        let view = lock(&self.live).view();
        let engine = self.engine();
        Ok(agent_status(
            &self.slot_or_404(name)?,
            &view,
            engine.policy(),
            self.bpf_lsm_enforcing(),
        ))
    }

    /// Freezes, thaws or kills one agent's cgroup and waits until the kernel says it is done
    /// (frozen, thawed, or no process left).
    pub(crate) fn kill_switch(
        &self,
        name: &str,
        what: KillSwitch,
    ) -> Result<AgentStatus, ControlError> {
        let slot = self.slot_or_404(name)?;
        let failed = |source: anyhow::Error| ControlError::Failed {
            what: what.as_str(),
            agent: name.to_owned(),
            source,
        };
        let dir = CgroupDir::open_path(&slot.cgroup).map_err(|e| failed(e.into()))?;
        match what {
            KillSwitch::Freeze => dir.freeze(),
            KillSwitch::Thaw => dir.thaw(),
            KillSwitch::Kill => dir.kill(),
        }
        .map_err(|e| failed(e.into()))?;
        tracing::warn!(agent = name, "agent {}", what.past());
        self.metrics.kill_switch(name, what.as_str());
        self.agent_status_of(name)
    }

    /// Sets an agent's autonomy (`None`: back to the policy's), persists it, and puts it in
    /// force in the engine and the kernel before returning. Denials counted so far no longer
    /// count: a person has just judged the agent.
    pub(crate) fn set_autonomy(
        &self,
        name: &str,
        level: Option<AutonomyLevel>,
        set_by: &str,
        reason: &str,
    ) -> Result<AutonomyChange, ControlError> {
        let mut live = lock(&self.live);
        if live.level_of(name).is_none() {
            self.slot_or_404(name)?;
            return Err(ControlError::NotInPolicy {
                name: name.to_owned(),
            });
        }
        let value = level.map(|level| Override {
            level,
            set_by: set_by.to_owned(),
            set_at_ns: now_ns(),
            reason: reason.to_owned(),
            automatic: false,
        });
        let change = self.change_autonomy(&mut live, name, value, "set autonomy of", reason)?;
        lock(&self.denials).reset(name);
        self.metrics.autonomy_changed(name, false);
        tracing::warn!(agent = name, from = %change.from, to = %change.to, by = set_by, "autonomy changed");
        Ok(change)
    }

    /// Counts a denial of `agent`; true when it reaches the agent's `auto_lower` threshold
    /// (then [`auto_lower`](Self::auto_lower) should follow).
    pub(crate) fn note_denial(&self, agent: &str) -> bool {
        let engine = self.engine();
        lock(&self.denials).note_by_policy(engine.policy(), agent, Instant::now())
    }

    /// Lowers `agent` one step after its threshold was reached. `None` when there is nothing
    /// to do (already locked, or gone from the policy since).
    pub(crate) fn auto_lower(&self, agent: &str) -> Result<Option<AutonomyChange>, ControlError> {
        let mut live = lock(&self.live);
        let Some(from) = live.level_of(agent) else {
            return Ok(None);
        };
        let Some(to) = from.lowered() else {
            return Ok(None);
        };
        let rule = live
            .effective()
            .agent(agent)
            .and_then(|a| a.auto_lower)
            .map_or_else(|| "auto_lower".to_owned(), |r| r.to_string());
        let reason = format!("lowered automatically: {rule}");
        let value = Override {
            level: to,
            set_by: "secops (automatic)".to_owned(),
            set_at_ns: now_ns(),
            reason: reason.clone(),
            automatic: true,
        };
        let change =
            self.change_autonomy(&mut live, agent, Some(value), "lower autonomy of", &reason)?;
        self.metrics.autonomy_changed(agent, true);
        tracing::warn!(agent, from = %change.from, to = %change.to, "autonomy lowered automatically: {rule}");
        Ok(Some(change))
    }

    /// Persists first, then puts in force; if that fails, the file and memory go back to
    /// what they were, so what is on disk is always what is (or was last) enforced.
    fn change_autonomy(
        &self,
        live: &mut Live,
        name: &str,
        value: Option<Override>,
        what: &'static str,
        reason: &str,
    ) -> Result<AutonomyChange, ControlError> {
        let failed = |source: anyhow::Error| ControlError::Failed {
            what,
            agent: name.to_owned(),
            source,
        };
        let from = live.level_of(name).unwrap_or(AutonomyLevel::Locked);
        let previous = live.overrides.get(name).cloned();
        let overridden = value.is_some();
        live.overrides
            .set(name, value)
            .map_err(|e| failed(e.into()))?;
        if let Err(e) = self.put_in_force(live) {
            if let Err(undo) = live.overrides.set(name, previous) {
                tracing::error!("undoing the autonomy change of {name} in the file: {undo}");
            }
            return Err(failed(e));
        }
        let to = live.level_of(name).unwrap_or(AutonomyLevel::Locked);
        Ok(AutonomyChange {
            agent: name.to_owned(),
            from: from.to_string(),
            to: to.to_string(),
            overridden,
            reason: reason.to_owned(),
        })
    }
}
