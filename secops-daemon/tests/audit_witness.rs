//! Checkpoints witnessed off the state directory — a real rsyslogd (RFC 5424 over TCP), the
//! HTTP witness `secops audit witness-serve`, and an append-only file owned by another user —
//! and every tampering the issue found passing `verify`, now reported against them with exit
//! status 1, naming what is gone.
//!
//! Needs root (chattr, chown, rsyslogd); prints "skipped: <reason>" otherwise.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use secops_common::{RiskLevel, Verdict};
use secops_daemon::audit::chain;
use secops_daemon::audit::frame::{Frame, SegmentHeader};
use secops_daemon::audit::segment;
use secops_daemon::audit::witness::{load_witness, WitnessSpec};
use secops_daemon::audit::{
    verify_with, AuditError, AuditObject, AuditPaths, AuditStore, AuditWriter, CheckpointPolicy,
    NewRecord, ObjectKind, Problem, Source, VerifyOptions, WriterOptions,
};
use tempfile::TempDir;

fn rec(i: u64) -> NewRecord {
    NewRecord {
        ts_ns: 1_700_000_000_000_000_000 + i as i64 * 1_000_000,
        agent: Some(format!("agent-{}", i % 3)),
        pid: Some(1000 + i as u32),
        action: "net:connect".into(),
        object: Some(AuditObject {
            kind: ObjectKind::Endpoint,
            value: format!("10.0.0.{}:443", i % 250),
        }),
        ..NewRecord::new(
            1_700_000_000_000_000_000 + i as i64 * 1_000_000,
            "net:connect",
            Verdict::Deny,
            RiskLevel::High,
            format!("kernel denial {i}"),
            Source::Kernel,
        )
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

macro_rules! need_root {
    () => {
        if !is_root() {
            println!("skipped: needs root (chattr, chown, rsyslogd)");
            return;
        }
    };
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process this test started, killed by its pid when dropped.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real rsyslogd with one TCP input on loopback, writing what it receives to a file.
struct Rsyslog {
    _proc: Started,
    port: u16,
    out: PathBuf,
}

fn rsyslog(dir: &Path) -> Option<Rsyslog> {
    if !Path::new("/usr/sbin/rsyslogd").exists() {
        println!("skipped: rsyslogd is not installed (`cargo xtask deps --install`)");
        return None;
    }
    let port = free_port();
    let out = dir.join("syslog-witness.log");
    let conf = dir.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{dir}\")\n\
             module(load=\"imtcp\")\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n\
             *.* action(type=\"omfile\" file=\"{out}\" template=\"RSYSLOG_FileFormat\")\n",
            dir = dir.display(),
            out = out.display()
        ),
    )
    .unwrap();
    let child = Command::new("/usr/sbin/rsyslogd")
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let proc = Started(child);
    wait_for_port(port);
    Some(Rsyslog {
        _proc: proc,
        port,
        out,
    })
}

/// `secops audit witness-serve` on a free loopback port.
fn http_witness(dir: &Path) -> (Started, String) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_secops"))
        .args(["audit", "witness-serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--file")
        .arg(dir.join("http-witness.log"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Started(child);
    wait_for_port(port);
    (proc, format!("http://127.0.0.1:{port}/v1/checkpoints"))
}

/// An append-only witness file owned by another user (nobody), in a directory of its own.
struct FileWitness {
    path: PathBuf,
}

impl FileWitness {
    fn new(dir: &Path) -> FileWitness {
        let wdir = dir.join("witness");
        std::fs::create_dir(&wdir).unwrap();
        let path = wdir.join("checkpoints.log");
        std::fs::write(&path, b"").unwrap();
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        let status = Command::new("chattr")
            .arg("+a")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "chattr +a");
        FileWitness { path }
    }
}

impl Drop for FileWitness {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-a").arg(&self.path).status();
    }
}

/// A log written through the daemon's writer, every checkpoint sent to the witnesses.
fn written_log(dir: &TempDir, n: u64, witnesses: Vec<WitnessSpec>) -> AuditPaths {
    let paths = AuditPaths::new(dir.path().join("state"));
    let writer = AuditWriter::open(
        &paths,
        CheckpointPolicy {
            every_records: 100,
            every: Duration::from_secs(3600),
        },
        WriterOptions {
            witnesses,
            ..WriterOptions::default()
        },
    )
    .unwrap();
    let all: Vec<NewRecord> = (1..=n).map(rec).collect();
    for chunk in all.chunks(50) {
        let tickets: Vec<_> = chunk.iter().cloned().map(|r| writer.append(r)).collect();
        for t in tickets {
            t.wait().unwrap();
        }
    }
    writer.close().unwrap();
    paths
}

fn verify_cli(paths: &AuditPaths, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_secops"))
        .arg("--state-dir")
        .arg(&paths.state_dir)
        .args(["audit", "verify"])
        .args(extra)
        .output()
        .unwrap()
}

fn against(paths: &AuditPaths, witness: &Path) -> Vec<Problem> {
    let (checkpoints, bad) = load_witness(witness.to_str().unwrap()).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let report = verify_with(
        paths,
        &VerifyOptions {
            witnesses: vec![("the witness".into(), checkpoints)],
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    println!("{report}");
    report.problems
}

fn frames(path: &Path) -> Vec<Frame> {
    segment::read_frames(path)
        .unwrap()
        .0
        .into_iter()
        .map(|f| f.frame.unwrap())
        .collect()
}

fn only_segment(paths: &AuditPaths) -> PathBuf {
    let segs = segment::list_segments(&paths.audit_dir).unwrap();
    assert_eq!(segs.len(), 1);
    segs[0].path.clone()
}

/// Cuts the log after record `keep` (its checkpoints after that go too).
fn truncate_after(paths: &AuditPaths, keep: u64) {
    let path = only_segment(paths);
    let mut f = frames(&path);
    let cut = f
        .iter()
        .position(
            |f| matches!(f, Frame::Record(r) if chain::encoded_seq(&r.encoding) == Some(keep + 1)),
        )
        .unwrap();
    f.truncate(cut);
    segment::write_frames(&path, &f).unwrap();
}

/// What an attacker who knows the format does with a new key: rewrites record `seq`, then
/// recomputes the chain and re-signs every checkpoint, headers included, and puts the new
/// public key beside the log.
fn resign_with_new_key(paths: &AuditPaths, edit_seq: Option<u64>) -> [u8; 32] {
    let path = only_segment(paths);
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let public = key.verifying_key().to_bytes();
    let mut out = Vec::new();
    let mut link = [0u8; 32];
    let mut last = [0u8; 32];
    let mut log_id = [0u8; 16];
    for f in frames(&path) {
        match f {
            Frame::Header(h) => {
                let h = SegmentHeader {
                    public_key: public,
                    ..h
                };
                log_id = h.log_id;
                link = h.link_hash();
                out.push(Frame::Header(h));
            }
            Frame::Record(mut r) => {
                let (seq, mut body) = chain::decode_record(&r.encoding).unwrap();
                if Some(seq) == edit_seq {
                    body.verdict = Verdict::Allow;
                    body.reason = "nothing to see".into();
                }
                r.encoding = chain::encode_record(seq, &body);
                r.prev = link;
                r.hash = chain::link_hash(&link, seq, &chain::content_hash(&r.encoding));
                link = r.hash;
                last = r.hash;
                out.push(Frame::Record(r));
            }
            Frame::Checkpoint(mut c) => {
                c.hash = last;
                c.key_id = chain::key_id(&public);
                c.signature = key
                    .sign(&chain::checkpoint_message(
                        &log_id, c.number, c.seq, &c.hash, c.ts_ns,
                    ))
                    .to_bytes();
                out.push(Frame::Checkpoint(c));
            }
            other => out.push(other),
        }
    }
    segment::write_frames(&path, &out).unwrap();
    // And the head file beside the log, which would name the old chain.
    if let Some(Frame::Checkpoint(c)) = out.iter().rev().find(|f| matches!(f, Frame::Checkpoint(_)))
    {
        secops_daemon::audit::head::HeadFile::new(&log_id, c, 0)
            .write(&paths.head_file)
            .unwrap();
    }
    std::fs::remove_file(&paths.signing_key).unwrap();
    std::fs::write(&paths.public_key, format!("{}\n", hex::encode(public))).unwrap();
    public
}

#[test]
fn checkpoints_reach_rsyslog_the_http_witness_and_an_append_only_file() {
    need_root!();
    let dir = tempfile::tempdir().unwrap();
    let Some(syslog) = rsyslog(dir.path()) else {
        return;
    };
    let (_http, url) = http_witness(dir.path());
    let file = FileWitness::new(dir.path());
    let paths = written_log(
        &dir,
        1000,
        vec![
            WitnessSpec::File(file.path.clone()),
            WitnessSpec::SyslogTcp(format!("127.0.0.1:{}", syslog.port)),
            WitnessSpec::Http(url.clone()),
        ],
    );
    // rsyslog writes asynchronously: wait until the last checkpoint is in its file.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (got, _) = load_witness(syslog.out.to_str().unwrap()).unwrap_or_default();
        if got.iter().any(|c| c.seq == 1000) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rsyslog did not write the checkpoints"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let syslog_line = String::from_utf8_lossy(&std::fs::read(&syslog.out).unwrap()).into_owned();
    assert!(syslog_line.contains("secops"), "{syslog_line}");
    for witness in [
        file.path.to_str().unwrap(),
        syslog.out.to_str().unwrap(),
        url.as_str(),
    ] {
        let out = verify_cli(&paths, &["--witness", witness]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{witness}: {text}");
        assert!(
            text.contains("10 checkpoint(s) of this log compared"),
            "{witness}: {text}"
        );
    }
    // The file witness is someone else's and append-only: the log's owner cannot rewrite it.
    assert!(std::fs::write(&file.path, b"").is_err());

    // A checkpoint the HTTP witness is sent must be signed by the key it names.
    let (mut lines, _) = load_witness(&url).unwrap();
    lines[0].hash = "00".repeat(32);
    let body = lines[0].json_line();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'POST /v1/checkpoints HTTP/1.1\\r\\nContent-Length: {}\\r\\n\\r\\n%s' '{}' | timeout 5 bash -c 'cat > /dev/tcp/127.0.0.1/{}'",
            body.len(),
            body.trim_end(),
            url.split(':').nth(2).unwrap().split('/').next().unwrap()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        load_witness(&url).unwrap().0.len(),
        10,
        "the forged line was not kept"
    );
}

#[test]
fn every_tampering_from_the_issue_is_reported_against_a_real_witness() {
    need_root!();
    let dir = tempfile::tempdir().unwrap();
    let Some(syslog) = rsyslog(dir.path()) else {
        return;
    };
    let syslog_spec = WitnessSpec::SyslogTcp(format!("127.0.0.1:{}", syslog.port));
    let case = |name: &str| {
        let d = tempfile::tempdir_in(dir.path()).unwrap();
        let file = FileWitness::new(d.path());
        let paths = written_log(
            &d,
            1000,
            vec![WitnessSpec::File(file.path.clone()), syslog_spec.clone()],
        );
        println!("== {name}");
        (d, file, paths)
    };

    // 1. The newest records truncated together with their checkpoints.
    let (_d, file, paths) = case("truncated with checkpoints");
    truncate_after(&paths, 650);
    let p = against(&paths, &file.path);
    assert!(
        p.iter().any(|p| matches!(
            p,
            Problem::BehindWitness {
                last_present: 650,
                witnessed_seq: 1000,
                witnessed_number: 10,
                missing_checkpoints: 4,
                ..
            }
        )),
        "{p:?}"
    );
    let out = verify_cli(&paths, &["--witness", file.path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("records 651..=1000"));

    // 2. The newest checkpoint alone deleted: its records silently "unsealed".
    let (_d, file, paths) = case("newest checkpoint deleted");
    let path = only_segment(&paths);
    let mut f = frames(&path);
    let i = f
        .iter()
        .rposition(|f| matches!(f, Frame::Checkpoint(_)))
        .unwrap();
    f.remove(i);
    segment::write_frames(&path, &f).unwrap();
    let p = against(&paths, &file.path);
    assert!(
        p.iter().any(
            |p| matches!(p, Problem::WitnessedCheckpointsGone { numbers, .. } if numbers == &[10])
        ),
        "{p:?}"
    );

    // 3. The log replaced by an older copy of itself: verify names what is gone, and no
    // appender continues on it.
    let (d, file, paths) = case("rolled back to an older copy");
    let old = d.path().join("old-audit");
    copy_dir(&paths.audit_dir, &old);
    {
        let mut store = AuditStore::open(&paths, CheckpointPolicy::default()).unwrap();
        let more: Vec<NewRecord> = (1001..=1500).map(rec).collect();
        store.append_batch(&more).unwrap();
        store.checkpoint_now().unwrap();
    }
    // (The store above wrote the head file; the witness gets the last checkpoint here.)
    append_head_to_witness(&paths, &file.path);
    std::fs::remove_dir_all(&paths.audit_dir).unwrap();
    copy_dir(&old, &paths.audit_dir);
    let p = against(&paths, &file.path);
    assert!(
        p.iter().any(|p| matches!(
            p,
            Problem::BehindWitness {
                last_present: 1000,
                witnessed_seq: 1500,
                ..
            }
        )),
        "{p:?}"
    );
    match AuditStore::open(&paths, CheckpointPolicy::default()) {
        Err(AuditError::Rewound { finding, .. }) => {
            assert!(
                finding.contains("records 1001..=1500 are gone"),
                "{finding}"
            )
        }
        other => panic!("appended to a rolled-back log: {:?}", other.err()),
    }

    // 4. Key deleted, a record edited, the chain recomputed, a new key made and every
    // checkpoint re-signed: the pinned key and the witness both refuse it.
    let (d, file, paths) = case("re-signed with a new key");
    let original = d.path().join("original.pub");
    std::fs::copy(&paths.public_key, &original).unwrap();
    resign_with_new_key(&paths, Some(400));
    let out = verify_cli(&paths, &[]);
    assert_eq!(out.status.code(), Some(0), "the file alone cannot tell");
    let out = verify_cli(&paths, &["--public-key", original.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("never handed the log to"), "{text}");
    let p = against(&paths, &file.path);
    assert!(
        p.iter()
            .any(|p| matches!(p, Problem::WitnessDiffers { number: 1, .. })),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|p| matches!(p, Problem::WitnessKeyDiffers { number: 1, .. })),
        "{p:?}"
    );

    // 5. Bytes flipped in the file (SQLite's -wal of old): the exact record, and the
    // witness still holds everything after it.
    let (_d, file, paths) = case("bytes flipped");
    let path = only_segment(&paths);
    let (scanned, _) = segment::read_frames(&path).unwrap();
    let target = scanned
        .iter()
        .find(|f| matches!(&f.frame, Ok(Frame::Record(r)) if chain::encoded_seq(&r.encoding) == Some(555)))
        .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let at = (target.offset + target.size - 10) as usize;
    bytes[at] ^= 0x5a;
    bytes[at + 1] ^= 0x5a;
    std::fs::write(&path, &bytes).unwrap();
    let p = against(&paths, &file.path);
    assert_eq!(p.first(), Some(&Problem::Altered { seq: 555 }), "{p:?}");
    let out = verify_cli(&paths, &["--witness", file.path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("record 555 was altered"));

    // 6. Rolled back and re-signed with a new key.
    let (d, file, paths) = case("rolled back and re-signed");
    let original = d.path().join("original.pub");
    std::fs::copy(&paths.public_key, &original).unwrap();
    truncate_after(&paths, 500);
    resign_with_new_key(&paths, None);
    let p = against(&paths, &file.path);
    assert!(
        p.iter().any(|p| matches!(
            p,
            Problem::BehindWitness {
                last_present: 500,
                witnessed_seq: 1000,
                ..
            }
        )),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|p| matches!(p, Problem::WitnessKeyDiffers { .. })),
        "{p:?}"
    );
    let out = verify_cli(&paths, &["--public-key", original.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));

    // 7. Truncated, checkpoints deleted, and a forged tail written with a recomputed chain.
    let (_d, file, paths) = case("truncated, checkpoints deleted, tail rewritten");
    truncate_after(&paths, 700);
    let path = only_segment(&paths);
    let mut f = frames(&path);
    f.retain(|f| !matches!(f, Frame::Checkpoint(c) if c.number >= 6));
    let mut last = match f.iter().rev().find_map(|f| match f {
        Frame::Record(r) => Some(r.hash),
        _ => None,
    }) {
        Some(h) => h,
        None => unreachable!(),
    };
    for seq in 701..=900 {
        let encoding = chain::encode_record(seq, &rec(seq + 10_000));
        let hash = chain::link_hash(&last, seq, &chain::content_hash(&encoding));
        f.push(Frame::Record(secops_daemon::audit::frame::RecordFrame {
            prev: last,
            hash,
            encoding,
        }));
        last = hash;
    }
    segment::write_frames(&path, &f).unwrap();
    // Against rsyslog's copy this time.
    let p = against(&paths, &syslog.out);
    assert!(
        p.iter().any(
            |p| matches!(p, Problem::WitnessedCheckpointsGone { numbers, .. } if numbers == &[6, 7])
        ),
        "{p:?}"
    );
    assert!(
        p.iter().any(|p| matches!(
            p,
            Problem::BehindWitness {
                last_present: 900,
                witnessed_seq: 1000,
                ..
            }
        )),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|p| matches!(p, Problem::WitnessDiffers { number: 8, .. })),
        "{p:?}"
    );
    drop(file);
}

fn append_head_to_witness(paths: &AuditPaths, witness: &Path) {
    use std::io::Write;
    let store = AuditStore::open(paths, CheckpointPolicy::default()).unwrap();
    let cp = store.last_checkpoint().unwrap();
    let line = secops_daemon::audit::witness::WitnessedCheckpoint::new(
        &store.log_id(),
        &store.public_key().0,
        &cp,
        None,
    );
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(witness)
        .unwrap();
    f.write_all(line.json_line().as_bytes()).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
