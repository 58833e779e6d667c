//! Approvals in the kernel's terms. An approved ticket becomes entries in `secops_grants` for
//! exactly that agent, object and operation, with the approval's expiry on the boot clock; the
//! BPF programs check the expiry themselves, so the same action after it is denied again
//! without the daemon doing anything. Files are named by (dev, inode): the one the kernel reported
//! or the daemon resolved when the escalation happened, so a path that now leads elsewhere
//! does not inherit the approval.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use secops_common::kernel::{
    Grant, GrantKey, AF_INET, GRANT_FILE, GRANT_NET, GRANT_ONE_SHOT, OP_CONNECT, OP_DELETE,
    OP_EXEC, OP_LINK, OP_READ, OP_RENAME, OP_TRUNCATE, OP_WRITE, PROTO_TCP, PROTO_UDP,
};
use secops_common::CoreAction;

use super::inode::kernel_inode;
use crate::approvals::Ticket;
use crate::time::Clock;

/// Why an approval has no kernel part (it still lets the API path through).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum NoKernelGrant {
    #[error("{0} is not an action the kernel enforces")]
    NotKernel(String),
    #[error("{0:?} is not an address and port the kernel can match (a host name is matched only on the API path)")]
    NotAnEndpoint(String),
    #[error("{path}: {why}")]
    Unresolved { path: String, why: String },
}

/// The file operation a file action type is, for the kernel.
fn file_op(action: CoreAction) -> Option<usize> {
    Some(match action {
        CoreAction::FsDelete => OP_DELETE,
        CoreAction::FsRename => OP_RENAME,
        CoreAction::FsLink => OP_LINK,
        CoreAction::FsTruncate => OP_TRUNCATE,
        CoreAction::FsWrite | CoreAction::FsCreate => OP_WRITE,
        CoreAction::FsRead | CoreAction::SecretRead => OP_READ,
        CoreAction::ProcExec => OP_EXEC,
        _ => return None,
    })
}

/// Whether the kernel acts on the path itself rather than on what a symlink there leads to.
fn names_the_link(op: usize) -> bool {
    matches!(op, OP_DELETE | OP_RENAME | OP_LINK)
}

/// The (dev, inode) of `path` as the kernel numbers them.
fn resolve(path: &str, op: usize) -> Result<(u32, u64), NoKernelGrant> {
    let meta = if names_the_link(op) {
        std::fs::symlink_metadata(Path::new(path))
    } else {
        std::fs::metadata(Path::new(path))
    };
    let meta = meta.map_err(|e| NoKernelGrant::Unresolved {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    Ok(kernel_inode(&meta))
}

fn core_action(name: &str) -> Option<CoreAction> {
    CoreAction::ALL.iter().copied().find(|c| c.as_str() == name)
}

/// The grant keys an approval of `ticket` installs for the agent with `agent_index`.
pub(crate) fn grant_keys(
    ticket: &Ticket,
    agent_index: u32,
) -> Result<Vec<GrantKey>, NoKernelGrant> {
    let not_kernel = || NoKernelGrant::NotKernel(ticket.action.clone());
    let action = core_action(&ticket.action).ok_or_else(not_kernel)?;
    let file = |op: usize| -> Result<Vec<GrantKey>, NoKernelGrant> {
        let (dev, ino) = match ticket.object_inode {
            Some(inode) => inode,
            None => resolve(&ticket.object, op)?,
        };
        Ok(vec![GrantKey {
            agent_index,
            kind: GRANT_FILE,
            op: op as u8,
            dev,
            ino,
            ..GrantKey::default()
        }])
    };
    match action {
        CoreAction::NetConnect | CoreAction::NetSend => {
            if ticket.object.starts_with('/') {
                // An AF_UNIX socket file.
                return file(OP_CONNECT);
            }
            let endpoint: SocketAddr = ticket
                .object
                .parse()
                .map_err(|_| NoKernelGrant::NotAnEndpoint(ticket.object.clone()))?;
            let bit = if action == CoreAction::NetSend {
                PROTO_UDP
            } else {
                PROTO_TCP
            };
            Ok(vec![net_key(agent_index, bit, endpoint)])
        }
        other => file(file_op(other).ok_or_else(not_kernel)?),
    }
}

fn net_key(agent_index: u32, bit: u8, endpoint: SocketAddr) -> GrantKey {
    let (family, addr) = super::kernel_addr(endpoint.ip());
    GrantKey {
        agent_index,
        kind: GRANT_NET,
        op: bit,
        port: endpoint.port(),
        family,
        addr,
        ..GrantKey::default()
    }
}

/// The grant value for an approved ticket: its expiry on the boot clock.
pub(crate) fn grant_value(ticket: &Ticket, clock: &Clock) -> Grant {
    Grant {
        expires_ns: clock.boot_ns(ticket.grant_until_ns.unwrap_or(0)),
        ticket: ticket.id,
        flags: if ticket.grant_once { GRANT_ONE_SHOT } else { 0 },
        pad: 0,
    }
}

/// The destination of a network grant, as the audit log writes endpoints.
pub(crate) fn granted_endpoint(key: &GrantKey) -> Option<(IpAddr, u16)> {
    if key.kind != GRANT_NET {
        return None;
    }
    let addr = if key.family == AF_INET {
        IpAddr::from([key.addr[0], key.addr[1], key.addr[2], key.addr[3]])
    } else {
        IpAddr::from(key.addr)
    };
    Some((addr, key.port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approvals::TicketStatus;
    use secops_common::RiskLevel;
    use std::os::unix::fs::MetadataExt;

    fn ticket(action: &str, object: &str) -> Ticket {
        Ticket {
            id: 7,
            agent: "web".into(),
            action: action.into(),
            object: object.into(),
            risk: RiskLevel::High,
            rule_id: None,
            reason: String::new(),
            source: crate::audit::Source::Kernel,
            status: TicketStatus::Approved,
            first_seen_ns: 0,
            last_seen_ns: 0,
            count: 1,
            decided_by: None,
            decided_at_ns: None,
            decision_reason: None,
            grant_until_ns: Some(0),
            grant_once: false,
            object_inode: None,
            command: None,
        }
    }

    #[test]
    fn endpoints_become_net_keys_by_protocol() {
        let keys = grant_keys(&ticket("net:connect", "127.0.0.1:8080"), 3).unwrap();
        assert_eq!(keys.len(), 1);
        let k = keys[0];
        assert_eq!(
            (k.kind, k.op, k.port, k.family),
            (GRANT_NET, PROTO_TCP, 8080, AF_INET)
        );
        assert_eq!(&k.addr[..4], &[127, 0, 0, 1]);
        assert!(k.addr[4..].iter().all(|&b| b == 0), "unused bytes are zero");
        let mapped = grant_keys(&ticket("net:send", "[::ffff:10.0.0.1]:53"), 3).unwrap();
        assert_eq!((mapped[0].op, mapped[0].family), (PROTO_UDP, AF_INET));
        let v6 = grant_keys(&ticket("net:connect", "[2001:db8::1]:443"), 3).unwrap();
        assert_eq!(v6[0].family, secops_common::kernel::AF_INET6);
        assert_eq!(
            granted_endpoint(&v6[0]),
            Some(("2001:db8::1".parse().unwrap(), 443))
        );
    }

    #[test]
    fn host_names_and_other_actions_have_no_kernel_grant() {
        assert!(matches!(
            grant_keys(&ticket("net:connect", "example.com:443"), 0),
            Err(NoKernelGrant::NotAnEndpoint(_))
        ));
        assert!(matches!(
            grant_keys(&ticket("vcs:force_push", "main"), 0),
            Err(NoKernelGrant::NotKernel(_))
        ));
        assert!(matches!(
            grant_keys(&ticket("fs:delete", "/nonexistent/secops-grant-test"), 0),
            Err(NoKernelGrant::Unresolved { .. })
        ));
    }

    #[test]
    fn files_use_the_recorded_inode_or_resolve_the_path() {
        let mut t = ticket("fs:delete", "/whatever");
        t.object_inode = Some((5, 42));
        let k = grant_keys(&t, 1).unwrap()[0];
        assert_eq!(
            (k.kind, usize::from(k.op), k.dev, k.ino),
            (GRANT_FILE, OP_DELETE, 5, 42)
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let k = grant_keys(&ticket("proc:exec", file.to_str().unwrap()), 1).unwrap()[0];
        assert_eq!(k.ino, std::fs::metadata(&file).unwrap().ino());
        assert_eq!(
            secops_common::kernel::kernel_action(
                secops_common::kernel::EVENT_GRANT,
                secops_common::kernel::grant_sub(&k)
            ),
            Some(CoreAction::ProcExec)
        );
    }
}
