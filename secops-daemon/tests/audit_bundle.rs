//! Evidence bundles: a real log written by `AuditStore` (with the policy records and policy
//! copies the daemon makes), bundled by `secops audit bundle`, and checked by `secops audit
//! verify-bundle` in a separate process with an empty HOME and no state directory. Each
//! tampering is reported, exit 1, naming what is wrong.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use secops_common::{RiskLevel, Verdict};
use secops_daemon::audit::bundle::{decode_entries, encode_entries, ChainEntry, Manifest};
use secops_daemon::audit::chain::RedactedRecord;
use secops_daemon::audit::frame::Frame;
use secops_daemon::audit::{
    policy_copy, AuditObject, AuditPaths, AuditStore, CheckpointPolicy, NewRecord, ObjectKind,
    Source,
};
use tempfile::TempDir;

const T0: i64 = 1_800_000_000_000_000_000;
const SEC: i64 = 1_000_000_000;

fn rec(i: u64) -> NewRecord {
    NewRecord {
        ts_ns: T0 + i as i64 * SEC,
        agent: Some(["coder", "builder", "tester"][(i % 3) as usize].into()),
        cgroup_id: Some(0x1000 + i % 3),
        pid: Some(1000 + i as u32),
        tgid: Some(1000 + i as u32),
        uid: Some(1000),
        comm: Some("python3".into()),
        exe: Some("/usr/bin/python3".into()),
        action: ["fs:delete", "net:connect", "proc:exec"][(i % 3) as usize].into(),
        object: Some(AuditObject {
            kind: ObjectKind::Path,
            value: format!("/work/src/secret_{i}.py"),
        }),
        verdict: Verdict::Deny,
        risk: RiskLevel::Medium,
        rule_id: Some("workspace-only".into()),
        reason: format!("outside the workspace (record {i})"),
        source: Source::Kernel,
    }
}

struct Log {
    _dir: TempDir,
    state: PathBuf,
    policy_file: PathBuf,
    policy_hash: String,
    public_key: PathBuf,
}

/// A log of 300 records (checkpoints every 25; record `i` at `T0 + i` s) with the policy
/// recorded as in force at record 1 and reloaded (another policy) at record 150, copies of
/// both kept.
fn log() -> Log {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let paths = AuditPaths::new(&state);
    let mut store = AuditStore::open(
        &paths,
        CheckpointPolicy {
            every_records: 25,
            every: Duration::from_secs(3600),
        },
    )
    .unwrap();
    let policy_file = dir.path().join("policy.yaml");
    let write_policy = |risk: &str| {
        std::fs::write(
            &policy_file,
            format!("agents:\n  - name: coder\n    workspace: /work\nrules:\n  - id: r\n    actions: [fs:delete]\n    risk: {risk}\n"),
        )
        .unwrap();
        let policy = secops_daemon::policy::load_policy(&policy_file).unwrap();
        policy_copy::keep(&state, &policy).unwrap();
        policy
    };
    let first = write_policy("low");
    let mut start = policy_copy::in_force_at_start(&first);
    start.ts_ns = T0;
    store.append(&start).unwrap();
    for i in 2..=149 {
        store.append(&rec(i)).unwrap();
    }
    let second = write_policy("high");
    let mut reload = start.clone();
    reload.ts_ns = T0 + 150 * SEC;
    reload.reason = format!(
        "policy reloaded (SIGHUP): sha256 {} -> {}; files: {}",
        first.content_hash,
        second.content_hash,
        policy_file.display()
    );
    store.append(&reload).unwrap();
    for i in 151..=300 {
        store.append(&rec(i)).unwrap();
    }
    store.checkpoint_now().unwrap();
    drop(store);
    Log {
        public_key: paths.public_key.clone(),
        _dir: dir,
        state,
        policy_file,
        policy_hash: first.content_hash,
    }
}

fn rfc3339(ns: i64) -> String {
    humantime::format_rfc3339(std::time::UNIX_EPOCH + Duration::from_nanos(ns as u64)).to_string()
}

fn secops(state: Option<&Path>, home: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_secops"));
    match state {
        Some(s) => c.arg("--state-dir").arg(s),
        // Nothing there: verify-bundle must need no state at all.
        None => c.arg("--state-dir").arg(home.join("no-such-state")),
    };
    c.args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap()
}

fn bundle(log: &Log, out: &Path, extra: &[&str]) {
    let since = rfc3339(T0 + 100 * SEC);
    let until = rfc3339(T0 + 200 * SEC);
    let mut args = vec![
        "audit", "bundle", "--since", &since, "--until", &until, "-o",
    ];
    let out_s = out.to_str().unwrap();
    args.push(out_s);
    args.extend_from_slice(extra);
    let o = secops(Some(&log.state), out.parent().unwrap(), &args);
    assert!(
        o.status.success(),
        "bundle failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs verify-bundle from an empty HOME with no state directory; exit code and output.
fn verify(file: &Path, key: Option<&Path>) -> (i32, String) {
    let home = tempfile::tempdir().unwrap();
    let mut args = vec!["audit", "verify-bundle", file.to_str().unwrap()];
    if let Some(k) = key {
        args.extend_from_slice(&["--public-key", k.to_str().unwrap()]);
    }
    let o = secops(None, home.path(), &args);
    assert!(
        !home.path().join("no-such-state").exists(),
        "verify-bundle made a state dir"
    );
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn read_tar(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut out = BTreeMap::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut b = Vec::new();
        e.read_to_end(&mut b).unwrap();
        out.insert(name, b);
    }
    out
}

fn write_tar(path: &Path, members: &BTreeMap<String, Vec<u8>>) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        b.append_data(&mut h, name, bytes.as_slice()).unwrap();
    }
    b.finish().unwrap();
}

/// Rewrites the manifest's member hashes after a change (what a careless forger would do;
/// the manifest's signature then fails, but the chain's own finding must be named too).
fn rehash(members: &mut BTreeMap<String, Vec<u8>>) {
    let mut m: Manifest = serde_json::from_slice(&members["manifest.json"]).unwrap();
    for member in &mut m.members {
        if let Some(b) = members.get(&member.name) {
            use sha2::Digest;
            member.sha256 = hex::encode(sha2::Sha256::digest(b));
            member.bytes = b.len() as u64;
        }
    }
    members.insert(
        "manifest.json".into(),
        serde_json::to_vec_pretty(&m).unwrap(),
    );
}

fn tampered(
    good: &Path,
    name: &str,
    change: impl FnOnce(&mut BTreeMap<String, Vec<u8>>),
) -> PathBuf {
    let mut members = read_tar(good);
    change(&mut members);
    rehash(&mut members);
    let out = good.with_file_name(format!("{name}.bundle"));
    write_tar(&out, &members);
    out
}

fn edit_chain(members: &mut BTreeMap<String, Vec<u8>>, f: impl FnOnce(&mut Vec<ChainEntry>)) {
    let mut entries = decode_entries(&members["chain.bin"]).unwrap();
    f(&mut entries);
    members.insert("chain.bin".into(), encode_entries(entries.iter()));
}

fn record_seq(e: &ChainEntry) -> Option<(u64, Option<String>)> {
    match e {
        ChainEntry::Frame(Frame::Record(r)) => {
            let (seq, body) = secops_daemon::audit::chain::decode_record(&r.encoding).unwrap();
            Some((seq, body.agent))
        }
        _ => None,
    }
}

fn assert_problem(file: &Path, key: Option<&Path>, want: &str) {
    let (code, out) = verify(file, key);
    assert_eq!(code, 1, "expected a problem ({want}), got:\n{out}");
    assert!(out.contains(want), "expected {want:?} in:\n{out}");
}

#[test]
fn bundle_for_one_agent_verifies_offline_and_every_tampering_is_named() {
    let log = log();
    let work = tempfile::tempdir().unwrap();
    let good = work.path().join("coder.bundle");
    bundle(&log, &good, &["--agent", "coder"]);

    let (code, out) = verify(&good, Some(&log.public_key));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("result: OK"), "{out}");
    // The window is records 100..=200 of coder (every third); the policy in force at its
    // start was named at record 1 (the start record), so the chain reaches back there.
    let members = read_tar(&good);
    let m: Manifest = serde_json::from_slice(&members["manifest.json"]).unwrap();
    assert_eq!(m.first_seq, 1);
    assert_eq!(m.policies.len(), 2, "{m:?}");
    assert_eq!(m.policies[0], log.policy_hash);
    let jsonl = String::from_utf8(members["records.jsonl"].clone()).unwrap();
    assert!(!jsonl.contains("\"builder\"") && !jsonl.contains("\"tester\""));
    assert!(
        jsonl.contains("secret_102.py"),
        "coder's record 102 is shown"
    );
    assert!(
        !jsonl.contains("secret_101.py"),
        "builder's record 101 is not"
    );
    let ocsf = String::from_utf8(members["ocsf.jsonl"].clone()).unwrap();
    assert_eq!(ocsf.lines().count(), jsonl.lines().count());
    let chain = String::from_utf8_lossy(&members["chain.bin"]);
    assert!(
        !chain.contains("secret_101.py"),
        "redacted records carry no body"
    );

    // A record removed.
    let f = tampered(&good, "removed", |m| {
        edit_chain(m, |e| {
            e.retain(|x| record_seq(x).is_none_or(|(s, _)| s != 102))
        })
    });
    assert_problem(&f, None, "records 102..=102 are missing");
    // A record changed (its reason).
    let f = tampered(&good, "changed", |m| {
        edit_chain(m, |e| {
            for x in e.iter_mut() {
                if let ChainEntry::Frame(Frame::Record(r)) = x {
                    if let Some(at) = memchr::memmem::find(&r.encoding, b"(record 105)") {
                        r.encoding[at + 8] = b'6';
                    }
                }
            }
        })
    });
    assert_problem(&f, None, "record 105: its content does not match its hash");
    // A policy byte changed.
    let f = tampered(&good, "policy", |m| {
        let name = format!("policy/{}.json", log.policy_hash);
        let text = String::from_utf8(m[&name].clone()).unwrap();
        m.insert(
            name,
            text.replacen("risk: low", "risk: lo ", 1).into_bytes(),
        );
    });
    assert_problem(&f, None, "a policy byte was changed");
    // The key swapped: another key in the bundle, and a pinned key the bundle is not from.
    let other = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let other_pub = work.path().join("other.pub");
    std::fs::write(&other_pub, hex::encode(other.verifying_key().to_bytes())).unwrap();
    let f = tampered(&good, "key", |m| {
        m.insert(
            "public-key.hex".into(),
            hex::encode(other.verifying_key().to_bytes()).into_bytes(),
        );
    });
    assert_problem(&f, None, "its signature does not verify with key");
    assert_problem(&good, Some(&other_pub), "none of them the pinned key");
    // A checkpoint dropped (from the middle, then the last).
    let f = tampered(&good, "checkpoint", |m| {
        edit_chain(m, |e| {
            e.retain(|x| !matches!(x, ChainEntry::Frame(Frame::Checkpoint(c)) if c.number == 5))
        })
    });
    assert_problem(&f, None, "checkpoint(s) 5..=5 are missing");
    let f = tampered(&good, "last-checkpoint", |m| {
        edit_chain(m, |e| {
            let last = e
                .iter()
                .rposition(|x| matches!(x, ChainEntry::Frame(Frame::Checkpoint(_))))
                .unwrap();
            e.remove(last);
        })
    });
    assert_problem(&f, None, "are not under a checkpoint");
    // Coder's record left out (redacted).
    let f = tampered(&good, "left-out", |m| {
        edit_chain(m, |e| {
            for x in e.iter_mut() {
                if record_seq(x).is_some_and(|(s, _)| s == 111) {
                    let ChainEntry::Frame(Frame::Record(r)) = x else {
                        unreachable!()
                    };
                    *x = ChainEntry::Redacted(RedactedRecord::of(&r.encoding));
                }
            }
        })
    });
    assert_problem(
        &f,
        None,
        "record 111 (agent coder, in the window) was left out",
    );
    // Another agent's record smuggled in: taken from a full bundle of the same window.
    let everyone = work.path().join("everyone.bundle");
    bundle(&log, &everyone, &[]);
    let (code, out) = verify(&everyone, Some(&log.public_key));
    assert_eq!(code, 0, "{out}");
    let full_chain = decode_entries(&read_tar(&everyone)["chain.bin"]).unwrap();
    let tester_113 = full_chain
        .iter()
        .find(|x| record_seq(x).is_some_and(|(s, a)| s == 113 && a.as_deref() == Some("tester")))
        .cloned()
        .unwrap();
    let f = tampered(&good, "smuggled", |m| {
        edit_chain(m, |e| {
            for x in e.iter_mut() {
                if matches!(x, ChainEntry::Redacted(r) if r.decode_head().unwrap().0 == 113) {
                    *x = tester_113.clone();
                }
            }
        })
    });
    assert_problem(
        &f,
        None,
        "record 113 is agent tester's: a bundle for agent coder must not show it",
    );
    // Only the manifest touched: its signature fails.
    let f = tampered(&good, "manifest", |m| {
        let mut man: Manifest = serde_json::from_slice(&m["manifest.json"]).unwrap();
        man.agent = Some("builder".into());
        m.insert(
            "manifest.json".into(),
            serde_json::to_vec_pretty(&man).unwrap(),
        );
    });
    assert_problem(
        &f,
        None,
        "manifest.sig: the manifest's signature does not verify",
    );
    // A member changed without the manifest knowing.
    let mut members = read_tar(&good);
    members.get_mut("ocsf.jsonl").unwrap().push(b'\n');
    let f = work.path().join("member.bundle");
    write_tar(&f, &members);
    assert_problem(
        &f,
        None,
        "member ocsf.jsonl: its bytes are not the ones the manifest lists",
    );
    let _ = &log.policy_file;
}
