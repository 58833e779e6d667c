//! The kernel's own Landlock denial records (ABI 7) as audit records: every open, read,
//! truncate, link, create, exec, signal and socket connect an agent's ruleset refused.
//!
//! Landlock logs a denial to the kernel audit subsystem only while `audit_enabled` is on
//! (`security/landlock/audit.c`: it still counts the denial when it is off). The daemon
//! listens in the read-only multicast group, so it never becomes, or displaces, the audit
//! daemon. Turning audit on is host-wide (every process started afterwards gets an audit
//! context; without auditd the kernel prints records to its log), so secops does it only
//! when the operator says so (`secops daemon --enable-kernel-audit`), says so in
//! `secops status`, and turns it back off at stop if it turned it on.
//!
//! Records name a Landlock domain; the domain's first denial also names the task that
//! created it (`landlock_restrict_self`). That task is `secops run` itself, whose pid the
//! daemon learnt when it registered: domain -> agent. Domains of anyone else (other
//! sandboxes on the host, an agent's own nested ruleset) are not secops' refusals and are
//! left alone.

mod records;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use secops_common::{CoreAction, Verdict};

use self::records::{action_candidates, parse, Record};
use super::decide::{decide, Actor, AuditMode, Door, KernelCheck, LandlockSeen, Request};
use super::options::DaemonOptions;
use super::state::Shared;
use crate::api::action::ResolvedAction;
use crate::api::CapabilityStatus;
use crate::audit::{AuditObject, AuditWriter, ObjectKind};
use crate::engine::NormalizedPath;
use crate::kernel::audit_netlink::{self, AuditListener, RawRecord};
use crate::kernel::Family;
use crate::policy::Layer;

/// The key of this report in `secops status` (not a layer a policy can require).
const KEY: &str = "landlock-audit";
/// The first Landlock ABI whose kernel logs denials.
const AUDIT_ABI: i32 = 7;
/// How long a denial waits for the rest of its event (its SYSCALL record) and, for a
/// domain's first denial, the domain record naming its creator.
const ASSEMBLY: Duration = Duration::from_millis(250);
/// How long the kernel's record of an unlink or rename waits for the file tracepoint's of
/// the same call (which has the whole path).
const TRACEPOINT_WAIT: Duration = Duration::from_secs(1);

/// The listener, ready before any agent starts, and whether secops turned audit on.
pub(crate) struct KernelAudit {
    listener: AuditListener,
    enabled_by_secops: bool,
    pin_dir: PathBuf,
}

/// Says in `capabilities` which Landlock refusals are audited here and why, and joins the
/// kernel's records where they exist (turning audit on only with `--enable-kernel-audit`).
pub(crate) fn start(
    options: &DaemonOptions,
    capabilities: &mut Vec<CapabilityStatus>,
) -> Option<KernelAudit> {
    let landlock_active = capabilities
        .iter()
        .any(|c| c.key == Layer::Landlock.as_str() && c.active);
    let (audit, active, detail) = if !landlock_active {
        (
            None,
            false,
            "no Landlock refusals to audit: the Landlock layer is not enforcing here".to_owned(),
        )
    } else {
        match join(
            options,
            crate::launcher::landlock::kernel_abi().unwrap_or(0),
        ) {
            Ok((audit, detail)) => (Some(audit), true, detail),
            Err(why) => (
                None,
                false,
                format!(
                    "only deletes and renames refused by Landlock are audited (file \
                     tracepoints, judged by the agent's ruleset); refused opens, reads, \
                     truncates, links, creates, execs, signals and abstract-socket connects are \
                     NOT audited: {why}"
                ),
            ),
        }
    };
    if active {
        tracing::info!(layer = KEY, "landlock refusal audit: {detail}");
    } else {
        tracing::warn!(layer = KEY, "landlock refusal audit: {detail}");
    }
    capabilities.push(CapabilityStatus {
        name: "landlock refusal audit".to_owned(),
        key: KEY.to_owned(),
        active,
        detail,
    });
    audit
}

fn join(options: &DaemonOptions, abi: i32) -> Result<(KernelAudit, String), String> {
    if abi < AUDIT_ABI {
        return Err(format!(
            "the kernel logs Landlock denials from ABI {AUDIT_ABI} (Linux 6.15); this one has ABI {abi}"
        ));
    }
    let status = audit_netlink::status().map_err(|e| e.to_string())?;
    let mut enabled_by_secops = false;
    let how = match status.enabled {
        0 if !options.enable_kernel_audit => {
            return Err(
                "the kernel's audit is off (audit_enabled=0), and Landlock logs nothing \
                        then; `secops daemon --enable-kernel-audit` turns it on (host-wide), or \
                        run auditd"
                    .to_owned(),
            )
        }
        0 => {
            audit_netlink::set_enabled(1).map_err(|e| e.to_string())?;
            enabled_by_secops = true;
            // A daemon that dies without stopping leaves this for `secops teardown`.
            if let Err(e) = std::fs::write(marker(&options.pin_dir), b"audit_enabled=1\n") {
                tracing::warn!("writing the kernel audit marker: {e}");
            }
            "kernel audit turned on by secops at start (--enable-kernel-audit; host-wide: \
             processes started since get audit contexts, and without auditd the kernel prints \
             each record to its log; turned off again at stop)"
                .to_owned()
        }
        _ => format!(
            "kernel audit on (audit_enabled={}, {})",
            status.enabled,
            match status.auditd_pid {
                0 => "no auditd".to_owned(),
                pid => format!("auditd pid {pid}, undisturbed"),
            }
        ),
    };
    let listener = match AuditListener::join(Duration::from_millis(100)) {
        Ok(listener) => listener,
        Err(e) => {
            if enabled_by_secops {
                undo_enable(&options.pin_dir);
            }
            return Err(e.to_string());
        }
    };
    Ok((
        KernelAudit {
            listener,
            enabled_by_secops,
            pin_dir: options.pin_dir.clone(),
        },
        format!(
            "every refusal of an agent's Landlock ruleset is audited from the kernel's own \
             records (ABI {abi}, read from the audit multicast group); {how}; backlog limit \
             {}, records lost so far {}",
            status.backlog_limit, status.lost
        ),
    ))
}

/// The thread reading the records, until [`Reader::stop`].
pub(crate) struct Reader {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    enabled_by_secops: bool,
    pin_dir: PathBuf,
}

/// Where a daemon that turned audit on says so, for a `secops teardown` after it died.
fn marker(pin_dir: &Path) -> PathBuf {
    let name = pin_dir.display().to_string().replace('/', "-");
    PathBuf::from(format!("/run/secops-kernel-audit{name}"))
}

/// Turns the kernel's audit back off if the daemon of `pin_dir` turned it on, and nobody
/// (auditd) took it over since.
fn undo_enable(pin_dir: &Path) {
    match audit_netlink::status() {
        Ok(s) if s.enabled == 1 && s.auditd_pid == 0 => match audit_netlink::set_enabled(0) {
            Ok(()) => tracing::info!("kernel audit turned back off (secops had turned it on)"),
            Err(e) => tracing::warn!("turning kernel audit back off: {e}"),
        },
        Ok(_) => tracing::info!("kernel audit left on: auditd runs, or it is locked"),
        Err(e) => tracing::warn!("kernel audit status: {e}"),
    }
    let _ = std::fs::remove_file(marker(pin_dir));
}

/// For `secops teardown`: what a daemon that died left turned on.
pub(crate) fn teardown(pin_dir: &Path) {
    if marker(pin_dir).exists() {
        undo_enable(pin_dir);
    }
}

impl KernelAudit {
    pub(crate) fn spawn(
        self,
        shared: Arc<Shared>,
        writer: Arc<AuditWriter>,
    ) -> anyhow::Result<Reader> {
        shared.landlock.reading_kernel_records();
        let stop = Arc::new(AtomicBool::new(false));
        let (enabled_by_secops, pin_dir) = (self.enabled_by_secops, self.pin_dir);
        let flag = stop.clone();
        let mut listener = self.listener;
        let thread = std::thread::Builder::new()
            .name("secops-landlock-audit".into())
            .spawn(move || {
                let mut assembly = Assembly::default();
                let mut waiting: Vec<Denial> = Vec::new();
                let audit = |denials: Vec<Denial>, waiting: &mut Vec<Denial>| {
                    for denial in denials {
                        waiting.extend(audit_denial(&shared, &writer, denial));
                    }
                };
                loop {
                    let stopping = flag.load(Ordering::SeqCst);
                    match listener.recv() {
                        Ok(raw) => {
                            let done = assembly.add(&shared, raw);
                            audit(done, &mut waiting);
                        }
                        Err(e) => {
                            tracing::error!("reading the kernel's audit records: {e}");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                    let now = if stopping {
                        Instant::now() + ASSEMBLY
                    } else {
                        Instant::now()
                    };
                    let due = assembly.due(&shared, now);
                    audit(due, &mut waiting);
                    let again = std::mem::take(&mut waiting);
                    audit(again, &mut waiting);
                    if stopping && waiting.is_empty() {
                        return;
                    }
                }
            })
            .context("starting the Landlock audit reader")?;
        Ok(Reader {
            stop,
            thread: Some(thread),
            enabled_by_secops,
            pin_dir,
        })
    }
}

impl Reader {
    /// Stops reading (after what is waiting), and turns audit off again if secops turned it
    /// on and nobody (auditd) took it over since.
    pub(crate) fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if self.enabled_by_secops {
            undo_enable(&self.pin_dir);
        }
    }
}

/// A denial with the rest of its event.
struct Denial {
    /// When the kernel's record came.
    since: Instant,
    agent: String,
    access: Record,
    syscall: Option<Record>,
}

/// Records by event (serial) until each is complete: its end-of-event record, or
/// [`ASSEMBLY`] passed (a task without an audit context sends only the denial).
#[derive(Default)]
struct Assembly {
    pending: HashMap<u64, Pending>,
}

struct Pending {
    since: Instant,
    access: Vec<Record>,
    syscall: Option<Record>,
}

impl Assembly {
    /// Takes a datagram's records; returns the events it completed.
    fn add(&mut self, shared: &Shared, raw: Vec<RawRecord>) -> Vec<Denial> {
        let mut done = Vec::new();
        for RawRecord { kind, text } in raw {
            let Some(record) = parse(&text) else { continue };
            match kind {
                records::LANDLOCK_DOMAIN => {
                    match (record.get("status"), record.domain()) {
                        (Some("allocated"), Some(domain)) => {
                            if let Some(pid) = record.number("pid") {
                                shared.landlock.domain_created(domain, pid as u32);
                            }
                        }
                        (Some("deallocated"), Some(domain)) => {
                            // What is waiting may be this domain's: audit it first.
                            for (_, p) in self.pending.drain() {
                                done.extend(denials(shared, p));
                            }
                            shared.landlock.domain_freed(domain);
                        }
                        _ => {}
                    }
                }
                records::LANDLOCK_ACCESS => {
                    self.pending
                        .entry(record.serial)
                        .or_insert_with(|| Pending {
                            since: Instant::now(),
                            access: Vec::new(),
                            syscall: None,
                        })
                        .access
                        .push(record);
                }
                records::SYSCALL => {
                    if let Some(p) = self.pending.get_mut(&record.serial) {
                        p.syscall = Some(record);
                    }
                }
                records::EOE => {
                    if let Some(p) = self.pending.remove(&record.serial) {
                        done.extend(denials(shared, p));
                    }
                }
                _ => {}
            }
        }
        done
    }

    /// The events older than [`ASSEMBLY`] at `now`.
    fn due(&mut self, shared: &Shared, now: Instant) -> Vec<Denial> {
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.since) >= ASSEMBLY)
            .map(|(s, _)| *s)
            .collect();
        let mut out = Vec::new();
        for serial in late {
            if let Some(p) = self.pending.remove(&serial) {
                out.extend(denials(shared, p));
            }
        }
        out
    }
}

/// An event's denials by agents' domains; the rest are not secops' to audit.
fn denials(shared: &Shared, pending: Pending) -> Vec<Denial> {
    let Pending {
        since,
        access,
        syscall,
    } = pending;
    access
        .into_iter()
        .filter_map(|access| {
            let agent = shared.landlock.agent_of_domain(access.domain()?)?;
            Some(Denial {
                since,
                agent,
                access,
                syscall: syscall.clone(),
            })
        })
        .collect()
}

/// Whether the file tracepoints see this call (unlink, rmdir, rename) and so hold its whole
/// path for the kernel's record of it.
fn tracepoints_see(shared: &Shared, denial: &Denial, action: CoreAction) -> bool {
    matches!(action, CoreAction::FsDelete | CoreAction::FsRename)
        && denial.syscall.is_some()
        && super::locks::lock(&shared.kernel)
            .family_state(Family::Files)
            .is_attached()
}

/// What a file carried to another directory could be given there that a rule refuses it
/// where it is.
const WIDENED: &[CoreAction] = &[
    CoreAction::SecretRead,
    CoreAction::FsRead,
    CoreAction::FsWrite,
    CoreAction::FsTruncate,
    CoreAction::FsDelete,
    CoreAction::ProcExec,
];

/// A name for "an entry of this directory": the kernel names only the directory for
/// removals, creations, renames and links.
const PROBE: &str = ".secops-landlock-entry";

/// What became of a denial.
enum Built {
    Request(Box<Request>),
    /// The tracepoint's record of the call, with its whole path, has not come yet.
    Wait(Denial),
    NotOurs,
}

/// One `deny` record through the decision path, naming the rule that protects the object;
/// the denial back when it waits for the file tracepoint's record of the same call.
fn audit_denial(shared: &Shared, writer: &AuditWriter, denial: Denial) -> Option<Denial> {
    let request = match request_for(shared, denial) {
        Built::Request(request) => *request,
        Built::Wait(denial) => return Some(denial),
        Built::NotOurs => return None,
    };
    let outcome = decide(shared, writer, request, AuditMode::Enqueue);
    if matches!(outcome.recorded, super::decide::Recorded::Refused) {
        tracing::error!("the audit log refused a Landlock denial's record");
    }
    None
}

fn request_for(shared: &Shared, denial: Denial) -> Built {
    let engine = shared.engine();
    let agent_index = engine.agent_index(&denial.agent);
    let refused_by_rule = |resolved: &ResolvedAction| {
        let decision = engine.decide(&resolved.request(agent_index));
        (decision.verdict != Verdict::Allow)
            .then_some(decision.rule_id)
            .flatten()
    };
    let access = &denial.access;
    let blockers = access.blockers();
    let candidates = action_candidates(denial.syscall.as_ref(), &blockers);
    let scope = blockers.iter().any(|b| b.starts_with("scope."));
    let path = access
        .text("path")
        .filter(|_| !scope)
        .map(|p| PathBuf::from(String::from_utf8_lossy(&p).into_owned()));
    // Rights on a directory's entries are checked, and named, at the directory.
    let at_directory = blockers.iter().all(|b| {
        matches!(*b, "fs.remove_file" | "fs.remove_dir" | "fs.refer") || b.starts_with("fs.make_")
    }) || candidates.first().is_some_and(|a| {
        matches!(
            a,
            CoreAction::FsDelete | CoreAction::FsRename | CoreAction::FsLink | CoreAction::FsCreate
        )
    });
    let entry = path.as_ref().map(|p| {
        if at_directory {
            p.join(PROBE)
        } else {
            p.clone()
        }
    });
    let asked = |action: CoreAction| resolved(action, entry.as_deref());
    // The syscall names the act; without it, the first candidate a rule refuses.
    let action = match denial.syscall {
        Some(_) => candidates.first().map(|a| asked(*a)),
        None => candidates
            .iter()
            .map(|a| asked(*a))
            .find(|r| refused_by_rule(r).is_some())
            .or_else(|| candidates.first().map(|a| asked(*a))),
    };
    let Some(action) = action else {
        return Built::NotOurs;
    };
    let Some(core) = candidates
        .iter()
        .copied()
        .find(|c| secops_common::ActionId(*c as u16) == action.action)
    else {
        return Built::NotOurs;
    };
    // A rename or link across directories is refused too when it would give the file more
    // rights where it lands: then the rule protecting the file where it is names it.
    let widened = |at: Option<&Path>| {
        matches!(core, CoreAction::FsRename | CoreAction::FsLink)
            .then(|| {
                WIDENED
                    .iter()
                    .find_map(|a| refused_by_rule(&resolved(*a, at)))
            })
            .flatten()
    };
    let detail = kernel_detail(&denial, &blockers, at_directory && !scope);
    let refused = |rule: Option<Arc<str>>| Door::Kernel {
        verdict: Verdict::Deny,
        check: KernelCheck::Landlock(LandlockSeen::Refused { rule }),
    };
    if tracepoints_see(shared, &denial, core) {
        let tgid = denial
            .syscall
            .as_ref()
            .and_then(|c| c.number("pid"))
            .unwrap_or(0) as u32;
        match shared.landlock.take_awaiting(&denial.agent, tgid, core) {
            Some(seen) => {
                // The tracepoint's record, with the whole path (and a rename's target).
                let mut request = seen.request;
                let source = request
                    .action
                    .path
                    .as_ref()
                    .map(|p| PathBuf::from(p.to_string()));
                let rule = refused_by_rule(&request.action)
                    .or_else(|| {
                        seen.target
                            .as_deref()
                            .and_then(|t| refused_by_rule(&resolved(core, Some(t))))
                    })
                    .or_else(|| widened(source.as_deref()));
                request.door = refused(rule.map(|r| Arc::from(r.as_ref())));
                request.detail = format!("{}; {detail}", request.detail);
                return Built::Request(Box::new(request));
            }
            None if denial.since.elapsed() < TRACEPOINT_WAIT => return Built::Wait(denial),
            // Recorded from the kernel's record alone, at the directory.
            None => {}
        }
    }
    let rule = refused_by_rule(&action).or_else(|| widened(entry.as_deref()));
    let door = if scope {
        Door::Kernel {
            verdict: Verdict::Deny,
            check: KernelCheck::Landlock(LandlockSeen::Scope),
        }
    } else {
        refused(rule.map(|r| Arc::from(r.as_ref())))
    };
    let call = denial.syscall.as_ref();
    let text = |r: Option<&Record>, key: &str| {
        r.and_then(|r| r.text(key))
            .map(|t| String::from_utf8_lossy(&t).into_owned())
    };
    Built::Request(Box::new(Request {
        door,
        at_ns: access.at_ns,
        actor: Actor {
            agent: Some(denial.agent.clone()),
            cgroup_id: shared.agent_slot(&denial.agent).map(|s| s.cgroup_id),
            pid: call.and_then(|c| c.number("pid")).map(|p| p as u32),
            tgid: call.and_then(|c| c.number("pid")).map(|p| p as u32),
            uid: call.and_then(|c| c.number("uid")).map(|u| u as u32),
            comm: text(call, "comm"),
            exe: text(call, "exe"),
        },
        action,
        object: object(access, scope, path.as_deref(), core),
        inode: None,
        detail,
        note: String::new(),
    }))
}

/// `action` on `at` (as the binary for an exec).
fn resolved(action: CoreAction, at: Option<&Path>) -> ResolvedAction {
    let mut resolved = ResolvedAction::core(action);
    let normalized = at
        .and_then(Path::to_str)
        .and_then(|p| NormalizedPath::new(p).ok());
    if action == CoreAction::ProcExec {
        resolved.binary = normalized;
    } else {
        resolved.path = normalized;
    }
    resolved
}

/// The object as the kernel's record names it: the path (the directory, for the rights on
/// a directory's entries), the signalled task, or the abstract socket's name.
fn object(
    access: &Record,
    scope: bool,
    path: Option<&Path>,
    core: CoreAction,
) -> Option<AuditObject> {
    if !scope {
        return path.map(|p| AuditObject {
            kind: if core == CoreAction::ProcExec {
                ObjectKind::Binary
            } else {
                ObjectKind::Path
            },
            value: p.display().to_string(),
        });
    }
    let value = match access.number("opid") {
        Some(pid) => format!(
            "pid {pid} ({})",
            String::from_utf8_lossy(&access.text("ocomm").unwrap_or_default())
        ),
        None => {
            let name = access.text("path").unwrap_or_default();
            let name = name.strip_prefix(b"\0").unwrap_or(&name);
            format!("abstract unix socket @{}", String::from_utf8_lossy(name))
        }
    };
    Some(AuditObject {
        kind: ObjectKind::Target,
        value,
    })
}

/// What the kernel's record says beyond the action: domain, blockers, the syscall's result.
fn kernel_detail(denial: &Denial, blockers: &[&str], at_directory: bool) -> String {
    let mut detail = format!(
        "the kernel's Landlock record: domain {:x}, blockers {}",
        denial.access.domain().unwrap_or(0),
        blockers.join(",")
    );
    if at_directory {
        detail.push_str(", named at the directory of the entry");
    }
    if let Some(call) = &denial.syscall {
        detail.push_str(&format!(
            "; syscall {} returned {}",
            call.get("syscall").unwrap_or("?"),
            call.get("exit").unwrap_or("?")
        ));
    }
    detail
}
