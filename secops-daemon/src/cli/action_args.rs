//! The arguments that describe one action (`--agent`, `--action`, `--path`, ...), shared by
//! `check` and `policy explain`, and their translation into an engine request.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use clap::Args;
use secops_common::ActionId;

use crate::audit::{AuditObject, ObjectKind};
use crate::engine::{ActionRequest, Engine, NormalizedPath};
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

/// The action's values, owned, in the shapes the engine takes.
pub struct ResolvedAction {
    pub action: ActionId,
    pub action_name: String,
    pub path: Option<NormalizedPath>,
    pub binary: Option<NormalizedPath>,
}

pub fn load_engine(policy: &Path) -> anyhow::Result<Engine> {
    let policy =
        load_policy(policy).map_err(|errors| anyhow!("the policy is not valid:\n{errors}"))?;
    Ok(Engine::new(Arc::new(policy)))
}

impl ActionArgs {
    pub fn resolve(&self, engine: &Engine) -> anyhow::Result<ResolvedAction> {
        let (action, action_type) = engine
            .policy()
            .registry
            .resolve(&self.action)
            .with_context(|| "--action".to_owned())?;
        let path = self
            .path
            .as_deref()
            .map(|p| normalize("--path", p))
            .transpose()?;
        let binary = self
            .binary
            .as_deref()
            .map(|p| normalize("--binary", p))
            .transpose()?;
        Ok(ResolvedAction {
            action,
            action_name: action_type.to_string(),
            path,
            binary,
        })
    }

    pub fn request<'a>(
        &'a self,
        engine: &Engine,
        resolved: &'a ResolvedAction,
    ) -> ActionRequest<'a> {
        ActionRequest {
            agent: engine.agent_index(&self.agent),
            action: resolved.action,
            path: resolved.path.as_ref(),
            binary: resolved.binary.as_ref(),
            addr: self.addr,
            host: self.host.as_deref(),
            port: self.port,
        }
    }

    /// The object as the audit log shows it.
    pub fn audit_object(&self, resolved: &ResolvedAction) -> Option<AuditObject> {
        let endpoint = |host: String| match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        if let Some(path) = &resolved.path {
            Some(AuditObject {
                kind: ObjectKind::Path,
                value: path.to_string(),
            })
        } else if let Some(binary) = &resolved.binary {
            Some(AuditObject {
                kind: ObjectKind::Binary,
                value: binary.to_string(),
            })
        } else if let Some(addr) = self.addr {
            let host = match addr.to_canonical() {
                IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            };
            Some(AuditObject {
                kind: ObjectKind::Endpoint,
                value: endpoint(host),
            })
        } else {
            self.host.clone().map(|h| AuditObject {
                kind: ObjectKind::Endpoint,
                value: endpoint(h),
            })
        }
    }
}

fn normalize(flag: &str, path: &Path) -> anyhow::Result<NormalizedPath> {
    let absolute =
        std::path::absolute(path).with_context(|| format!("{flag} {}", path.display()))?;
    let text = absolute
        .to_str()
        .ok_or_else(|| anyhow!("{flag} {} is not valid UTF-8", path.display()))?;
    NormalizedPath::new(text).with_context(|| flag.to_owned())
}
