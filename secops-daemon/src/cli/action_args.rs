//! The arguments that describe one action (`--agent`, `--action`, `--path`, ...), shared by
//! `check` and `policy explain`, and their translation into an engine request.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::anyhow;
use clap::Args;

use crate::api::action::{absolute_path, FieldNames, ResolvedAction};
use crate::api::ActionObject;
use crate::engine::{AgentIdx, Engine};
use crate::policy::load_policy;

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// The agent doing the action, by its name in the policy. A name the policy does not
    /// define is judged as an unknown agent (escalate, unless a hard rule denies).
    #[arg(long)]
    pub agent: String,
    /// The action type, `category:action` (e.g. fs:delete, net:connect, proc:exec, vcs:push).
    #[arg(long)]
    pub action: String,
    /// The file the action is on (fs:*, secret:read). Relative paths are taken from the
    /// current directory.
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// The executable (proc:exec).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// The destination address (net:*).
    #[arg(long)]
    pub addr: Option<IpAddr>,
    /// The destination host name (net:*, in-process actions).
    #[arg(long)]
    pub host: Option<String>,
    /// The destination port (net:*).
    #[arg(long)]
    pub port: Option<u16>,
}

pub fn load_engine(policy: &Path) -> anyhow::Result<Engine> {
    let policy =
        load_policy(policy).map_err(|errors| anyhow!("the policy is not valid:\n{errors}"))?;
    Ok(Engine::new(Arc::new(policy)))
}

const CLI_FIELDS: FieldNames = FieldNames {
    action: "--action",
    path: "--path",
    binary: "--binary",
};

impl ActionArgs {
    /// The action as the engine takes it; relative paths are taken from the current directory.
    pub fn resolve(&self, engine: &Engine) -> anyhow::Result<ResolvedAction> {
        let absolute =
            |flag, p: &Option<PathBuf>| p.as_deref().map(|p| absolute_path(flag, p)).transpose();
        let object = ActionObject {
            path: absolute("--path", &self.path)?,
            binary: absolute("--binary", &self.binary)?,
            addr: self.addr,
            host: self.host.clone(),
            port: self.port,
        };
        Ok(ResolvedAction::new(
            engine,
            &self.action,
            &object,
            &CLI_FIELDS,
        )?)
    }

    pub fn agent_index(&self, engine: &Engine) -> Option<AgentIdx> {
        engine.agent_index(&self.agent)
    }
}
