//! The path of one kernel event to its audit row: which action type it is (one table), which
//! agent did it, what the engine says about it, and the record that says what happened.

use std::net::IpAddr;
use std::path::PathBuf;

use secops_common::kernel::{
    grant_sub, kernel_action, EVENT_EXEC, EVENT_EXIT, EVENT_GRANT, EVENT_LSM, EVENT_NET,
    EVENT_RENAME, EVENT_UNLINK,
};
use secops_common::{CoreAction, RiskLevel, Verdict};

use super::decide::{Actor, Door, KernelCheck, Request};
use crate::api::action::ResolvedAction;
use crate::audit::{AuditObject, NewRecord, ObjectKind, Source};
use crate::enforce::{granted_endpoint, CompiledFiles, FileRules, SlotOwner};
use crate::engine::NormalizedPath;
use crate::kernel::{
    split_wait_status, AllowedEgress, EventMeta, FileCount, KernelEvent, LsmDenial, LsmOp,
};
use crate::time::Clock;

const AT_FDCWD: i32 = -100;

/// The event's action type, by the one table from what the kernel reports to action types
/// ([`kernel_action`]), which lost events are audited by too.
pub(crate) fn action_of(event: &KernelEvent) -> CoreAction {
    let (kind, sub) = kind_and_sub(event);
    // Every event this build parses is in the table (tested); a gap would be an unknown
    // check, which is a program's, so it is recorded as the BPF layer's.
    kernel_action(kind, sub).unwrap_or(CoreAction::SysBpf)
}

/// The (kind, sub-kind) pair the kernel counts an event of this shape under.
fn kind_and_sub(event: &KernelEvent) -> (u32, u32) {
    match event {
        KernelEvent::Exec { .. } => (EVENT_EXEC, 0),
        KernelEvent::Exit { .. } => (EVENT_EXIT, 0),
        KernelEvent::Unlink { .. } => (EVENT_UNLINK, 0),
        KernelEvent::Rename { .. } => (EVENT_RENAME, 0),
        KernelEvent::Net { protocol, .. } => (EVENT_NET, u32::from(*protocol)),
        KernelEvent::Lsm { denial, .. } => (EVENT_LSM, denial.op.code()),
        KernelEvent::Granted { key, .. } => (EVENT_GRANT, grant_sub(key)),
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
        KernelEvent::Net {
            addr,
            port,
            dns_listener,
            ..
        } => {
            action.addr = Some(*addr);
            action.port = Some(*port);
            let check = if *dns_listener {
                KernelCheck::DnsListener
            } else {
                KernelCheck::Egress
            };
            (
                object(ObjectKind::Endpoint, &endpoint(*addr, *port)),
                String::new(),
                check,
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
                None if kernel_action(EVENT_GRANT, grant_sub(key))
                    == Some(CoreAction::ProcExec) =>
                {
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
        LsmOp::ModuleRequest => (
            None,
            format!(
                "{check} {}",
                denial.names.first().map_or("?", String::as_str)
            ),
        ),
        LsmOp::SocketCreate => (
            None,
            format!(
                "{check}: family {} type {} protocol {}",
                denial.family, denial.sock_type, denial.protocol
            ),
        ),
        // An unmount, a buffer loaded into the kernel: nothing with a name to point at.
        _ if denial.names.is_empty() && denial.anchor_ino == 0 && denial.ino == 0 => {
            (None, check.to_owned())
        }
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
    let action =
        kernel_action(EVENT_NET, u32::from(allowed.protocol)).unwrap_or(CoreAction::NetConnect);
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

/// A record saying that `count` events of one (kind, sub-kind) never reached the daemon.
pub(crate) fn lost_events_record(kind: u32, sub: u32, count: u64, clock_now_ns: i64) -> NewRecord {
    let (kind_action, reason) = match kernel_action(kind, sub) {
        Some(action) => (
            action,
            format!(
                "{count} {} event(s) lost: the ring buffer was full",
                action.as_str()
            ),
        ),
        None => (
            CoreAction::SysBpf,
            format!(
                "{count} event(s) of kernel event kind {kind}/{sub}, which this daemon does not \
                 know, lost: the ring buffer was full"
            ),
        ),
    };
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::path::PathBuf;
    use std::sync::Arc;

    use secops_common::kernel::{GrantKey, InodeKey, GRANT_FILE, OP_EXEC};

    use super::*;
    use crate::enforce::CountSlots;

    fn meta(verdict: Verdict) -> EventMeta {
        EventMeta {
            agent_index: 2,
            cgroup_id: 500,
            ts_boot_ns: 1_000,
            pid: 11,
            tgid: 10,
            uid: 1000,
            verdict,
            comm: "bash".into(),
            counted: None,
        }
    }

    fn captured(event: KernelEvent, path: Option<&str>) -> Captured {
        Captured {
            event,
            exe: Some("/usr/bin/bash".into()),
            path: path.map(str::to_owned),
            target: None,
        }
    }

    /// File rules with one entry for /srv/ws (rule 1 = `ws.files`).
    fn files() -> FileRules {
        let anchor = InodeKey {
            agent_index: 2,
            dev: 8,
            ino: 100,
        };
        FileRules {
            compiled: CompiledFiles {
                entries: BTreeMap::new(),
                paths: HashMap::from([(anchor, PathBuf::from("/srv/ws"))]),
                rule_ids: vec![Arc::from("secops.self-protection"), Arc::from("ws.files")],
                ..CompiledFiles::default()
            },
            count_slots: CountSlots::default(),
        }
    }

    fn request(event: KernelEvent, path: Option<&str>) -> Request {
        request_for(
            &captured(event, path),
            Some(("coder".into(), 500)),
            &files(),
            &Clock::now(),
        )
    }

    fn kernel_door(r: &Request) -> (Verdict, &KernelCheck) {
        match &r.door {
            Door::Kernel { verdict, check } => (*verdict, check),
            other => panic!("not the kernel's door: {other:?}"),
        }
    }

    #[test]
    fn tracepoint_events_name_the_agent_the_object_and_what_was_seen() {
        let r = request(
            KernelEvent::Exec {
                meta: meta(Verdict::Allow),
                filename: "ls".into(),
                argv: vec!["ls".into(), "-l".into()],
                argv_truncated: true,
            },
            Some("/usr/bin/ls"),
        );
        assert!(matches!(
            kernel_door(&r),
            (Verdict::Allow, KernelCheck::Tracepoint)
        ));
        assert_eq!(r.action.action_name, "proc:exec");
        assert_eq!(
            r.action.binary.as_ref().map(|b| b.to_string()).as_deref(),
            Some("/usr/bin/ls")
        );
        assert_eq!(r.object.as_ref().map(|o| o.kind), Some(ObjectKind::Binary));
        assert_eq!(r.detail, "argv: ls -l ...");
        assert_eq!(r.actor.agent.as_deref(), Some("coder"));
        assert_eq!(
            (r.actor.cgroup_id, r.actor.pid, r.actor.tgid, r.actor.uid),
            (Some(500), Some(11), Some(10), Some(1000))
        );
        assert_eq!(r.actor.exe.as_deref(), Some("/usr/bin/bash"));

        let rmdir = request(
            KernelEvent::Unlink {
                meta: meta(Verdict::Allow),
                dfd: -100,
                path: "d".into(),
                flags: 0x200,
            },
            Some("/srv/ws/d"),
        );
        assert_eq!(rmdir.action.action_name, "fs:delete");
        assert_eq!(rmdir.detail, "rmdir");
    }

    #[test]
    fn lsm_events_carry_the_kernel_verdict_the_entry_rule_and_the_inode_to_grant() {
        let r = request(
            KernelEvent::Lsm {
                meta: meta(Verdict::Escalate),
                denial: LsmDenial {
                    op: LsmOp::Unlink,
                    rule: 1,
                    dev: 8,
                    ino: 123,
                    anchor_dev: 8,
                    anchor_ino: 100,
                    depth: 2,
                    names: vec!["f".into(), "sub".into()],
                    target_pid: 0,
                    signal: 0,
                    family: 0,
                    sock_type: 0,
                    protocol: 0,
                },
            },
            None,
        );
        let (verdict, check) = kernel_door(&r);
        assert_eq!(verdict, Verdict::Escalate);
        assert!(matches!(check, KernelCheck::Lsm { rule: Some(rule) } if &**rule == "ws.files"));
        assert_eq!(
            r.object.as_ref().map(|o| o.value.as_str()),
            Some("/srv/ws/sub/f"),
            "the anchor's path and the names below it"
        );
        assert_eq!(r.action.action_name, "fs:delete");
        assert_eq!(r.inode, Some((8, 123)));
        assert_eq!(r.detail, "unlink");
    }

    #[test]
    fn egress_denials_and_grant_uses_are_their_own_checks() {
        let udp = request(
            KernelEvent::Net {
                meta: meta(Verdict::Deny),
                hook: crate::kernel::NetHook::Sendmsg,
                protocol: 17,
                addr: "10.0.0.1".parse().unwrap(),
                port: 53,
                dns_listener: false,
            },
            None,
        );
        assert!(matches!(
            kernel_door(&udp),
            (Verdict::Deny, KernelCheck::Egress)
        ));
        assert_eq!(udp.action.action_name, "net:send");
        assert_eq!(udp.object.as_ref().unwrap().value, "10.0.0.1:53");
        let granted = request(
            KernelEvent::Granted {
                meta: meta(Verdict::Allow),
                ticket: 9,
                key: GrantKey {
                    kind: GRANT_FILE,
                    op: OP_EXEC as u8,
                    ..GrantKey::default()
                },
                one_shot: true,
                check: Some(LsmOp::Exec),
            },
            Some("/opt/tool"),
        );
        assert!(matches!(kernel_door(&granted), (_, KernelCheck::Granted)));
        assert_eq!(granted.action.action_name, "proc:exec");
        assert_eq!(granted.object.as_ref().unwrap().kind, ObjectKind::Binary);
        assert_eq!(granted.detail, "approval ticket 9, one use, now spent");
    }

    #[test]
    fn lost_events_are_audited_as_the_action_they_were() {
        let r = lost_events_record(EVENT_LSM, LsmOp::OpenRead.code(), 4, 0);
        assert_eq!(r.action, "secret:read");
        assert_eq!(
            r.reason,
            "4 secret:read event(s) lost: the ring buffer was full"
        );
        let grant = lost_events_record(EVENT_GRANT, 16 + 2, 1, 0);
        assert_eq!(grant.action, "net:send");
        let unknown = lost_events_record(EVENT_LSM, 31, 2, 0);
        assert_eq!(unknown.action, "sys:bpf");
        assert!(unknown.reason.contains("kind 6/31"));
    }
}
