//! OCSF export of audit records: one OCSF event per record, written as JSON lines.
//!
//! Target: OCSF schema **1.7.0** (released November 2025). Every attribute name, class id,
//! activity id and enum value used here was checked against the compiled 1.7.0 schema
//! (classes, objects, dictionary, and the `host` and `security_control` profiles that
//! `base_event` includes since 1.4). 1.7.0 rather than the newest release because it is the
//! newest one whose compiled schema we could verify field by field, and SIEM importers lag
//! behind the schema; nothing below needs a later version.
//!
//! Mapping, by `category:action`:
//!
//! | secops action | OCSF class (class_uid) | activity_id |
//! |---|---|---|
//! | `fs:create` | File System Activity (1001) | 1 Create |
//! | `fs:read`, `secret:read` | File System Activity (1001) | 2 Read |
//! | `fs:write`, `fs:truncate` | File System Activity (1001) | 3 Update |
//! | `fs:delete` | File System Activity (1001) | 4 Delete |
//! | `fs:rename` | File System Activity (1001) | 5 Rename |
//! | `fs:chmod` | File System Activity (1001) | 7 Set Security |
//! | `fs:link`, other `fs:*` | File System Activity (1001) | 99 Other |
//! | `sys:mount` | File System Activity (1001) | 12 Mount |
//! | `proc:exec` | Process Activity (1007) | 1 Launch (launch_type_id 3 Exec) |
//! | `proc:exit` | Process Activity (1007) | 2 Terminate |
//! | `proc:ptrace` | Process Activity (1007) | 3 Open |
//! | `proc:signal`, `sys:namespace`, `sys:cgroup`, other `proc:*` | Process Activity (1007) | 99 Other |
//! | `sys:module` | Kernel Extension Activity (1002) | 1 Load |
//! | `sys:bpf` | Kernel Activity (1003) | 4 Invoke (kernel resource: System Call `bpf`) |
//! | `net:connect` | Network Activity (4001) | 1 Open; 5 Refuse when not allowed |
//! | `net:send` | Network Activity (4001) | 6 Traffic; 5 Refuse when not allowed |
//! | `net:bind`, other `net:*` | Network Activity (4001) | 99 Other |
//! | `net:dns` | DNS Activity (4003) | 1 Query |
//! | `code`, `vcs`, `deploy`, `comms`, `db`, `tool` | API Activity (6003) | 1..4 CRUD by verb, else 99 Other |
//! | anything unparseable | Base Event (0) | 99 Other |
//!
//! The decision itself maps onto the `security_control` profile: `action_id`/`disposition_id`
//! from the verdict (and its source), `risk_level_id`, `severity_id` from the risk, `policy`
//! from the rule, `is_alert`. The agent is carried as `actor.app_name` and, with everything
//! else the record holds, in `unmapped.secops`, which is the record exactly as secops
//! serialises it natively: every field the record hash covers, plus `prev_hash` and `hash`,
//! so the chain can be re-checked from the export (with a JSON reader that keeps 64-bit
//! integers exact; `metadata.original_time` has the nanoseconds as a string for the rest).
//!
//! Records without an object (or with an empty one) still export, but then lack the object
//! OCSF marks required for their class (`file`, `process`, `driver`); nothing is invented to
//! fill it. Likewise `device` (and API Activity's `src_endpoint`) need [`OcsfContext`].

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use secops_common::{Category, RiskLevel, Verdict};
use serde_json::{json, Map, Value};

use super::record::{NewRecord, Record, Source};

/// The OCSF schema version the export targets, written to `metadata.version`.
pub const OCSF_VERSION: &str = "1.7.0";

/// Facts about the exporting host that a record does not carry.
///
/// OCSF's `device` (required by the System Activity classes) describes the host the event
/// happened on. The audit log does not store it, and guessing it from the machine doing the
/// export would be wrong for a log copied elsewhere, so the caller says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OcsfContext {
    /// The host name of the machine that wrote the audit log, if known.
    pub hostname: Option<String>,
}

/// The OCSF event for one record, without host context (no `device`).
pub fn to_ocsf(record: &Record) -> Value {
    to_ocsf_with(record, &OcsfContext::default())
}

/// The OCSF event for one record.
pub fn to_ocsf_with(record: &Record, ctx: &OcsfContext) -> Value {
    let body = &record.body;
    let (category, verb) = split_action(&body.action);
    let mapping = classify(category, verb, body.verdict);
    let mut event = Map::new();

    // Classification. `type_uid` is defined by OCSF as class_uid * 100 + activity_id.
    let class = mapping.class;
    put(&mut event, "category_uid", class.category_uid);
    put(&mut event, "category_name", class.category_name);
    put(&mut event, "class_uid", class.class_uid);
    put(&mut event, "class_name", class.class_name);
    put(&mut event, "activity_id", mapping.activity_id);
    // For 99 (Other) OCSF says `activity_name` carries the source's own name for it: the
    // verb within a known class, the whole action type when even the category is unknown.
    let activity_name = match mapping.activity_name {
        Some(name) => name,
        None if class == BASE_EVENT || verb.is_empty() => body.action.as_str(),
        None => verb,
    };
    put(&mut event, "activity_name", activity_name);
    put(
        &mut event,
        "type_uid",
        u64::from(class.class_uid) * 100 + u64::from(mapping.activity_id),
    );
    put(
        &mut event,
        "type_name",
        format!("{}: {}", class.class_name, type_caption(&mapping)),
    );

    // Occurrence. OCSF `time` is milliseconds; the exact nanoseconds are kept as the
    // original time, as a string so that no JSON reader rounds them through a double.
    put(&mut event, "time", body.ts_ns.div_euclid(1_000_000));
    put(&mut event, "timezone_offset", 0);

    // Outcome.
    let (severity_id, severity) = severity(body.risk);
    put(&mut event, "severity_id", severity_id);
    put(&mut event, "severity", severity);
    let outcome = outcome(body.verdict, body.source);
    put(&mut event, "action_id", outcome.action_id);
    put(&mut event, "action", outcome.action);
    put(&mut event, "disposition_id", outcome.disposition_id);
    put(&mut event, "disposition", outcome.disposition);
    put(&mut event, "status_id", outcome.status_id);
    put(&mut event, "status", outcome.status);
    put(&mut event, "status_code", body.verdict.to_string());
    if let Some(detail) = outcome.status_detail {
        put(&mut event, "status_detail", detail);
    }
    put(&mut event, "message", body.reason.as_str());
    let (risk_level_id, risk_level) = risk_level(body.risk);
    put(&mut event, "risk_level_id", risk_level_id);
    put(&mut event, "risk_level", risk_level);
    // Alertable: anything secops stopped or sent to a human, and anything rated high or
    // worse even if allowed (OCSF: "and/or severity_id of the event is elevated").
    put(
        &mut event,
        "is_alert",
        body.verdict != Verdict::Allow || body.risk >= RiskLevel::High,
    );
    if let Some(rule) = body.rule_id.as_deref() {
        put(&mut event, "policy", json!({ "uid": rule, "name": rule }));
    }

    put(&mut event, "metadata", metadata(record));

    // Who: the agent (by name) and the process that acted. The `host` profile puts `actor`
    // and `device` on every class, not only the System Activity ones.
    if let Some(actor) = actor(body) {
        put(&mut event, "actor", actor);
    }
    if let Some(hostname) = ctx.hostname.as_deref() {
        put(&mut event, "device", device(hostname));
    }

    // What: the class-specific object.
    add_object(&mut event, &mapping, category, record, ctx);

    // Everything, losslessly: the record as secops serialises it.
    let native = serde_json::to_value(record).unwrap_or_else(|err| {
        // Cannot happen for these types (no maps with non-string keys, no floats), but an
        // export must never lose a record over it: keep what identifies it.
        json!({
            "seq": record.seq,
            "hash": hex::encode(record.hash),
            "serialization_error": err.to_string(),
        })
    });
    put(&mut event, "unmapped", json!({ "secops": native }));

    Value::Object(event)
}

/// Writes one record as one line of JSON.
pub fn write_ocsf_line<W: Write>(
    record: &Record,
    ctx: &OcsfContext,
    out: &mut W,
) -> io::Result<()> {
    // Compact serialisation escapes control characters inside strings, so the event can
    // never span lines, whatever the record's reason or paths contain.
    serde_json::to_writer(&mut *out, &to_ocsf_with(record, ctx))?;
    out.write_all(b"\n")
}

/// Writes records as JSON lines (one OCSF event per line) and returns how many were written.
/// The writer is not buffered here; pass a `BufWriter` for files and sockets.
pub fn write_ocsf_lines<W: Write>(
    records: impl IntoIterator<Item = Record>,
    out: &mut W,
) -> io::Result<u64> {
    write_ocsf_lines_with(records, &OcsfContext::default(), out)
}

/// [`write_ocsf_lines`] with host context.
pub fn write_ocsf_lines_with<W: Write>(
    records: impl IntoIterator<Item = Record>,
    ctx: &OcsfContext,
    out: &mut W,
) -> io::Result<u64> {
    let mut count = 0u64;
    for record in records {
        write_ocsf_line(&record, ctx, out)?;
        count += 1;
    }
    Ok(count)
}

// ---------------------------------------------------------------------------------------
// Classification

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Class {
    category_uid: u32,
    category_name: &'static str,
    class_uid: u32,
    class_name: &'static str,
}

const fn class(
    category_uid: u32,
    category_name: &'static str,
    uid: u32,
    name: &'static str,
) -> Class {
    Class {
        category_uid,
        category_name,
        class_uid: uid,
        class_name: name,
    }
}

const SYSTEM: (u32, &str) = (1, "System Activity");
const NETWORK: (u32, &str) = (4, "Network Activity");
const APPLICATION: (u32, &str) = (6, "Application Activity");

const BASE_EVENT: Class = class(0, "Uncategorized", 0, "Base Event");
const FILE_ACTIVITY: Class = class(SYSTEM.0, SYSTEM.1, 1001, "File System Activity");
const KERNEL_EXTENSION_ACTIVITY: Class =
    class(SYSTEM.0, SYSTEM.1, 1002, "Kernel Extension Activity");
const KERNEL_ACTIVITY: Class = class(SYSTEM.0, SYSTEM.1, 1003, "Kernel Activity");
const PROCESS_ACTIVITY: Class = class(SYSTEM.0, SYSTEM.1, 1007, "Process Activity");
const NETWORK_ACTIVITY: Class = class(NETWORK.0, NETWORK.1, 4001, "Network Activity");
const DNS_ACTIVITY: Class = class(NETWORK.0, NETWORK.1, 4003, "DNS Activity");
const API_ACTIVITY: Class = class(APPLICATION.0, APPLICATION.1, 6003, "API Activity");

/// OCSF's "not mapped" activity, present in every class.
const OTHER: u32 = 99;

/// What the record's object is, for the class chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// `file`: the path acted on.
    File,
    /// `process`: the binary being launched (`proc:exec`).
    LaunchedProcess,
    /// `process`: another process, named by the object (pid or path).
    TargetProcess,
    /// `process`: the acting process itself (exit, namespace and cgroup changes).
    SelfProcess,
    /// `driver`: the kernel module.
    Driver,
    /// `kernel`: the `bpf` system call.
    BpfSyscall,
    /// `dst_endpoint`: where the agent connects or sends to.
    Destination,
    /// `src_endpoint`: the local address being bound.
    LocalEndpoint,
    /// `query` (a name) or `dst_endpoint` (a resolver address).
    DnsQuery,
    /// `api` and `resources`.
    Api,
    /// Nothing beyond actor and device.
    None,
}

#[derive(Clone, Copy, Debug)]
struct Mapping {
    class: Class,
    activity_id: u32,
    /// The OCSF caption of `activity_id`; `None` for Other, where the secops verb is used.
    activity_name: Option<&'static str>,
    shape: Shape,
}

fn mapped(class: Class, activity_id: u32, name: &'static str, shape: Shape) -> Mapping {
    Mapping {
        class,
        activity_id,
        activity_name: Some(name),
        shape,
    }
}

fn other(class: Class, shape: Shape) -> Mapping {
    Mapping {
        class,
        activity_id: OTHER,
        activity_name: None,
        shape,
    }
}

/// `("fs", "delete")` from `"fs:delete"`; a type without a colon has an empty verb.
fn split_action(action: &str) -> (&str, &str) {
    action.split_once(':').unwrap_or((action, ""))
}

fn classify(category: &str, verb: &str, verdict: Verdict) -> Mapping {
    // Matching on the taxonomy's own enum means a new category cannot be added to
    // secops-common without this table being told where it goes.
    let Some(category) = Category::from_name(category) else {
        return other(BASE_EVENT, Shape::None);
    };
    match category {
        Category::Fs => match verb {
            "create" => mapped(FILE_ACTIVITY, 1, "Create", Shape::File),
            "read" => mapped(FILE_ACTIVITY, 2, "Read", Shape::File),
            // Truncation changes the file's data, like a write: OCSF's Update is "a request
            // to write data to a file".
            "write" | "truncate" => mapped(FILE_ACTIVITY, 3, "Update", Shape::File),
            "delete" => mapped(FILE_ACTIVITY, 4, "Delete", Shape::File),
            "rename" => mapped(FILE_ACTIVITY, 5, "Rename", Shape::File),
            // chmod changes who may do what with the file: that is Set Security in OCSF
            // (Set Attributes is for attribute bits such as hidden or read-only).
            "chmod" => mapped(FILE_ACTIVITY, 7, "Set Security", Shape::File),
            // A hard link is neither a create of the data nor an update; OCSF has no link.
            _ => other(FILE_ACTIVITY, Shape::File),
        },
        // A credential file read is a file read; `unmapped.secops.action` says it was a secret.
        Category::Secret => match verb {
            "read" => mapped(FILE_ACTIVITY, 2, "Read", Shape::File),
            _ => other(FILE_ACTIVITY, Shape::File),
        },
        Category::Proc => match verb {
            "exec" => mapped(PROCESS_ACTIVITY, 1, "Launch", Shape::LaunchedProcess),
            // Reflexive Terminate: OCSF's own example of the common case.
            "exit" => mapped(PROCESS_ACTIVITY, 2, "Terminate", Shape::SelfProcess),
            // ptrace attach gains control of another process ("obtain a handle ... with the
            // aim of performing further actions"): Open. Inject would claim code was run in
            // the target, which the event does not show.
            "ptrace" => mapped(PROCESS_ACTIVITY, 3, "Open", Shape::TargetProcess),
            // A signal may or may not end the target; we do not know which signal.
            _ => other(PROCESS_ACTIVITY, Shape::TargetProcess),
        },
        Category::Sys => match verb {
            "mount" => mapped(FILE_ACTIVITY, 12, "Mount", Shape::File),
            // The kernel hooks behind sys:module are module loads; unloading is not an
            // action secops gates.
            "module" => mapped(KERNEL_EXTENSION_ACTIVITY, 1, "Load", Shape::Driver),
            // bpf() is one system call; OCSF models it as invoking a kernel resource of
            // type System Call.
            "bpf" => mapped(KERNEL_ACTIVITY, 4, "Invoke", Shape::BpfSyscall),
            // unshare/setns and cgroup moves change the acting process's own confinement;
            // OCSF has no activity for that, so Process Activity: Other on the process.
            _ => other(PROCESS_ACTIVITY, Shape::SelfProcess),
        },
        Category::Net => {
            let allowed = verdict == Verdict::Allow;
            match verb {
                // A connection secops did not let through was never opened: OCSF's Refuse
                // ("the network connection was refused"); disposition says who refused.
                "connect" if allowed => mapped(NETWORK_ACTIVITY, 1, "Open", Shape::Destination),
                "connect" | "send" if !allowed => {
                    mapped(NETWORK_ACTIVITY, 5, "Refuse", Shape::Destination)
                }
                // A datagram sent (no connection): a traffic report towards dst_endpoint.
                "send" => mapped(NETWORK_ACTIVITY, 6, "Traffic", Shape::Destination),
                // bind names a local address; it is not yet Listen.
                "bind" => other(NETWORK_ACTIVITY, Shape::LocalEndpoint),
                "dns" => mapped(DNS_ACTIVITY, 1, "Query", Shape::DnsQuery),
                _ => other(NETWORK_ACTIVITY, Shape::Destination),
            }
        }
        // In-process actions are tool calls an agent framework reports through secops's
        // `check(action)` API before performing them. OCSF's API Activity ("general CRUD API
        // activities") is the class for an actor invoking an operation on a service's
        // resources, which is what `vcs:push` on a branch or `db:drop` on a table is.
        // Application Lifecycle is about installing/starting/stopping applications, and
        // Datastore Activity fits `db` alone and needs a database/table shape we do not have;
        // one class for all in-process categories keeps them queryable together.
        Category::Code
        | Category::Vcs
        | Category::Deploy
        | Category::Comms
        | Category::Db
        | Category::Tool => api_activity(category, verb),
    }
}

/// CRUD for the in-process verbs whose meaning is unambiguous; Other for the rest.
fn api_activity(category: Category, verb: &str) -> Mapping {
    let crud = match (category, verb) {
        (Category::Vcs, "commit") => Some(1),
        (Category::Vcs, "push" | "force_push") => Some(3),
        (Category::Vcs, "branch_delete") => Some(4),
        (Category::Code, "edit") => Some(3),
        (Category::Db, "read") => Some(2),
        (Category::Db, "write" | "migrate") => Some(3),
        (Category::Db, "drop") => Some(4),
        // Custom types declared by a policy: judge by the leading word only, and only when
        // it is a plain CRUD verb (`delete_branch`, `truncate_table`, `list_users`).
        _ => match verb.split('_').next().unwrap_or("") {
            "create" | "add" | "insert" => Some(1),
            "read" | "get" | "list" | "query" | "select" | "fetch" => Some(2),
            "update" | "write" | "edit" | "modify" | "alter" => Some(3),
            "delete" | "drop" | "remove" | "truncate" | "destroy" | "purge" => Some(4),
            _ => None,
        },
    };
    match crud {
        Some(1) => mapped(API_ACTIVITY, 1, "Create", Shape::Api),
        Some(2) => mapped(API_ACTIVITY, 2, "Read", Shape::Api),
        Some(3) => mapped(API_ACTIVITY, 3, "Update", Shape::Api),
        Some(4) => mapped(API_ACTIVITY, 4, "Delete", Shape::Api),
        _ => other(API_ACTIVITY, Shape::Api),
    }
}

fn type_caption(mapping: &Mapping) -> &'static str {
    mapping.activity_name.unwrap_or("Other")
}

// ---------------------------------------------------------------------------------------
// Outcome

fn severity(risk: RiskLevel) -> (u32, &'static str) {
    // OCSF severity_id: 2 Low, 3 Medium, 4 High, 5 Critical. Names match one to one.
    match risk {
        RiskLevel::Low => (2, "Low"),
        RiskLevel::Medium => (3, "Medium"),
        RiskLevel::High => (4, "High"),
        RiskLevel::Critical => (5, "Critical"),
    }
}

fn risk_level(risk: RiskLevel) -> (u32, &'static str) {
    // security_control's risk_level_id: 1 Low, 2 Medium, 3 High, 4 Critical.
    match risk {
        RiskLevel::Low => (1, "Low"),
        RiskLevel::Medium => (2, "Medium"),
        RiskLevel::High => (3, "High"),
        RiskLevel::Critical => (4, "Critical"),
    }
}

struct Outcome {
    action_id: u32,
    action: &'static str,
    disposition_id: u32,
    disposition: &'static str,
    status_id: u32,
    status: &'static str,
    status_detail: Option<&'static str>,
}

fn outcome(verdict: Verdict, source: Source) -> Outcome {
    match (verdict, source) {
        // A human approving a ticket: OCSF's Approved ("a request ... was approved; distinct
        // from Allowed").
        (Verdict::Allow, Source::Approval) => Outcome {
            action_id: 1,
            action: "Allowed",
            disposition_id: 8,
            disposition: "Approved",
            status_id: 1,
            status: "Success",
            status_detail: Some("Approved by a human"),
        },
        // Success means secops let the operation through; the record does not carry the
        // operation's own result (a syscall may still fail for other reasons).
        (Verdict::Allow, _) => Outcome {
            action_id: 1,
            action: "Allowed",
            disposition_id: 1,
            disposition: "Allowed",
            status_id: 1,
            status: "Success",
            status_detail: None,
        },
        // A human rejecting a ticket: Rejected ("a request ... was rejected").
        (Verdict::Deny, Source::Approval) => Outcome {
            action_id: 2,
            action: "Denied",
            disposition_id: 25,
            disposition: "Rejected",
            status_id: 2,
            status: "Failure",
            status_detail: Some("Rejected by a human"),
        },
        (Verdict::Deny, _) => Outcome {
            action_id: 2,
            action: "Denied",
            disposition_id: 2,
            disposition: "Blocked",
            status_id: 2,
            status: "Failure",
            status_detail: Some("Denied by secops policy"),
        },
        // Escalate did not let the operation happen when this record was written (the
        // kernel path denies now and opens a ticket; the API path holds the call), so the
        // action is Denied. No OCSF disposition means "waiting for a human", so it is Other
        // with the source's own word, and the status is Other: not failed, not done.
        (Verdict::Escalate, Source::Kernel) => Outcome {
            action_id: 2,
            action: "Denied",
            disposition_id: OTHER,
            disposition: "Escalated",
            status_id: OTHER,
            status: "Escalated",
            status_detail: Some(
                "Denied pending human approval; a retry passes only once a human grants it",
            ),
        },
        (Verdict::Escalate, _) => Outcome {
            action_id: 2,
            action: "Denied",
            disposition_id: OTHER,
            disposition: "Escalated",
            status_id: OTHER,
            status: "Escalated",
            status_detail: Some("Held for human approval"),
        },
    }
}

// ---------------------------------------------------------------------------------------
// Objects

fn metadata(record: &Record) -> Value {
    let mut meta = Map::new();
    put(&mut meta, "version", OCSF_VERSION);
    put(
        &mut meta,
        "product",
        json!({
            "name": "secops",
            "vendor_name": "secops",
            "version": env!("CARGO_PKG_VERSION"),
        }),
    );
    put(&mut meta, "profiles", json!(["host", "security_control"]));
    put(&mut meta, "log_name", "audit");
    // The record's hash is unique to it (it covers the previous hash and the sequence).
    put(&mut meta, "uid", hex::encode(record.hash));
    // The record's identity in the secops log.
    put(&mut meta, "original_event_uid", record.seq.to_string());
    // OCSF `sequence` is an integer_t (32-bit); a longer log keeps seq in unmapped only
    // rather than emitting an out-of-range value.
    if let Ok(sequence) = i32::try_from(record.seq) {
        put(&mut meta, "sequence", sequence);
    }
    put(&mut meta, "event_code", record.body.action.as_str());
    // The time exactly as the source recorded it: UTC nanoseconds since the epoch.
    put(&mut meta, "original_time", record.body.ts_ns.to_string());
    Value::Object(meta)
}

fn actor(body: &NewRecord) -> Option<Value> {
    let mut actor = Map::new();
    if let Some(process) = acting_process(body) {
        put(&mut actor, "process", process);
    }
    if let Some(uid) = body.uid {
        put(&mut actor, "user", user(uid));
    }
    // The agent identity. `app_name` is OCSF's "client application or service that initiated
    // the activity", distinct from the process: exactly what an agent is to secops.
    if let Some(agent) = body.agent.as_deref() {
        put(&mut actor, "app_name", agent);
    }
    (!actor.is_empty()).then_some(Value::Object(actor))
}

/// The process that performed the action.
fn acting_process(body: &NewRecord) -> Option<Value> {
    let mut process = Map::new();
    // Linux naming: the kernel's `tgid` is what userspace calls the process id, and its
    // `pid` is the thread id. OCSF `pid` is the process id, `ptid` the thread.
    match (body.tgid, body.pid) {
        (Some(tgid), pid) => {
            put(&mut process, "pid", tgid);
            if let Some(tid) = pid.filter(|&tid| tid != tgid) {
                put(&mut process, "ptid", tid);
            }
        }
        (None, Some(pid)) => put(&mut process, "pid", pid),
        (None, None) => {}
    }
    if let Some(comm) = body.comm.as_deref() {
        put(&mut process, "name", comm);
    }
    if let Some(exe) = body.exe.as_deref().filter(|exe| !exe.is_empty()) {
        put(&mut process, "file", file(exe));
    }
    if let Some(uid) = body.uid {
        put(&mut process, "user", user(uid));
    }
    (!process.is_empty()).then_some(Value::Object(process))
}

fn user(uid: u32) -> Value {
    // OCSF user.uid is a string: the platform's user id.
    json!({ "uid": uid.to_string() })
}

fn device(hostname: &str) -> Value {
    // type_id 0: the record does not say what kind of machine it was.
    json!({ "hostname": hostname, "type_id": 0, "type": "Unknown" })
}

/// An OCSF `file` for a path: the path as recorded, its last component as `name` (the whole
/// value when it has none, e.g. `/`), and its parent folder when it has one.
fn file(path: &str) -> Value {
    let p = Path::new(path);
    let name = p
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_owned());
    let mut file = Map::new();
    put(&mut file, "path", path);
    put(&mut file, "name", name);
    if let Some(parent) = p.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        put(
            &mut file,
            "parent_folder",
            parent.to_string_lossy().into_owned(),
        );
    }
    // Not stat'ed: the log does not say whether it was a regular file, a folder or a link.
    put(&mut file, "type_id", 0);
    put(&mut file, "type", "Unknown");
    Value::Object(file)
}

/// An OCSF `network_endpoint` from `ip:port`, `[v6]:port`, a bare address, or `host:port`.
/// Anything else is kept verbatim as the endpoint's `name` (and raw in `unmapped`).
fn endpoint(value: &str) -> (Value, Option<IpAddr>) {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        let ip = addr.ip();
        return (
            json!({ "ip": ip.to_string(), "port": addr.port() }),
            Some(ip),
        );
    }
    let bare = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return (json!({ "ip": ip.to_string() }), Some(ip));
    }
    if let Some((host, port)) = value.rsplit_once(':') {
        if let Ok(port) = port.parse::<u16>() {
            if !host.is_empty() && !host.contains(':') {
                return (json!({ "hostname": host, "port": port }), None);
            }
        }
    }
    (json!({ "name": value }), None)
}

fn connection_info(ip: Option<IpAddr>) -> Value {
    // The agent initiated it from this host; whether that is leaving the network depends on
    // where the peer is: loopback is Local, private/link-local/ULA is Lateral (inside to
    // inside), anything else Outbound. Unknown when the address did not parse.
    let (direction_id, direction) = match ip {
        Some(ip) if ip.is_loopback() => (4, "Local"),
        Some(IpAddr::V4(v4)) if v4.is_private() || v4.is_link_local() => (3, "Lateral"),
        Some(IpAddr::V6(v6)) if v6.is_unique_local() || v6.is_unicast_link_local() => {
            (3, "Lateral")
        }
        Some(_) => (2, "Outbound"),
        None => (0, "Unknown"),
    };
    let mut info = Map::new();
    put(&mut info, "direction_id", direction_id);
    put(&mut info, "direction", direction);
    match ip {
        Some(IpAddr::V4(_)) => {
            put(&mut info, "protocol_ver_id", 4);
            put(
                &mut info,
                "protocol_ver",
                "Internet Protocol version 4 (IPv4)",
            );
        }
        Some(IpAddr::V6(_)) => {
            put(&mut info, "protocol_ver_id", 6);
            put(
                &mut info,
                "protocol_ver",
                "Internet Protocol version 6 (IPv6)",
            );
        }
        None => {}
    }
    Value::Object(info)
}

/// The process an action targets, from the object: a pid, or a path/name.
fn target_process(value: &str) -> Value {
    if let Ok(pid) = value.trim().parse::<u32>() {
        return json!({ "pid": pid });
    }
    if value.contains('/') {
        let file = file(value);
        let name = file.get("name").cloned().unwrap_or(Value::Null);
        return json!({ "name": name, "file": file });
    }
    json!({ "name": value })
}

fn add_object(
    event: &mut Map<String, Value>,
    mapping: &Mapping,
    category: &str,
    record: &Record,
    ctx: &OcsfContext,
) {
    let body = &record.body;
    // An empty object value says nothing; it stays visible raw in `unmapped`.
    let value = body
        .object
        .as_ref()
        .map(|object| object.value.as_str())
        .filter(|value| !value.is_empty());
    match mapping.shape {
        Shape::File => {
            if let Some(path) = value {
                put(event, "file", file(path));
            }
        }
        Shape::LaunchedProcess => {
            // exec replaces the image of the same process, so the launched process keeps
            // the actor's pid (launch type Exec, not Spawn).
            put(event, "launch_type_id", 3);
            put(event, "launch_type", "Exec");
            let mut process = Map::new();
            if let Some(pid) = body.tgid.or(body.pid) {
                put(&mut process, "pid", pid);
            }
            if let Some(path) = value {
                let file = file(path);
                if let Some(name) = file.get("name").cloned() {
                    put(&mut process, "name", name);
                }
                put(&mut process, "file", file);
            }
            if let Some(uid) = body.uid {
                put(&mut process, "user", user(uid));
            }
            if !process.is_empty() {
                put(event, "process", Value::Object(process));
            }
        }
        Shape::TargetProcess => {
            if let Some(value) = value {
                put(event, "process", target_process(value));
            }
        }
        Shape::SelfProcess => {
            if let Some(process) = acting_process(body) {
                put(event, "process", process);
            }
        }
        Shape::Driver => {
            if let Some(path) = value {
                put(event, "driver", json!({ "file": file(path) }));
            }
        }
        Shape::BpfSyscall => {
            put(
                event,
                "kernel",
                json!({ "name": "bpf", "system_call": "bpf", "type_id": 2, "type": "System Call" }),
            );
        }
        Shape::Destination => {
            if let Some(value) = value {
                let (endpoint, ip) = endpoint(value);
                put(event, "dst_endpoint", endpoint);
                put(event, "connection_info", connection_info(ip));
            }
        }
        Shape::LocalEndpoint => {
            if let Some(value) = value {
                put(event, "src_endpoint", endpoint(value).0);
            }
        }
        Shape::DnsQuery => {
            if let Some(value) = value {
                let (endpoint, ip) = endpoint(value);
                // An address is the resolver being asked; anything else is the name asked for.
                if ip.is_some() {
                    put(event, "dst_endpoint", endpoint);
                    put(event, "connection_info", connection_info(ip));
                } else {
                    put(event, "query", json!({ "hostname": value }));
                }
            }
        }
        Shape::Api => {
            put(
                event,
                "api",
                json!({ "operation": body.action.as_str(), "service": { "name": category } }),
            );
            if let Some(value) = value {
                put(
                    event,
                    "resources",
                    json!([{ "name": value, "type": category }]),
                );
            }
            // The call came from an agent on this host (over secops's local API socket).
            if let Some(hostname) = ctx.hostname.as_deref() {
                put(event, "src_endpoint", json!({ "hostname": hostname }));
            }
        }
        Shape::None => {}
    }
}

fn put(map: &mut Map<String, Value>, key: &str, value: impl Into<Value>) {
    map.insert(key.to_owned(), value.into());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{AuditObject, ObjectKind};

    fn record(action: &str, object: Option<(ObjectKind, &str)>, verdict: Verdict) -> Record {
        Record {
            seq: 42,
            body: NewRecord {
                ts_ns: 1_700_000_000_123_456_789,
                agent: Some("builder".to_owned()),
                cgroup_id: Some(9001),
                pid: Some(4243),
                tgid: Some(4242),
                uid: Some(1000),
                comm: Some("python3".to_owned()),
                exe: Some("/usr/bin/python3.11".to_owned()),
                action: action.to_owned(),
                object: object.map(|(kind, value)| AuditObject {
                    kind,
                    value: value.to_owned(),
                }),
                verdict,
                risk: RiskLevel::High,
                rule_id: Some("no-rm-outside-workspace".to_owned()),
                reason: "matched rule no-rm-outside-workspace".to_owned(),
                source: Source::Kernel,
            },
            prev_hash: [0x11; 32],
            hash: [0xab; 32],
        }
    }

    /// The assertions every event must pass, whatever its class.
    fn assert_common(event: &Value, class_uid: u64, category_uid: u64, activity_id: u64) {
        assert_eq!(event["class_uid"], class_uid, "{event}");
        assert_eq!(event["category_uid"], category_uid, "{event}");
        assert_eq!(event["activity_id"], activity_id, "{event}");
        assert_eq!(event["type_uid"], class_uid * 100 + activity_id, "{event}");
        assert_eq!(event["time"], 1_700_000_000_123u64);
        assert_eq!(event["metadata"]["original_time"], "1700000000123456789");
        assert_eq!(event["metadata"]["version"], OCSF_VERSION);
        assert_eq!(event["metadata"]["product"]["name"], "secops");
        assert_eq!(event["metadata"]["product"]["vendor_name"], "secops");
        assert_eq!(event["metadata"]["uid"], "ab".repeat(32));
        assert_eq!(event["metadata"]["sequence"], 42);
        // Risk High.
        assert_eq!(event["severity_id"], 4);
        assert_eq!(event["severity"], "High");
        assert_eq!(event["risk_level_id"], 3);
        assert_eq!(event["message"], "matched rule no-rm-outside-workspace");
        assert_eq!(event["policy"]["uid"], "no-rm-outside-workspace");
        // The agent identity, visibly and in the native record.
        assert_eq!(event["actor"]["app_name"], "builder");
        assert_eq!(event["actor"]["process"]["pid"], 4242);
        assert_eq!(event["actor"]["process"]["ptid"], 4243);
        assert_eq!(event["actor"]["process"]["name"], "python3");
        assert_eq!(
            event["actor"]["process"]["file"]["path"],
            "/usr/bin/python3.11"
        );
        assert_eq!(event["actor"]["user"]["uid"], "1000");
        let native = &event["unmapped"]["secops"];
        assert_eq!(native["agent"], "builder");
        assert_eq!(native["cgroup_id"], 9001);
        assert_eq!(native["seq"], 42);
        assert_eq!(native["hash"], "ab".repeat(32));
        assert_eq!(native["prev_hash"], "11".repeat(32));
        assert_eq!(native["ts_ns"], 1_700_000_000_123_456_789i64);
        assert_eq!(native["rule_id"], "no-rm-outside-workspace");
        assert_eq!(native["source"], "kernel");
        assert_eq!(native["risk"], "high");
    }

    fn assert_disposition(event: &Value, action_id: u64, disposition_id: u64, status_id: u64) {
        assert_eq!(event["action_id"], action_id, "{event}");
        assert_eq!(event["disposition_id"], disposition_id, "{event}");
        assert_eq!(event["status_id"], status_id, "{event}");
    }

    #[test]
    fn fs_delete_denied_is_file_system_delete_blocked() {
        let event = to_ocsf(&record(
            "fs:delete",
            Some((ObjectKind::Path, "/home/dev/project/Cargo.lock")),
            Verdict::Deny,
        ));
        assert_common(&event, 1001, 1, 4);
        assert_eq!(event["class_name"], "File System Activity");
        assert_eq!(event["activity_name"], "Delete");
        assert_eq!(event["type_name"], "File System Activity: Delete");
        assert_disposition(&event, 2, 2, 2);
        assert_eq!(event["disposition"], "Blocked");
        assert_eq!(event["status"], "Failure");
        assert_eq!(event["is_alert"], true);
        assert_eq!(event["file"]["path"], "/home/dev/project/Cargo.lock");
        assert_eq!(event["file"]["name"], "Cargo.lock");
        assert_eq!(event["file"]["parent_folder"], "/home/dev/project");
        assert_eq!(event["unmapped"]["secops"]["verdict"], "deny");
        assert_eq!(event["unmapped"]["secops"]["action"], "fs:delete");
    }

    #[test]
    fn secret_read_allowed_is_file_system_read_allowed() {
        let event = to_ocsf(&record(
            "secret:read",
            Some((ObjectKind::Path, "/home/dev/.aws/credentials")),
            Verdict::Allow,
        ));
        assert_common(&event, 1001, 1, 2);
        assert_disposition(&event, 1, 1, 1);
        assert_eq!(event["disposition"], "Allowed");
        assert_eq!(event["status"], "Success");
        assert_eq!(event["file"]["name"], "credentials");
        assert_eq!(event["metadata"]["event_code"], "secret:read");
    }

    #[test]
    fn fs_activities_follow_the_schema() {
        for (action, activity_id) in [
            ("fs:create", 1),
            ("fs:read", 2),
            ("fs:write", 3),
            ("fs:truncate", 3),
            ("fs:delete", 4),
            ("fs:rename", 5),
            ("fs:chmod", 7),
            ("fs:link", 99),
            ("sys:mount", 12),
        ] {
            let event = to_ocsf(&record(
                action,
                Some((ObjectKind::Path, "/x")),
                Verdict::Allow,
            ));
            assert_common(&event, 1001, 1, activity_id);
        }
        let link = to_ocsf(&record("fs:link", None, Verdict::Allow));
        assert_eq!(link["activity_name"], "link");
        assert_eq!(link["type_name"], "File System Activity: Other");
    }

    #[test]
    fn proc_exec_escalated_is_process_launch_pending_a_human() {
        let event = to_ocsf(&record(
            "proc:exec",
            Some((ObjectKind::Binary, "/usr/bin/curl")),
            Verdict::Escalate,
        ));
        assert_common(&event, 1007, 1, 1);
        assert_eq!(event["activity_name"], "Launch");
        assert_eq!(event["launch_type_id"], 3);
        assert_eq!(event["process"]["file"]["path"], "/usr/bin/curl");
        assert_eq!(event["process"]["name"], "curl");
        assert_eq!(event["process"]["pid"], 4242);
        // Not let through now, waiting for a human: Denied, disposition Other "Escalated".
        assert_disposition(&event, 2, 99, 99);
        assert_eq!(event["disposition"], "Escalated");
        assert_eq!(event["status"], "Escalated");
        assert_eq!(event["unmapped"]["secops"]["verdict"], "escalate");
    }

    #[test]
    fn proc_and_sys_activities_follow_the_schema() {
        for (action, class_uid, activity_id) in [
            ("proc:exit", 1007, 2),
            ("proc:ptrace", 1007, 3),
            ("proc:signal", 1007, 99),
            ("sys:namespace", 1007, 99),
            ("sys:cgroup", 1007, 99),
            ("sys:module", 1002, 1),
            ("sys:bpf", 1003, 4),
        ] {
            let event = to_ocsf(&record(
                action,
                Some((ObjectKind::Target, "1234")),
                Verdict::Deny,
            ));
            assert_common(&event, class_uid, 1, activity_id);
        }
        let exit = to_ocsf(&record("proc:exit", None, Verdict::Allow));
        assert_eq!(exit["process"]["pid"], 4242);
        let ptrace = to_ocsf(&record(
            "proc:ptrace",
            Some((ObjectKind::Target, "777")),
            Verdict::Deny,
        ));
        assert_eq!(ptrace["process"]["pid"], 777);
        let bpf = to_ocsf(&record("sys:bpf", None, Verdict::Deny));
        assert_eq!(bpf["kernel"]["type_id"], 2);
        assert_eq!(bpf["kernel"]["name"], "bpf");
    }

    #[test]
    fn net_connect_ipv4_allowed_is_network_open() {
        let event = to_ocsf(&record(
            "net:connect",
            Some((ObjectKind::Endpoint, "93.184.216.34:443")),
            Verdict::Allow,
        ));
        assert_common(&event, 4001, 4, 1);
        assert_eq!(event["activity_name"], "Open");
        assert_eq!(event["dst_endpoint"]["ip"], "93.184.216.34");
        assert_eq!(event["dst_endpoint"]["port"], 443);
        assert_eq!(event["connection_info"]["protocol_ver_id"], 4);
        assert_eq!(event["connection_info"]["direction_id"], 2);
        assert_disposition(&event, 1, 1, 1);
    }

    #[test]
    fn net_connect_ipv6_denied_is_network_refuse() {
        let event = to_ocsf(&record(
            "net:connect",
            Some((ObjectKind::Endpoint, "[::1]:8443")),
            Verdict::Deny,
        ));
        assert_common(&event, 4001, 4, 5);
        assert_eq!(event["type_uid"], 400105);
        assert_eq!(event["activity_name"], "Refuse");
        assert_eq!(event["dst_endpoint"]["ip"], "::1");
        assert_eq!(event["dst_endpoint"]["port"], 8443);
        assert_eq!(event["connection_info"]["protocol_ver_id"], 6);
        assert_eq!(event["connection_info"]["direction_id"], 4);
        assert_disposition(&event, 2, 2, 2);
    }

    #[test]
    fn net_other_actions() {
        let send = to_ocsf(&record(
            "net:send",
            Some((ObjectKind::Endpoint, "10.0.0.53:53")),
            Verdict::Allow,
        ));
        assert_common(&send, 4001, 4, 6);
        assert_eq!(send["connection_info"]["direction_id"], 3);
        let bind = to_ocsf(&record(
            "net:bind",
            Some((ObjectKind::Endpoint, "0.0.0.0:8080")),
            Verdict::Allow,
        ));
        assert_common(&bind, 4001, 4, 99);
        assert_eq!(bind["src_endpoint"]["port"], 8080);
        let dns = to_ocsf(&record(
            "net:dns",
            Some((ObjectKind::Target, "example.com")),
            Verdict::Allow,
        ));
        assert_common(&dns, 4003, 4, 1);
        assert_eq!(dns["query"]["hostname"], "example.com");
    }

    #[test]
    fn in_process_actions_are_api_activity() {
        let mut approved = record(
            "db:truncate_table",
            Some((ObjectKind::Target, "users")),
            Verdict::Allow,
        );
        approved.body.source = Source::Approval;
        let event = to_ocsf_with(
            &approved,
            &OcsfContext {
                hostname: Some("devbox".to_owned()),
            },
        );
        assert_eq!(event["class_uid"], 6003);
        assert_eq!(event["category_uid"], 6);
        assert_eq!(event["activity_id"], 4);
        assert_eq!(event["type_uid"], 600304);
        assert_eq!(event["severity_id"], 4);
        assert_eq!(event["api"]["operation"], "db:truncate_table");
        assert_eq!(event["api"]["service"]["name"], "db");
        assert_eq!(event["resources"][0]["name"], "users");
        assert_eq!(event["src_endpoint"]["hostname"], "devbox");
        assert_eq!(event["device"]["hostname"], "devbox");
        assert_eq!(event["actor"]["app_name"], "builder");
        assert_eq!(event["unmapped"]["secops"]["agent"], "builder");
        assert_eq!(event["unmapped"]["secops"]["source"], "approval");
        // A human's yes is Approved, distinct from a policy's Allowed.
        assert_disposition(&event, 1, 8, 1);

        for (action, activity_id) in [
            ("vcs:commit", 1),
            ("vcs:push", 3),
            ("vcs:force_push", 3),
            ("vcs:branch_delete", 4),
            ("db:read", 2),
            ("db:drop", 4),
            ("code:edit", 3),
            ("code:exec", 99),
            ("deploy:release", 99),
            ("comms:send", 99),
            ("tool:call", 99),
        ] {
            let event = to_ocsf(&record(action, None, Verdict::Escalate));
            assert_common(&event, 6003, 6, activity_id);
        }

        let mut rejected = record("deploy:release", None, Verdict::Deny);
        rejected.body.source = Source::Approval;
        assert_disposition(&to_ocsf(&rejected), 2, 25, 2);
    }

    #[test]
    fn garbled_objects_do_not_panic_and_keep_the_raw_value() {
        for garbled in [
            "not-an-endpoint",
            "[::1",
            "1.2.3.4:99999",
            ":443",
            "host:port:1",
            "",
            "/",
            "\u{0}\n\u{fffd}",
        ] {
            for action in [
                "net:connect",
                "net:dns",
                "net:bind",
                "fs:delete",
                "proc:exec",
                "proc:signal",
                "sys:module",
                "vcs:push",
                "nonsense",
                ":",
                "",
            ] {
                let event = to_ocsf(&record(
                    action,
                    Some((ObjectKind::Endpoint, garbled)),
                    Verdict::Deny,
                ));
                assert!(event.is_object());
                assert_eq!(event["unmapped"]["secops"]["object"]["value"], garbled);
                let class_uid = event["class_uid"].as_u64().unwrap_or(u64::MAX);
                let activity_id = event["activity_id"].as_u64().unwrap_or(u64::MAX);
                assert_eq!(event["type_uid"], class_uid * 100 + activity_id);
            }
        }
        let event = to_ocsf(&record(
            "net:connect",
            Some((ObjectKind::Endpoint, "not-an-endpoint")),
            Verdict::Deny,
        ));
        assert_eq!(event["dst_endpoint"]["name"], "not-an-endpoint");
        assert_eq!(event["connection_info"]["direction_id"], 0);
        let hostport = to_ocsf(&record(
            "net:connect",
            Some((ObjectKind::Endpoint, "example.com:443")),
            Verdict::Allow,
        ));
        assert_eq!(hostport["dst_endpoint"]["hostname"], "example.com");
        assert_eq!(hostport["dst_endpoint"]["port"], 443);
    }

    #[test]
    fn unknown_categories_and_empty_records_still_export() {
        let mut bare = record("weird", None, Verdict::Escalate);
        bare.body.agent = None;
        bare.body.cgroup_id = None;
        bare.body.pid = None;
        bare.body.tgid = None;
        bare.body.uid = None;
        bare.body.comm = None;
        bare.body.exe = None;
        bare.body.rule_id = None;
        bare.body.ts_ns = -1;
        bare.seq = u64::MAX;
        let event = to_ocsf(&bare);
        assert_eq!(event["class_uid"], 0);
        assert_eq!(event["category_uid"], 0);
        assert_eq!(event["activity_id"], 99);
        assert_eq!(event["type_uid"], 99);
        assert_eq!(event["activity_name"], "weird");
        // Floor, not truncation toward zero: -1 ns is in the millisecond before the epoch.
        assert_eq!(event["time"], -1);
        assert!(event.get("actor").is_none());
        assert!(event["metadata"].get("sequence").is_none());
        assert_eq!(
            event["metadata"]["original_event_uid"],
            u64::MAX.to_string()
        );
        assert_eq!(event["unmapped"]["secops"]["seq"], u64::MAX);
        assert!(event["unmapped"]["secops"]["agent"].is_null());
    }

    #[test]
    fn json_lines_one_object_per_line() {
        let mut tricky = record(
            "fs:write",
            Some((ObjectKind::Path, "/tmp/a\nb")),
            Verdict::Allow,
        );
        tricky.body.reason = "line one\nline two\r\n\"quoted\"".to_owned();
        let records = vec![
            record(
                "net:connect",
                Some((ObjectKind::Endpoint, "[::1]:443")),
                Verdict::Deny,
            ),
            tricky,
            record(
                "vcs:push",
                Some((ObjectKind::Target, "main")),
                Verdict::Escalate,
            ),
        ];
        let mut out = Vec::new();
        let count = write_ocsf_lines(records.clone(), &mut out).expect("writing to a Vec");
        assert_eq!(count, 3);
        let text = String::from_utf8(out).expect("JSON is UTF-8");
        assert!(text.ends_with('\n'));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        for (line, record) in lines.iter().zip(&records) {
            let event: Value = serde_json::from_str(line).expect("each line is JSON");
            assert!(event.is_object());
            assert_eq!(event, to_ocsf(record));
        }
        assert_eq!(write_ocsf_lines(Vec::new(), &mut Vec::new()).ok(), Some(0));
    }

    #[test]
    fn every_core_action_and_verdict_exports_consistently() {
        let actions = secops_common::CoreAction::ALL.iter().map(|a| a.as_str());
        for action in actions {
            for verdict in [Verdict::Allow, Verdict::Escalate, Verdict::Deny] {
                let event = to_ocsf(&record(action, None, verdict));
                let class_uid = event["class_uid"].as_u64().unwrap_or(0);
                assert_ne!(class_uid, 0, "{action} has no OCSF class");
                let activity_id = event["activity_id"].as_u64().unwrap_or(u64::MAX);
                assert_eq!(event["type_uid"], class_uid * 100 + activity_id);
                assert_eq!(event["category_uid"], class_uid / 1000);
                let expected_action = if verdict == Verdict::Allow { 1 } else { 2 };
                assert_eq!(event["action_id"], expected_action);
            }
        }
    }
}
