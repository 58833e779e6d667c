//! Putting a policy in force: the policy file loaded again (a reload), the autonomy overrides
//! applied on top, the enforcement compiler's output (`crate::enforce`) written into the
//! cgroups and kernel maps, and only then the engine swapped, so the kernel never enforces
//! less than the engine believes.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context};

use super::agents::AgentTable;
use super::autonomy;
use super::options::DaemonOptions;
use super::state::{lock, write, Shared};
use crate::enforce::{compile_file_rules, AgentTarget, BuiltinProtection, CountSlots, FileRules};
use crate::engine::Engine;
use crate::policy::{load_policy, Policy};

impl Shared {
    /// Loads the policy again; a policy that does not load changes nothing, and the reason
    /// is kept for `secops status`.
    pub(crate) fn reload(&self) -> anyhow::Result<Vec<PathBuf>> {
        let result = load_policy(&self.options.policy)
            .map_err(|errors| {
                anyhow!("the new policy is not valid, the previous one stays in force:\n{errors}")
            })
            .and_then(|policy| self.apply(policy));
        let mut last = lock(&self.last_reload_error);
        match &result {
            Ok(files) => {
                *last = None;
                tracing::info!(files = ?files, "policy reloaded");
            }
            Err(e) => {
                *last = Some(format!("{e:#}"));
                tracing::error!("{e:#}");
            }
        }
        result
    }

    /// Puts a newly loaded policy in force, with the autonomy overrides on top.
    fn apply(&self, policy: Policy) -> anyhow::Result<Vec<PathBuf>> {
        let files = policy.files.clone();
        let mut live = lock(&self.live);
        let previous = std::mem::replace(&mut live.policy, Arc::new(policy));
        if let Err(e) = self.put_in_force(&live) {
            live.policy = previous;
            return Err(e);
        }
        Ok(files)
    }

    /// Makes the engine and the kernel decide by `live`: kernel maps first, then the engine,
    /// so the kernel never enforces less than the engine believes.
    pub(crate) fn put_in_force(&self, live: &autonomy::Live) -> anyhow::Result<()> {
        let engine = Arc::new(Engine::new(Arc::new(live.effective())));
        self.sync_kernel(&engine)?;
        *write(&self.engine) = engine;
        Ok(())
    }

    /// Writes the policy in force into the cgroups and kernel maps again (after host names
    /// resolved differently, or an agent cgroup was removed); the engine stays as it is.
    pub(crate) fn resync(&self) -> anyhow::Result<()> {
        let engine = self.engine();
        self.sync_kernel(&engine)
    }

    fn sync_kernel(&self, engine: &Engine) -> anyhow::Result<()> {
        let hosts = lock(&self.hosts).clone();
        let mut kernel = lock(&self.kernel);
        let mut agents = write(&self.agents);
        agents.sync(
            engine.policy(),
            &self.root,
            kernel.maps_mut(),
            &hosts,
            &self.dns,
        )?;
        let files = file_rules(engine, &agents, &self.options)?;
        let update = kernel
            .maps_mut()
            .replace_inodes(&files.compiled.entries)
            .context("writing the file rules into the kernel")?;
        tracing::info!(
            entries = files.compiled.entries.len(),
            removed = update.removed,
            truncated = ?files.compiled.truncated,
            "file rules compiled for the LSM programs"
        );
        *write(&self.files) = Arc::new(files);
        Ok(())
    }
}

/// The policy's file rules for every agent in it, and secops' own files, as inode entries.
pub(crate) fn file_rules(
    engine: &Engine,
    agents: &AgentTable,
    options: &DaemonOptions,
) -> anyhow::Result<FileRules> {
    let policy = engine.policy();
    let targets: Vec<AgentTarget> = agents
        .slots()
        .filter(|slot| slot.in_policy)
        .filter_map(|slot| {
            let engine_index = engine.agent_index(&slot.name)?;
            let spec = policy.agents.get(engine_index.0 as usize)?;
            Some(AgentTarget {
                engine_index,
                kernel_index: slot.index,
                workspace: PathBuf::from(&spec.workspace),
            })
        })
        .collect();
    let mounts = crate::kernel::fs::mount_points().context("listing mount points")?;
    let mut builtin: Vec<BuiltinProtection> = [&options.state_dir, &options.pin_dir]
        .into_iter()
        .chain(&policy.files)
        .map(|path| BuiltinProtection {
            path: path.clone(),
            connect_allowed: false,
        })
        .collect();
    builtin.push(BuiltinProtection {
        path: options.socket.clone(),
        connect_allowed: true,
    });
    let slots_file = CountSlots::path_in(&options.state_dir);
    Ok(compile_file_rules(
        engine,
        &targets,
        &mounts,
        &builtin,
        &slots_file,
        |index| agents.by_index(index).map(|s| s.name.clone()),
    )?)
}
