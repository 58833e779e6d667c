//! An action as callers describe it (the API's [`ActionObject`], the CLI's flags) turned into
//! what the engine decides on and what the audit log shows. One translation for both doors.

use std::net::IpAddr;
use std::path::Path;

use secops_common::{ActionId, ActionTypeError, CoreAction};

use super::types::ActionObject;
use crate::audit::{AuditObject, ObjectKind};
use crate::engine::{ActionRequest, AgentIdx, Engine, NormalizedPath, PathError};

/// The action's values, owned, in the shapes the engine takes.
#[derive(Clone, Debug)]
pub struct ResolvedAction {
    pub action: ActionId,
    pub action_name: String,
    pub path: Option<NormalizedPath>,
    pub binary: Option<NormalizedPath>,
    pub addr: Option<IpAddr>,
    pub host: Option<String>,
    pub port: Option<u16>,
}

/// Why an action description cannot be decided on. `field` names the offending field as the
/// caller wrote it (`action`, `object.path`, `--path`, ...).
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("{field}: {source}")]
    Action {
        field: &'static str,
        source: ActionTypeError,
    },
    #[error("{field}: {source}")]
    Path {
        field: &'static str,
        source: PathError,
    },
}

/// Field names as each door spells them.
pub struct FieldNames {
    pub action: &'static str,
    pub path: &'static str,
    pub binary: &'static str,
}

pub const API_FIELDS: FieldNames = FieldNames {
    action: "action",
    path: "object.path",
    binary: "object.binary",
};

impl ResolvedAction {
    /// Resolves `action` against the engine's registry and normalizes the object's paths.
    /// Paths must be absolute: relative ones are the caller's to resolve.
    pub fn new(
        engine: &Engine,
        action: &str,
        object: &ActionObject,
        fields: &FieldNames,
    ) -> Result<ResolvedAction, ActionError> {
        let (id, action_type) =
            engine
                .policy()
                .registry
                .resolve(action)
                .map_err(|source| ActionError::Action {
                    field: fields.action,
                    source,
                })?;
        let normalize = |field: &'static str, p: &Option<String>| {
            p.as_deref()
                .map(NormalizedPath::new)
                .transpose()
                .map_err(|source| ActionError::Path { field, source })
        };
        Ok(ResolvedAction {
            action: id,
            action_name: action_type.to_string(),
            path: normalize(fields.path, &object.path)?,
            binary: normalize(fields.binary, &object.binary)?,
            addr: object.addr,
            host: object.host.clone(),
            port: object.port,
        })
    }

    /// A core action with no object yet; the door fills in what it knows.
    pub fn core(action: CoreAction) -> ResolvedAction {
        ResolvedAction {
            action: ActionId(action as u16),
            action_name: action.as_str().to_owned(),
            path: None,
            binary: None,
            addr: None,
            host: None,
            port: None,
        }
    }

    /// An action known only by its name, for records whose decision the engine does not make
    /// (a ticket decided by a person): the id is the name's in the core table, or one no
    /// registry gives for a custom type (the engine escalates such an id, should it ever be
    /// asked).
    pub fn named(name: &str) -> ResolvedAction {
        const UNREGISTERED: ActionId = ActionId(u16::MAX);
        let core = CoreAction::ALL.iter().find(|c| c.as_str() == name);
        ResolvedAction {
            action: core.map_or(UNREGISTERED, |c| ActionId(*c as u16)),
            action_name: name.to_owned(),
            ..ResolvedAction::core(CoreAction::ToolCall)
        }
    }

    pub fn request(&self, agent: Option<AgentIdx>) -> ActionRequest<'_> {
        ActionRequest {
            agent,
            action: self.action,
            path: self.path.as_ref(),
            binary: self.binary.as_ref(),
            addr: self.addr,
            host: self.host.as_deref(),
            port: self.port,
        }
    }

    /// The object as the audit log shows it: the path, else the binary, else the endpoint.
    pub fn audit_object(&self) -> Option<AuditObject> {
        let endpoint = |host: String| match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        let (kind, value) = if let Some(path) = &self.path {
            (ObjectKind::Path, path.to_string())
        } else if let Some(binary) = &self.binary {
            (ObjectKind::Binary, binary.to_string())
        } else if let Some(addr) = self.addr {
            let host = match addr.to_canonical() {
                IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            };
            (ObjectKind::Endpoint, endpoint(host))
        } else {
            (ObjectKind::Endpoint, endpoint(self.host.clone()?))
        };
        Some(AuditObject { kind, value })
    }
}

/// A path given on the command line, made absolute against the current directory.
pub fn absolute_path(flag: &str, path: &Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let absolute =
        std::path::absolute(path).with_context(|| format!("{flag} {}", path.display()))?;
    absolute
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("{flag} {} is not valid UTF-8", path.display()))
}
