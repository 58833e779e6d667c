//! The Landlock plans agents were started with, by agent: what `secops status` summarizes
//! and what the file tracepoints' records are read against.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use secops_common::CoreAction;

use super::locks::{read, write};
use crate::api::LandlockPlan;
use crate::enforce::landlock::{plan_denies, summary};

/// The plans `secops run` was given, by agent (the newest start of each).
#[derive(Default)]
pub(crate) struct LandlockPlans {
    by_agent: std::sync::RwLock<HashMap<String, Arc<LandlockPlan>>>,
}

impl LandlockPlans {
    /// Keeps the plan of the agent's newest start.
    pub(crate) fn remember(&self, agent: &str, plan: LandlockPlan) {
        write(&self.by_agent).insert(agent.to_owned(), Arc::new(plan));
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
