//! Putting a policy in force: the policy file loaded again (a reload), the autonomy overrides
//! applied on top, the enforcement compiler's output (`crate::enforce`) written into the
//! cgroups and kernel maps, and only then the engine swapped, so the kernel never enforces
//! less than the engine believes.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use secops_common::{CoreAction, RiskLevel, Verdict};

use super::agents::AgentTable;
use super::autonomy;
use super::decide::Actor;
use super::layers::{describe_missing, missing_layers};
use super::options::DaemonOptions;
use super::state::{lock, write, Shared};
use crate::audit::{AuditObject, AuditWriter, NewRecord, ObjectKind, Source};
use crate::enforce::{
    compile_file_rules, AgentTarget, BuiltinProtection, CountSlots, FileRules, Followed,
};
use crate::engine::Engine;
use crate::policy::{load_policy, Policy};
use crate::time::now_ns;

/// What set a reload off, as its audit record says.
#[derive(Clone, Debug)]
pub(crate) enum ReloadTrigger {
    /// A file of the policy (the top-level one or an include) changed.
    FileChanged,
    Sighup,
    /// `POST /v1/reload`, by this caller.
    Api(Actor, String),
}

impl ReloadTrigger {
    fn describe(&self) -> String {
        match self {
            ReloadTrigger::FileChanged => "a policy file changed".to_owned(),
            ReloadTrigger::Sighup => "SIGHUP".to_owned(),
            ReloadTrigger::Api(_, caller) => format!("asked by {caller}"),
        }
    }
}

/// How long a reload may take before it is given up: a file that takes longer to read and
/// compile than this is not a policy, and a later change must still be able to load.
pub(crate) const RELOAD_TIME_BOX: Duration = Duration::from_secs(30);

/// Reloads on the blocking pool, waiting at most [`RELOAD_TIME_BOX`]. A reload that takes
/// longer is abandoned: it changes nothing even if it finishes later, and the next one
/// starts afresh. Every reload, done, refused or abandoned, is an audit record.
pub(crate) async fn reload_in_time(
    shared: &Arc<Shared>,
    writer: &Arc<AuditWriter>,
    trigger: ReloadTrigger,
) -> anyhow::Result<Vec<PathBuf>> {
    let (s, w, t) = (shared.clone(), writer.clone(), trigger.clone());
    let reload = tokio::task::spawn_blocking(move || s.reload(&w, t));
    match tokio::time::timeout(RELOAD_TIME_BOX, reload).await {
        Ok(joined) => joined.map_err(|e| anyhow!("the reload did not finish: {e}"))?,
        Err(_) => {
            shared.reload_generation.fetch_add(1, Ordering::SeqCst);
            let old = shared.engine().policy().content_hash.clone();
            let why = format!(
                "the reload did not finish within {} s and was given up; the policy in force \
                 stays, and the next change or SIGHUP loads afresh",
                RELOAD_TIME_BOX.as_secs()
            );
            *lock(&shared.last_reload_error) = Some(why.clone());
            tracing::error!("{why}");
            let record = reload_record(&trigger, &old, None, &why, &[]);
            let (w, record) = (writer.clone(), record);
            let _ = tokio::task::spawn_blocking(move || w.append(record).wait()).await;
            Err(anyhow!(why))
        }
    }
}

/// The audit record of a reload: allowed (`new` in force) or denied (the old one stays).
fn reload_record(
    trigger: &ReloadTrigger,
    old: &str,
    new: Option<&str>,
    why: &str,
    files: &[PathBuf],
) -> NewRecord {
    let (verdict, reason) = match new {
        Some(new) => (
            Verdict::Allow,
            format!(
                "policy reloaded ({}): sha256 {old} -> {new}; files: {}",
                trigger.describe(),
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        None => (
            Verdict::Deny,
            format!(
                "policy not reloaded ({}): the one in force (sha256 {old}) stays: {why}",
                trigger.describe()
            ),
        ),
    };
    let (source, actor) = match trigger {
        ReloadTrigger::Api(actor, _) => (Source::Api, actor.clone()),
        _ => (Source::Daemon, Actor::default()),
    };
    NewRecord {
        pid: actor.pid,
        uid: actor.uid,
        comm: actor.comm,
        object: Some(AuditObject {
            kind: ObjectKind::Target,
            value: "policy".to_owned(),
        }),
        ..NewRecord::new(
            now_ns(),
            CoreAction::SysPolicy.as_str(),
            verdict,
            RiskLevel::High,
            reason,
            source,
        )
    }
}

impl Shared {
    /// Loads the policy again and puts it in force; a policy that does not load changes
    /// nothing, and the reason is kept for `secops status`. Audited either way, waiting for
    /// the record's commit. A reload overtaken by a newer one (or given up) changes nothing.
    pub(crate) fn reload(
        &self,
        writer: &AuditWriter,
        trigger: ReloadTrigger,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let generation = self.reload_generation.fetch_add(1, Ordering::SeqCst) + 1;
        let old = self.engine().policy().content_hash.clone();
        let result = load_policy(&self.options.policy)
            .map_err(|errors| {
                anyhow!("the new policy is not valid, the previous one stays in force:\n{errors}")
            })
            .and_then(|policy| {
                let missing = missing_layers(&self.capabilities, &policy.defaults.require);
                if !missing.is_empty() {
                    anyhow::bail!(
                        "the new policy requires layers that are not active on this kernel \
                         (defaults.require): {}; the previous one stays in force",
                        describe_missing(&missing)
                    );
                }
                let hash = policy.content_hash.clone();
                if let Err(e) = crate::audit::policy_copy::keep(&self.options.state_dir, &policy) {
                    tracing::warn!("no copy kept of the reloaded policy: {e:#}");
                }
                self.apply(policy, generation).map(|files| (hash, files))
            });
        let (record, result) = match result {
            Ok((new, files)) => {
                *lock(&self.last_reload_error) = None;
                tracing::info!(files = ?files, sha256 = %new, "policy reloaded");
                (
                    reload_record(&trigger, &old, Some(&new), "", &files),
                    Ok(files),
                )
            }
            Err(e) => {
                *lock(&self.last_reload_error) = Some(format!("{e:#}"));
                tracing::error!("{e:#}");
                let why = format!("{e:#}");
                (reload_record(&trigger, &old, None, &why, &[]), Err(e))
            }
        };
        if let Err(e) = writer.append(record).wait() {
            tracing::error!("the audit record of a reload was not written: {e}");
        }
        result
    }

    /// Puts a newly loaded policy in force, with the autonomy overrides on top, unless a
    /// newer reload (`generation` is no longer the last) started meanwhile.
    fn apply(&self, policy: Policy, generation: u64) -> anyhow::Result<Vec<PathBuf>> {
        let files = policy.files.clone();
        let mut live = lock(&self.live);
        if self.reload_generation.load(Ordering::SeqCst) != generation {
            anyhow::bail!(
                "a newer reload started (or this one was given up); this one changes nothing"
            );
        }
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
        let previous = self.files();
        let files =
            file_rules_following(engine, &agents, &self.options, &previous.compiled.followed)?;
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
    file_rules_following(engine, agents, options, &Followed::default())
}

/// [`file_rules`], with the protected objects of the rules compiled before followed to where
/// they are now.
fn file_rules_following(
    engine: &Engine,
    agents: &AgentTable,
    options: &DaemonOptions,
    previous: &Followed,
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
        previous,
        &slots_file,
        |index| agents.by_index(index).map(|s| s.name.clone()),
    )?)
}
