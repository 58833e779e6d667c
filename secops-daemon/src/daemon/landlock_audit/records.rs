//! The kernel's Landlock audit records as text (`security/landlock/audit.c`, Linux 6.15+,
//! Landlock ABI 7), and what a refusal was: which of secops' action types its syscall and
//! blockers make it. Pure: no I/O.
//!
//! `AUDIT_LANDLOCK_ACCESS` (1423): `domain=<hex> blockers=<a>,<b> <lsm data>`, where the
//! data is `path="<dir or file>" dev=... ino=...` for files (the directory for removals,
//! creations, renames and links), `opid=<pid> ocomm=<comm>` for a signal, `path=<hex>` for
//! an abstract unix socket. `AUDIT_LANDLOCK_DOMAIN` (1424): `domain=<hex> status=allocated
//! mode=enforcing pid=<the task that called landlock_restrict_self> uid=.. exe=.. comm=..`,
//! once, right after the domain's first denial; `status=deallocated denials=<n>` at its end.
//! A task with an audit context adds `SYSCALL` (1300: `syscall=`, `a0..a3`, `exit=`, `pid=`,
//! `comm=`, `exe=`) and `EOE` (1320) with the same serial.

use secops_common::CoreAction;

pub(crate) const LANDLOCK_ACCESS: u16 = 1423;
pub(crate) const LANDLOCK_DOMAIN: u16 = 1424;
pub(crate) const SYSCALL: u16 = 1300;
pub(crate) const EOE: u16 = 1320;

/// One record: when (UTC ns), its event's serial, and its fields in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) at_ns: i64,
    pub(crate) serial: u64,
    pub(crate) fields: Vec<(String, String)>,
}

impl Record {
    /// A field's value as the kernel wrote it (quotes removed; hex-encoded untrusted strings
    /// are left as hex: see [`Record::text`]).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// An untrusted string field (path, comm, exe): the kernel writes it quoted when it is
    /// plain, else as hex; `None` when absent.
    pub(crate) fn text(&self, key: &str) -> Option<Vec<u8>> {
        let raw = self.fields.iter().find(|(k, _)| k == key)?;
        Some(if raw.1.starts_with('"') {
            raw.1.trim_matches('"').as_bytes().to_vec()
        } else {
            hex::decode(&raw.1).unwrap_or_else(|_| raw.1.as_bytes().to_vec())
        })
    }

    pub(crate) fn number(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }

    /// `a0`..`a3` of a SYSCALL record, which the kernel writes in hex.
    pub(crate) fn arg(&self, index: usize) -> Option<u64> {
        u64::from_str_radix(self.get(&format!("a{index}"))?, 16).ok()
    }

    /// The Landlock domain id (hex in the record).
    pub(crate) fn domain(&self) -> Option<u64> {
        u64::from_str_radix(self.get("domain")?, 16).ok()
    }

    pub(crate) fn blockers(&self) -> Vec<&str> {
        self.get("blockers")
            .map(|b| b.split(',').collect())
            .unwrap_or_default()
    }
}

/// Parses `audit(<secs>.<ms>:<serial>): k=v k="v v" ...`; `None` when the header is not
/// there. Values keep their quotes (so [`Record::text`] can tell quoted from hex).
pub(crate) fn parse(text: &str) -> Option<Record> {
    let rest = text.strip_prefix("audit(")?;
    let (stamp, rest) = rest.split_once("):")?;
    let (time, serial) = stamp.split_once(':')?;
    let (secs, millis) = time.split_once('.').unwrap_or((time, "0"));
    let at_ns = secs.parse::<i64>().ok()? * 1_000_000_000 + millis.parse::<i64>().ok()? * 1_000_000;
    let serial = serial.parse().ok()?;
    let mut fields = Vec::new();
    let mut rest = rest.trim_start();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&after[..end + 2], &quoted[end + 1..]),
                None => (after, ""),
            }
        } else {
            after.split_once(' ').unwrap_or((after, ""))
        };
        fields.push((key.trim().to_owned(), value.to_owned()));
        rest = next.trim_start();
    }
    Some(Record {
        at_ns,
        serial,
        fields,
    })
}

/// What a refusal was, as secops' action types, most specific first: from the syscall where
/// the record has one, else from the blockers. The first one a rule of the agent's policy
/// denies is the one the record names.
pub(crate) fn action_candidates(syscall: Option<&Record>, blockers: &[&str]) -> Vec<CoreAction> {
    use CoreAction::*;
    let by_blockers = || -> Vec<CoreAction> {
        let mut out = Vec::new();
        let mut add = |a: CoreAction| {
            if !out.contains(&a) {
                out.push(a)
            }
        };
        for blocker in blockers {
            match *blocker {
                "fs.execute" => add(ProcExec),
                "fs.read_file" | "fs.read_dir" => {
                    add(SecretRead);
                    add(FsRead)
                }
                "fs.write_file" => add(FsWrite),
                "fs.truncate" => add(FsTruncate),
                "fs.remove_file" | "fs.remove_dir" => add(FsDelete),
                "fs.refer" => {
                    add(FsRename);
                    add(FsLink)
                }
                b if b.starts_with("fs.make_") => add(FsCreate),
                "scope.signal" => add(ProcSignal),
                "net.connect_tcp" | "scope.abstract_unix_socket" => add(NetConnect),
                "net.bind_tcp" => add(NetBind),
                _ => {}
            }
        }
        out
    };
    let Some(call) = syscall else {
        return by_blockers();
    };
    // x86_64 numbers: the kernel's audit arch is in the record (`arch=c000003e`).
    if call.get("arch") != Some("c000003e") {
        return by_blockers();
    }
    // open's flags are its a1, openat's its a2 (openat2 passes a pointer: unknown).
    let flags = match call.number_of_syscall() {
        Some(2) => call.arg(1),
        Some(257) => call.arg(2),
        _ => None,
    };
    match call.number_of_syscall() {
        Some(87) | Some(263) | Some(84) => vec![FsDelete],
        Some(82) | Some(264) | Some(316) => vec![FsRename],
        Some(86) | Some(265) => vec![FsLink],
        Some(76) | Some(77) => vec![FsTruncate],
        Some(85) => vec![FsTruncate, FsCreate],
        Some(59) | Some(322) => vec![ProcExec],
        Some(83) | Some(258) | Some(133) | Some(259) | Some(88) | Some(266) => vec![FsCreate],
        Some(62) | Some(200) | Some(234) | Some(129) | Some(297) | Some(424) => vec![ProcSignal],
        Some(2) | Some(257) | Some(437) => {
            // O_TRUNC on an open that wants to write: the truncation is the act to name.
            let truncating = flags.is_some_and(|f| f & 0o1000 != 0);
            let mut out = by_blockers();
            if truncating && out.contains(&FsWrite) {
                out.retain(|a| *a != FsTruncate);
                out.insert(0, FsTruncate);
            }
            out
        }
        _ => by_blockers(),
    }
}

impl Record {
    fn number_of_syscall(&self) -> Option<u64> {
        self.number("syscall")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCESS: &str = r#"audit(1796183198.304:7): domain=110a9a332 blockers=fs.write_file,fs.remove_file,fs.refer path="/tmp/llexp/prot" dev="vda" ino=10067972"#;
    const SYSCALL_MV: &str = r#"audit(1796183198.304:7): arch=c000003e syscall=316 success=no exit=-13 a0=ffffff9c a1=7ffd3f9fd92e a2=ffffff9c a3=7ffd3f9fd938 items=0 ppid=29462 pid=29504 auid=4294967295 uid=0 comm="mv" exe="/usr/bin/mv" key=(null)"#;

    #[test]
    fn an_access_record_parses_into_its_fields() {
        let r = parse(ACCESS).unwrap();
        assert_eq!(r.serial, 7);
        assert_eq!(r.at_ns, 1_796_183_198_304_000_000);
        assert_eq!(r.domain(), Some(0x110a9a332));
        assert_eq!(
            r.blockers(),
            vec!["fs.write_file", "fs.remove_file", "fs.refer"]
        );
        assert_eq!(r.text("path").unwrap(), b"/tmp/llexp/prot");
        assert_eq!(r.number("ino"), Some(10067972));
        assert!(parse("no header").is_none());
    }

    #[test]
    fn untrusted_strings_in_hex_are_decoded() {
        let r = parse("audit(1.000:1): domain=1 blockers=scope.abstract_unix_socket path=00736563")
            .unwrap();
        assert_eq!(r.text("path").unwrap(), b"\0sec");
        let r = parse(r#"audit(1.000:1): comm="a b" exe=2F782079"#).unwrap();
        assert_eq!(r.text("comm").unwrap(), b"a b");
        assert_eq!(r.text("exe").unwrap(), b"/x y");
    }

    #[test]
    fn the_syscall_names_the_action_and_blockers_stand_in_without_it() {
        let access = parse(ACCESS).unwrap();
        let mv = parse(SYSCALL_MV).unwrap();
        assert_eq!(
            action_candidates(Some(&mv), &access.blockers()),
            vec![CoreAction::FsRename]
        );
        assert_eq!(
            action_candidates(None, &access.blockers()),
            vec![
                CoreAction::FsWrite,
                CoreAction::FsDelete,
                CoreAction::FsRename,
                CoreAction::FsLink
            ]
        );
        let open_trunc =
            parse("audit(1.000:2): arch=c000003e syscall=257 a0=ffffff9c a1=1 a2=241 a3=1b6")
                .unwrap();
        assert_eq!(
            action_candidates(Some(&open_trunc), &["fs.write_file"])[0],
            CoreAction::FsTruncate
        );
        let open_read =
            parse("audit(1.000:3): arch=c000003e syscall=257 a0=ffffff9c a1=1 a2=0 a3=0").unwrap();
        assert_eq!(
            action_candidates(Some(&open_read), &["fs.read_file"]),
            vec![CoreAction::SecretRead, CoreAction::FsRead]
        );
    }
}
