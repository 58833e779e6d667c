//! The kernel <-> daemon contract cannot drift: every struct and union of
//! `secops-ebpf/include/secops.h`, as `alignchecker.bpf.c`'s BTF describes it, has the same
//! size, member names, offsets and member sizes as its `#[repr(C)]` mirror in
//! `secops_common::kernel`; every enumerator has the same value as its Rust constant; and
//! every program object declares exactly the maps the daemon opens.

use std::collections::{BTreeMap, BTreeSet};
use std::mem::{offset_of, size_of};

use secops_common::kernel::*;
use secops_host_tests::btf::Btf;

/// One Rust mirror: the C name it mirrors, its size, and (name, offset, size) per field.
struct RustRecord {
    c_name: &'static str,
    size: usize,
    fields: Vec<(&'static str, usize, usize)>,
}

fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

macro_rules! record {
    ($c:literal, struct $ty:ident { $($field:ident),* $(,)? }) => {{
        // A field added to the Rust struct and not listed here fails to compile, so the
        // list (and with it the comparison) is always complete.
        #[allow(dead_code)]
        fn exhaustive(v: $ty) {
            let $ty { $($field: _),* } = v;
        }
        RustRecord {
            c_name: $c,
            size: size_of::<$ty>(),
            fields: vec![$((
                stringify!($field),
                offset_of!($ty, $field),
                field_size(|v: &$ty| &v.$field),
            )),*],
        }
    }};
    ($c:literal, union $ty:ident { $($field:ident),* $(,)? }) => {{
        RustRecord {
            c_name: $c,
            size: size_of::<$ty>(),
            fields: vec![$((
                stringify!($field),
                offset_of!($ty, $field),
                // SAFETY: only the field's type is used, never its value.
                field_size(|v: &$ty| unsafe { &v.$field }),
            )),*],
        }
    }};
}

fn rust_records() -> Vec<RustRecord> {
    vec![
        record!(
            "secops_config",
            struct Config { root_cgroup_id, agent_level, flags, decision_epoch, pad }
        ),
        record!("secops_agent", struct Agent { agent_index, autonomy, flags, dns_port }),
        record!("secops_ancestor_key", struct AncestorKey { cgroup_id, level, pad }),
        record!("secops_port_range", struct PortRange { lo, hi, protocols, pad }),
        record!("secops_egress4_key", struct Egress4Key { prefixlen, agent_index, addr }),
        record!("secops_egress6_key", struct Egress6Key { prefixlen, agent_index, addr }),
        record!("secops_egress_value", struct EgressValue { n_ranges, pad, ranges }),
        record!(
            "secops_egress_allowed_key",
            struct EgressAllowedKey { agent_index, family, protocol, port, pad, addr }
        ),
        record!(
            "secops_egress_allowed_value",
            struct EgressAllowedValue { count, first_ns, last_ns }
        ),
        record!(
            "secops_event_header",
            struct EventHeader {
                kind, agent_index, cgroup_id, ts_boot_ns, pid, tgid, uid, verdict, comm,
                decision_epoch, decision_slot, pad
            }
        ),
        record!("secops_exec_body", struct ExecBody { filename, argv, argv_len, args_size }),
        record!("secops_exit_body", struct ExitBody { exit_code, pad }),
        record!("secops_unlink_body", struct UnlinkBody { dfd, flags, path }),
        record!(
            "secops_rename_body",
            struct RenameBody { olddfd, newdfd, flags, pad, oldpath, newpath }
        ),
        record!("secops_net_body", struct NetBody { family, protocol, port, kind, reason, addr }),
        record!("secops_dns_origin", struct DnsOrigin { family, port, pad, addr }),
        record!("secops_name_key", struct NameKey { agent_index, family, pad, addr }),
        record!("secops_name_value", struct NameValue { n_ranges, pad, ranges, expires_ns }),
        record!("secops_inode_key", struct InodeKey { agent_index, dev, ino }),
        record!(
            "secops_grant_key",
            struct GrantKey { agent_index, kind, op, port, dev, family, pad, ino, addr }
        ),
        record!("secops_grant", struct Grant { expires_ns, ticket, flags, pad }),
        record!("secops_decision_key", struct DecisionKey { cgroup_id, epoch, slot, verdict, pad }),
        record!("secops_grant_body", struct GrantBody { key, ticket, flags, lsm_op }),
        record!(
            "secops_inode_rule",
            struct InodeRule { own, child, deep, own_rule, child_rule, deep_rule }
        ),
        record!(
            "secops_lsm_body",
            struct LsmBody {
                op, rule, dev, anchor_dev, ino, anchor_ino, depth, n_names, target_pid, signal,
                family, sock_type, protocol, port, addr, names
            }
        ),
        record!("secops_event_body", union EventBody { exec, exit, unlink, rename, net, lsm, grant }),
        record!("secops_event", struct Event { header, body }),
    ]
}

/// Every C enumerator and the Rust constant that mirrors it.
fn rust_constants() -> BTreeMap<&'static str, i64> {
    BTreeMap::from([
        ("SECOPS_MAX_PORT_RANGES", MAX_PORT_RANGES as i64),
        ("SECOPS_PATH_LEN", PATH_LEN as i64),
        ("SECOPS_ARGV_LEN", ARGV_LEN as i64),
        ("SECOPS_COMM_LEN", COMM_LEN as i64),
        ("SECOPS_STATS_LEN", STATS_LEN as i64),
        ("SECOPS_STATS_SUBS", STATS_SUBS as i64),
        ("SECOPS_STATS_GRANT_NET", i64::from(STATS_GRANT_NET)),
        ("SECOPS_FS_OPS", FS_OPS as i64),
        ("SECOPS_MAX_DEPTH", MAX_DEPTH as i64),
        ("SECOPS_NAME_SLOTS", NAME_SLOTS as i64),
        ("SECOPS_NAME_LEN", NAME_LEN as i64),
        ("SECOPS_COUNT_SLOTS", COUNT_SLOTS as i64),
        ("SECOPS_EVENT_EXEC", i64::from(EVENT_EXEC)),
        ("SECOPS_EVENT_EXIT", i64::from(EVENT_EXIT)),
        ("SECOPS_EVENT_UNLINK", i64::from(EVENT_UNLINK)),
        ("SECOPS_EVENT_RENAME", i64::from(EVENT_RENAME)),
        ("SECOPS_EVENT_NET", i64::from(EVENT_NET)),
        ("SECOPS_EVENT_LSM", i64::from(EVENT_LSM)),
        ("SECOPS_EVENT_GRANT", i64::from(EVENT_GRANT)),
        ("SECOPS_VERDICT_ALLOW", i64::from(VERDICT_ALLOW)),
        ("SECOPS_VERDICT_DENY", i64::from(VERDICT_DENY)),
        ("SECOPS_VERDICT_ESCALATE", i64::from(VERDICT_ESCALATE)),
        ("SECOPS_OP_DELETE", OP_DELETE as i64),
        ("SECOPS_OP_RENAME", OP_RENAME as i64),
        ("SECOPS_OP_LINK", OP_LINK as i64),
        ("SECOPS_OP_TRUNCATE", OP_TRUNCATE as i64),
        ("SECOPS_OP_WRITE", OP_WRITE as i64),
        ("SECOPS_OP_READ", OP_READ as i64),
        ("SECOPS_OP_EXEC", OP_EXEC as i64),
        ("SECOPS_OP_CONNECT", OP_CONNECT as i64),
        ("SECOPS_RULE_NONE", i64::from(RULE_NONE)),
        ("SECOPS_RULE_ALLOW", i64::from(RULE_ALLOW)),
        ("SECOPS_RULE_DENY", i64::from(RULE_DENY)),
        ("SECOPS_RULE_ESCALATE", i64::from(RULE_ESCALATE)),
        ("SECOPS_RULE_ALLOW_COUNTED", i64::from(RULE_ALLOW_COUNTED)),
        ("SECOPS_LSM_UNLINK", i64::from(LSM_UNLINK)),
        ("SECOPS_LSM_RMDIR", i64::from(LSM_RMDIR)),
        ("SECOPS_LSM_RENAME_SOURCE", i64::from(LSM_RENAME_SOURCE)),
        ("SECOPS_LSM_RENAME_TARGET", i64::from(LSM_RENAME_TARGET)),
        ("SECOPS_LSM_LINK", i64::from(LSM_LINK)),
        ("SECOPS_LSM_TRUNCATE", i64::from(LSM_TRUNCATE)),
        ("SECOPS_LSM_OPEN_WRITE", i64::from(LSM_OPEN_WRITE)),
        ("SECOPS_LSM_OPEN_READ", i64::from(LSM_OPEN_READ)),
        ("SECOPS_LSM_EXEC", i64::from(LSM_EXEC)),
        ("SECOPS_LSM_EXEC_FILELESS", i64::from(LSM_EXEC_FILELESS)),
        ("SECOPS_LSM_MMAP_EXEC", i64::from(LSM_MMAP_EXEC)),
        ("SECOPS_LSM_SOCKET_CREATE", i64::from(LSM_SOCKET_CREATE)),
        ("SECOPS_LSM_SOCKET_CONNECT", i64::from(LSM_SOCKET_CONNECT)),
        ("SECOPS_LSM_UNIX_CONNECT", i64::from(LSM_UNIX_CONNECT)),
        ("SECOPS_LSM_BPF", i64::from(LSM_BPF)),
        ("SECOPS_LSM_PTRACE", i64::from(LSM_PTRACE)),
        ("SECOPS_LSM_SIGNAL", i64::from(LSM_SIGNAL)),
        ("SECOPS_LSM_CGROUP_WRITE", i64::from(LSM_CGROUP_WRITE)),
        ("SECOPS_LSM_MOUNT", i64::from(LSM_MOUNT)),
        ("SECOPS_LSM_UMOUNT", i64::from(LSM_UMOUNT)),
        ("SECOPS_LSM_MOVE_MOUNT", i64::from(LSM_MOVE_MOUNT)),
        ("SECOPS_LSM_PIVOT_ROOT", i64::from(LSM_PIVOT_ROOT)),
        ("SECOPS_LSM_MODULE_REQUEST", i64::from(LSM_MODULE_REQUEST)),
        ("SECOPS_LSM_KERNEL_LOAD", i64::from(LSM_KERNEL_LOAD)),
        ("SECOPS_LSM_CHMOD", i64::from(LSM_CHMOD)),
        ("SECOPS_LSM_MKDIR", i64::from(LSM_MKDIR)),
        ("SECOPS_LSM_SYMLINK", i64::from(LSM_SYMLINK)),
        (
            "SECOPS_AGENT_EGRESS_ENFORCED",
            i64::from(AGENT_EGRESS_ENFORCED),
        ),
        ("SECOPS_AUTONOMY_FULL", i64::from(AUTONOMY_FULL)),
        ("SECOPS_AUTONOMY_SEMI", i64::from(AUTONOMY_SEMI)),
        ("SECOPS_AUTONOMY_SUPERVISED", i64::from(AUTONOMY_SUPERVISED)),
        ("SECOPS_AUTONOMY_LOCKED", i64::from(AUTONOMY_LOCKED)),
        ("SECOPS_PROTO_TCP", i64::from(PROTO_TCP)),
        ("SECOPS_PROTO_UDP", i64::from(PROTO_UDP)),
        ("SECOPS_AF_INET", i64::from(AF_INET)),
        ("SECOPS_AF_INET6", i64::from(AF_INET6)),
        ("SECOPS_IPPROTO_TCP", i64::from(IPPROTO_TCP)),
        ("SECOPS_IPPROTO_UDP", i64::from(IPPROTO_UDP)),
        ("SECOPS_NET_CONNECT", i64::from(NET_CONNECT)),
        ("SECOPS_NET_SENDMSG", i64::from(NET_SENDMSG)),
        ("SECOPS_NET_UNLISTED", i64::from(NET_UNLISTED)),
        ("SECOPS_NET_DNS_LISTENER", i64::from(NET_DNS_LISTENER)),
        ("SECOPS_DNS_PORT", i64::from(DNS_PORT)),
        ("SECOPS_GRANT_FILE", i64::from(GRANT_FILE)),
        ("SECOPS_GRANT_NET", i64::from(GRANT_NET)),
        ("SECOPS_GRANT_ONE_SHOT", i64::from(GRANT_ONE_SHOT)),
    ])
}

/// Every difference between the C side (BTF) and the Rust records, as readable lines.
fn differences(btf: &Btf, records: &[RustRecord]) -> Vec<String> {
    let mut problems = Vec::new();
    for r in records {
        let (c_size, c_members) = match btf.record(r.c_name) {
            Ok(found) => found,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        if c_size != r.size {
            problems.push(format!(
                "{}: C size {c_size}, Rust size {}",
                r.c_name, r.size
            ));
        }
        for m in &c_members {
            match r.fields.iter().find(|(name, _, _)| *name == m.name) {
                None => problems.push(format!("{}.{}: only in C", r.c_name, m.name)),
                Some((_, offset, size)) => {
                    if *offset != m.offset {
                        problems.push(format!(
                            "{}.{}: C offset {}, Rust offset {offset}",
                            r.c_name, m.name, m.offset
                        ));
                    }
                    if *size != m.size {
                        problems.push(format!(
                            "{}.{}: C size {}, Rust size {size}",
                            r.c_name, m.name, m.size
                        ));
                    }
                }
            }
        }
        for (name, _, _) in &r.fields {
            if !c_members.iter().any(|m| m.name == *name) {
                problems.push(format!("{}.{name}: only in Rust", r.c_name));
            }
        }
    }
    problems
}

fn alignchecker() -> Btf {
    Btf::from_elf(secops_ebpf::ALIGNCHECKER).unwrap_or_else(|e| panic!("alignchecker BTF: {e}"))
}

#[test]
fn every_shared_struct_has_the_same_layout_in_c_and_rust() {
    let problems = differences(&alignchecker(), &rust_records());
    assert!(
        problems.is_empty(),
        "secops.h and secops_common::kernel disagree:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_enumerator_has_the_same_value_in_c_and_rust() {
    let c = alignchecker().enumerators("secops_");
    let rust = rust_constants();
    assert!(!c.is_empty(), "no secops_* enums in the alignchecker BTF");
    let mut problems = Vec::new();
    for (name, value) in &c {
        match rust.get(name.as_str()) {
            None => problems.push(format!("{name} = {value}: no Rust constant")),
            Some(r) if r != value => problems.push(format!("{name}: C {value}, Rust {r}")),
            Some(_) => {}
        }
    }
    for name in rust.keys() {
        if !c.contains_key(*name) {
            problems.push(format!("{name}: only in Rust"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_object_declares_the_maps_the_daemon_opens() {
    let expected: BTreeSet<&str> = MAPS.into_iter().collect();
    for (name, bytes) in secops_ebpf::PROGRAM_OBJECTS {
        let btf = Btf::from_elf(bytes).unwrap_or_else(|e| panic!("{name} BTF: {e}"));
        let vars = btf.datasec_vars(".maps");
        let found: BTreeSet<&str> = vars.iter().map(String::as_str).collect();
        assert_eq!(found, expected, "maps of {name}.bpf.o");
    }
}

/// The comparison really fails when one side changes.
#[test]
fn a_changed_field_is_caught() {
    let btf = alignchecker();
    let mut records = rust_records();
    let config = records
        .iter_mut()
        .find(|r| r.c_name == "secops_config")
        .unwrap_or_else(|| panic!("config record"));
    config.fields[1].1 += 4; // agent_level moved
    config.size += 8;
    config.fields.push(("extra", 16, 8));
    let problems = differences(&btf, &records);
    assert_eq!(
        problems,
        [
            "secops_config: C size 24, Rust size 32",
            "secops_config.agent_level: C offset 8, Rust offset 12",
            "secops_config.extra: only in Rust",
        ]
    );
    let mut records = rust_records();
    records.retain(|r| r.c_name != "secops_event");
    records.push(RustRecord {
        c_name: "secops_event",
        size: size_of::<Event>(),
        fields: vec![("header", 0, size_of::<EventHeader>())],
    });
    assert_eq!(
        differences(&btf, &records),
        ["secops_event.body: only in C"]
    );
}
