//! The path of one kernel event to its audit row: which action type it is (one table), which
//! agent did it, what the engine says about it, and the record that says what happened.

use std::net::IpAddr;
use std::path::PathBuf;

use secops_common::{CoreAction, RiskLevel, Verdict};

use super::decide::{Actor, Door, KernelCheck, Request};
use crate::api::action::ResolvedAction;
use crate::audit::{AuditObject, NewRecord, ObjectKind, Source};
use crate::enforce::{granted_action, granted_endpoint, CompiledFiles, FileRules, SlotOwner};
use crate::engine::NormalizedPath;
use crate::kernel::{
    split_wait_status, AllowedEgress, EventMeta, FileCount, KernelEvent, LsmDenial, LsmOp, NetHook,
};
use crate::time::Clock;

const AT_FDCWD: i32 = -100;
const IPPROTO_UDP: u16 = 17;

/// The one table from kernel events to action types. UDP is `net:send` whether the socket
/// was connected or not: the egress policy treats all UDP alike (resolvers only).
pub(crate) fn action_of(event: &KernelEvent) -> CoreAction {
    match event {
        KernelEvent::Exec { .. } => CoreAction::ProcExec,
        KernelEvent::Exit { .. } => CoreAction::ProcExit,
        KernelEvent::Unlink { .. } => CoreAction::FsDelete,
        KernelEvent::Rename { .. } => CoreAction::FsRename,
        KernelEvent::Net {
            hook: NetHook::Sendmsg,
            ..
        } => CoreAction::NetSend,
        KernelEvent::Net { protocol, .. } if *protocol == IPPROTO_UDP => CoreAction::NetSend,
        KernelEvent::Net { .. } => CoreAction::NetConnect,
        KernelEvent::Lsm { denial, .. } => lsm_action(denial.op),
        KernelEvent::Granted { key, .. } => granted_action(key),
    }
}

/// The action type of each LSM check. A denied read is a secret read: reads are judged
/// only where a rule protects the file.
fn lsm_action(op: LsmOp) -> CoreAction {
    match op {
        LsmOp::Unlink | LsmOp::Rmdir | LsmOp::RenameTarget => CoreAction::FsDelete,
        LsmOp::RenameSource => CoreAction::FsRename,
        LsmOp::Link => CoreAction::FsLink,
        LsmOp::Truncate => CoreAction::FsTruncate,
        LsmOp::OpenWrite => CoreAction::FsWrite,
        LsmOp::OpenRead => CoreAction::SecretRead,
        LsmOp::Exec | LsmOp::ExecFileless | LsmOp::MmapExec => CoreAction::ProcExec,
        LsmOp::SocketCreate => CoreAction::NetSend,
        LsmOp::SocketConnect | LsmOp::UnixConnect => CoreAction::NetConnect,
        LsmOp::Bpf => CoreAction::SysBpf,
        LsmOp::Ptrace => CoreAction::ProcPtrace,
        LsmOp::Signal => CoreAction::ProcSignal,
        LsmOp::CgroupWrite => CoreAction::SysCgroup,
    }
}

/// The path an LSM event is about, as well as the kernel could tell.
fn lsm_path(denial: &LsmDenial, agent_index: u32, files: &CompiledFiles) -> String {
    let anchor = secops_common::kernel::InodeKey {
        agent_index,
        dev: denial.anchor_dev,
        ino: denial.anchor_ino,
    };
    files.event_path(anchor, denial.depth, &denial.names)
}

/// A path as the acting process meant it: relative paths are taken from its working
/// directory or from the directory fd it passed, read from /proc while it still exists.
fn resolve_path(tgid: u32, dfd: i32, raw: &str) -> Option<String> {
    if raw.starts_with('/') {
        return Some(raw.to_owned());
    }
    let base = if dfd == AT_FDCWD {
        PathBuf::from(format!("/proc/{tgid}/cwd"))
    } else {
        PathBuf::from(format!("/proc/{tgid}/fd/{dfd}"))
    };
    let dir = std::fs::read_link(&base).ok()?;
    Some(dir.join(raw).to_string_lossy().into_owned())
}

/// An event with what only /proc can tell about it, read as soon as the event leaves the
/// ring buffer (a short-lived process is soon gone): the process's executable and the
/// absolute forms of the paths it passed.
pub(crate) struct Captured {
    pub(crate) event: KernelEvent,
    pub(crate) exe: Option<String>,
    /// The exec'd binary, the deleted path, or a rename's source.
    pub(crate) path: Option<String>,
    /// A rename's target.
    pub(crate) target: Option<String>,
}

/// Remembers each process's executable between events; an exec or an exit forgets it.
#[derive(Default)]
pub(crate) struct ExeCache {
    by_tgid: std::collections::HashMap<u32, Option<String>>,
}

impl ExeCache {
    const MAX: usize = 4096;

    fn get(&mut self, tgid: u32) -> Option<String> {
        if self.by_tgid.len() >= Self::MAX {
            self.by_tgid.clear();
        }
        self.by_tgid
            .entry(tgid)
            .or_insert_with(|| {
                std::fs::read_link(format!("/proc/{tgid}/exe"))
                    .ok()
                    .map(|p| p.to_string_lossy().into_owned())
            })
            .clone()
    }

    fn forget(&mut self, tgid: u32) {
        self.by_tgid.remove(&tgid);
    }
}

pub(crate) fn capture(event: KernelEvent, exes: &mut ExeCache) -> Captured {
    let tgid = event.meta().tgid;
    if matches!(event, KernelEvent::Exec { .. }) {
        exes.forget(tgid);
    }
    let exe = exes.get(tgid);
    let (path, target) = match &event {
        KernelEvent::Exec { filename, .. } => (
            Some(resolve_path(tgid, AT_FDCWD, filename).unwrap_or_else(|| filename.clone())),
            None,
        ),
        KernelEvent::Unlink { dfd, path, .. } => (
            Some(resolve_path(tgid, *dfd, path).unwrap_or_else(|| path.clone())),
            None,
        ),
        KernelEvent::Rename {
            olddfd,
            old_path,
            newdfd,
            new_path,
            ..
        } => (
            Some(resolve_path(tgid, *olddfd, old_path).unwrap_or_else(|| old_path.clone())),
            Some(resolve_path(tgid, *newdfd, new_path).unwrap_or_else(|| new_path.clone())),
        ),
        KernelEvent::Exit { .. }
        | KernelEvent::Net { .. }
        | KernelEvent::Lsm { .. }
        | KernelEvent::Granted { .. } => (None, None),
    };
    if matches!(event, KernelEvent::Exit { .. }) {
        exes.forget(tgid);
    }
    Captured {
        event,
        exe,
        path,
        target,
    }
}

fn normalized(path: Option<&str>) -> Option<NormalizedPath> {
    path.and_then(|p| NormalizedPath::new(p).ok())
}

/// The decision request for a kernel event: who did what to which object, and which kernel
/// layer acted. `agent` is the slot the event's cgroup belongs to (name, cgroup id).
pub(crate) fn request_for(
    captured: &Captured,
    agent: Option<(String, u64)>,
    files: &FileRules,
    clock: &Clock,
) -> Request {
    let event = &captured.event;
    let meta = event.meta();
    let mut action = ResolvedAction::core(action_of(event));
    let object = |kind, value: &str| {
        Some(AuditObject {
            kind,
            value: value.to_owned(),
        })
    };
    let captured_path = captured.path.as_deref().unwrap_or("?");
    let (object, detail, check) = match event {
        KernelEvent::Exec {
            argv,
            argv_truncated,
            ..
        } => {
            action.binary = normalized(captured.path.as_deref());
            let more = if *argv_truncated { " ..." } else { "" };
            (
                object(ObjectKind::Binary, captured_path),
                format!("argv: {}{more}", argv.join(" ")),
                KernelCheck::Tracepoint,
            )
        }
        KernelEvent::Exit { status, .. } => {
            let detail = match split_wait_status(*status) {
                (Some(code), _) => format!("exited with status {code}"),
                (_, Some(signal)) => format!("killed by signal {signal}"),
                _ => format!("wait status {status:#x}"),
            };
            (None, detail, KernelCheck::Tracepoint)
        }
        KernelEvent::Unlink { flags, .. } => {
            action.path = normalized(captured.path.as_deref());
            let what = if flags & 0x200 != 0 {
                "rmdir"
            } else {
                "unlink"
            };
            (
                object(ObjectKind::Path, captured_path),
                what.to_owned(),
                KernelCheck::Tracepoint,
            )
        }
        KernelEvent::Rename { .. } => {
            action.path = normalized(captured.path.as_deref());
            (
                object(ObjectKind::Path, captured_path),
                format!("renamed to {}", captured.target.as_deref().unwrap_or("?")),
                KernelCheck::Tracepoint,
            )
        }
        KernelEvent::Net { addr, port, .. } => {
            action.addr = Some(*addr);
            action.port = Some(*port);
            (
                object(ObjectKind::Endpoint, &endpoint(*addr, *port)),
                String::new(),
                KernelCheck::Egress,
            )
        }
        KernelEvent::Lsm { denial, .. } => {
            let (object, detail) = lsm_object(denial, meta, &files.compiled, &mut action);
            let rule = (denial.rule != 0).then(|| files.compiled.rule_id(denial.rule));
            (object, detail, KernelCheck::Lsm { rule })
        }
        KernelEvent::Granted {
            key,
            ticket,
            one_shot,
            ..
        } => {
            let detail = if *one_shot {
                format!("approval ticket {ticket}, one use, now spent")
            } else {
                format!("approval ticket {ticket}")
            };
            let object = match granted_endpoint(key) {
                Some((addr, port)) => {
                    action.addr = Some(addr);
                    action.port = Some(port);
                    object(ObjectKind::Endpoint, &endpoint(addr, port))
                }
                None if granted_action(key) == CoreAction::ProcExec => {
                    action.binary = normalized(captured.path.as_deref());
                    object(ObjectKind::Binary, captured_path)
                }
                None => {
                    action.path = normalized(captured.path.as_deref());
                    object(ObjectKind::Path, captured_path)
                }
            };
            (object, detail, KernelCheck::Granted)
        }
    };
    Request {
        door: Door::Kernel {
            verdict: meta.verdict,
            check,
        },
        at_ns: clock.utc_ns(meta.ts_boot_ns),
        actor: Actor {
            agent: agent.map(|(name, _)| name),
            // The agent's cgroup as the kernel named it.
            cgroup_id: Some(meta.cgroup_id),
            pid: Some(meta.pid),
            tgid: Some(meta.tgid),
            uid: Some(meta.uid),
            comm: Some(meta.comm.clone()),
            exe: captured.exe.clone(),
        },
        action,
        object,
        inode: escalated_inode(event),
        detail,
        note: String::new(),
    }
}

/// The file an LSM escalation was about, as the kernel numbers it: what an approval grants.
fn escalated_inode(event: &KernelEvent) -> Option<(u32, u64)> {
    match event {
        KernelEvent::Lsm { denial, .. } if denial.ino != 0 => Some((denial.dev, denial.ino)),
        _ => None,
    }
}

/// The object and detail of an LSM event; fills the action's path or binary.
fn lsm_object(
    denial: &LsmDenial,
    meta: &EventMeta,
    files: &CompiledFiles,
    action: &mut ResolvedAction,
) -> (Option<AuditObject>, String) {
    let object = |kind, value: String| Some(AuditObject { kind, value });
    let check = denial.op.name();
    match denial.op {
        LsmOp::Bpf => (None, format!("{check} (command {})", denial.signal)),
        LsmOp::Ptrace => (
            object(ObjectKind::Target, format!("pid {}", denial.target_pid)),
            check.to_owned(),
        ),
        LsmOp::Signal => (
            object(ObjectKind::Target, format!("pid {}", denial.target_pid)),
            format!("{check} {}", denial.signal),
        ),
        LsmOp::SocketCreate => (
            None,
            format!(
                "{check}: family {} type {} protocol {}",
                denial.family, denial.sock_type, denial.protocol
            ),
        ),
        _ => {
            let p = lsm_path(denial, meta.agent_index, files);
            if matches!(
                denial.op,
                LsmOp::Exec | LsmOp::ExecFileless | LsmOp::MmapExec
            ) {
                action.binary = normalized(Some(&p));
                (object(ObjectKind::Binary, p), check.to_owned())
            } else {
                action.path = normalized(Some(&p));
                (object(ObjectKind::Path, p), check.to_owned())
            }
        }
    }
}

/// A destination as the audit log writes it (`1.2.3.4:443`, `[::1]:443`).
pub(crate) fn endpoint(addr: IpAddr, port: u16) -> String {
    match addr.to_canonical() {
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        v4 => format!("{v4}:{port}"),
    }
}

/// One record for many allowed connections to one destination.
pub(crate) fn allowed_egress_record(
    allowed: &AllowedEgress,
    agent: Option<&str>,
    cgroup_id: Option<u64>,
    clock: &Clock,
) -> NewRecord {
    let action = if allowed.protocol == IPPROTO_UDP {
        CoreAction::NetSend
    } else {
        CoreAction::NetConnect
    };
    let reason = format!(
        "{} connection(s) allowed by the egress allowlist between {} and {} (aggregated)",
        allowed.count,
        crate::time::format_ns(clock.utc_ns(allowed.first_ns)),
        crate::time::format_ns(clock.utc_ns(allowed.last_ns))
    );
    NewRecord {
        agent: agent.map(str::to_owned),
        cgroup_id,
        object: Some(AuditObject {
            kind: ObjectKind::Endpoint,
            value: endpoint(allowed.addr, allowed.port),
        }),
        rule_id: agent.map(|a| format!("egress.{a}")),
        ..NewRecord::new(
            clock.utc_ns(allowed.last_ns),
            action.as_str(),
            Verdict::Allow,
            RiskLevel::Low,
            reason,
            Source::Kernel,
        )
    }
}

/// One record for many deletes (or renames) one low-risk rule allowed an agent, counted in
/// the kernel instead of reported one by one, between two drains (`since_ns`..`now_ns`, UTC).
pub(crate) fn file_count_record(
    counted: &FileCount,
    owner: Option<&SlotOwner>,
    cgroup_id: Option<u64>,
    since_ns: i64,
    now_ns: i64,
) -> NewRecord {
    let action = if counted.op == secops_common::kernel::OP_RENAME {
        CoreAction::FsRename
    } else {
        CoreAction::FsDelete
    };
    let rule = owner.map_or_else(
        || format!("(unknown: counter slot {})", counted.slot),
        |o| o.rule.clone(),
    );
    let reason = format!(
        "{} {} allowed by BPF LSM under low-risk rule {rule} between {} and {} (counted, not itemized)",
        counted.count,
        action.as_str(),
        crate::time::format_ns(since_ns),
        crate::time::format_ns(now_ns)
    );
    NewRecord {
        agent: owner.map(|o| o.agent.clone()),
        cgroup_id,
        rule_id: owner.map(|o| o.rule.clone()),
        ..NewRecord::new(
            now_ns,
            action.as_str(),
            Verdict::Allow,
            RiskLevel::Low,
            reason,
            Source::Kernel,
        )
    }
}

/// A record saying that `count` events of one kind never reached the daemon.
pub(crate) fn lost_events_record(
    kind_action: CoreAction,
    count: u64,
    clock_now_ns: i64,
) -> NewRecord {
    let reason = format!(
        "{count} {} event(s) lost: the ring buffer was full",
        kind_action.as_str()
    );
    NewRecord {
        rule_id: Some("kernel.events-lost".to_owned()),
        ..NewRecord::new(
            clock_now_ns,
            kind_action.as_str(),
            Verdict::Allow,
            RiskLevel::High,
            reason,
            Source::Kernel,
        )
    }
}

/// The action type of a kernel event kind (`secops_common::kernel::EVENT_*`), for lost-event
/// records.
pub(crate) fn action_of_kind(kind: u32) -> Option<CoreAction> {
    use secops_common::kernel::*;
    match kind {
        EVENT_EXEC => Some(CoreAction::ProcExec),
        EVENT_EXIT => Some(CoreAction::ProcExit),
        EVENT_UNLINK => Some(CoreAction::FsDelete),
        EVENT_RENAME => Some(CoreAction::FsRename),
        EVENT_NET => Some(CoreAction::NetConnect),
        _ => None,
    }
}
