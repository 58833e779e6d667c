//! The audit log when the disk says no: a full file system (a small tmpfs), an immutable or
//! read-only log, a symlinked log directory, a state directory another user controls. Records
//! that cannot be written are refused visibly (health, `enqueue` false, failed tickets), and
//! appenders refuse to start on a log they cannot write.
//!
//! Needs root (mount, chattr, chown); prints "skipped: <reason>" otherwise.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use secops_common::{RiskLevel, Verdict};
use secops_daemon::audit::segment;
use secops_daemon::audit::{
    verify, AuditError, AuditPaths, AuditReader, AuditStore, AuditWriter, CheckpointPolicy,
    NewRecord, QueryFilter, Source, WriterOptions,
};

fn rec(i: u64) -> NewRecord {
    NewRecord::new(
        1_700_000_000_000_000_000 + i as i64,
        "fs:write",
        Verdict::Allow,
        RiskLevel::Low,
        format!("record {i} {}", "x".repeat(200)),
        Source::Api,
    )
}

macro_rules! need_root {
    () => {
        if !rustix::process::geteuid().is_root() {
            println!("skipped: needs root (mount, chattr, chown)");
            return;
        }
    };
}

/// A tmpfs this test mounted, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "secops-test",
            ])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs");
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        segment::unprotect_tree(&self.0);
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_visible_refused_and_recovered_from() {
    need_root!();
    let dir = tempfile::tempdir().unwrap();
    let fs = Tmpfs::new(&dir.path().join("small"), "4m");
    let paths = AuditPaths::new(fs.0.join("state"));
    let writer = AuditWriter::open(
        &paths,
        CheckpointPolicy::default(),
        WriterOptions {
            index: false,
            ..WriterOptions::default()
        },
    )
    .unwrap();
    assert!(writer.append(rec(0)).wait().is_ok());
    // Leave a little room, then fill it with records.
    let filler = fs.0.join("filler");
    let status = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k", "count=100"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success() || filler.exists());
    let mut failed = None;
    for i in 1..100_000u64 {
        if let Err(e) = writer.append(rec(i)).wait() {
            failed = Some((i, e));
            break;
        }
    }
    let (at, err) = failed.expect("the disk never filled");
    println!("failed at record {at}: {err}");
    assert!(err.to_string().contains("No space left"), "{err}");
    let health = writer.health();
    assert!(
        health
            .failing
            .as_deref()
            .is_some_and(|f| f.contains("No space left")),
        "{health:?}"
    );
    assert!(health.records_failed >= 1);
    assert!(
        !writer.enqueue(rec(1)),
        "a record nobody waits for must be refused now"
    );
    assert!(!writer.accepting());
    assert!(writer.health().records_refused >= 1);
    // Room again: the next write goes through and says what happened.
    std::fs::remove_file(&filler).unwrap();
    let seq = writer.append(rec(200_000)).wait().unwrap();
    assert!(writer.health().failing.is_none());
    assert!(writer.enqueue(rec(200_001)));
    writer.close().unwrap();
    let notes = AuditReader::open(&paths)
        .unwrap()
        .query(&QueryFilter {
            action: Some("sys:audit".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].body.reason.contains("could not be written"),
        "{notes:?}"
    );
    assert!(notes[0].seq < seq);
    let report = verify(&paths).unwrap();
    assert!(report.is_ok(), "{report}");
    drop(fs);
}

#[test]
fn no_appender_starts_on_a_log_it_cannot_write() {
    need_root!();
    // Immutable segment.
    let dir = tempfile::tempdir().unwrap();
    let paths = AuditPaths::new(dir.path().join("state"));
    AuditStore::open(&paths, CheckpointPolicy::default())
        .unwrap()
        .append(&rec(1))
        .unwrap();
    let seg = segment::list_segments(&paths.audit_dir).unwrap().remove(0);
    assert!(Command::new("chattr")
        .arg("+i")
        .arg(&seg.path)
        .status()
        .unwrap()
        .success());
    let err = AuditStore::open(&paths, CheckpointPolicy::default())
        .err()
        .expect("must refuse");
    let _ = Command::new("chattr").arg("-i").arg(&seg.path).status();
    assert!(matches!(err, AuditError::Unwritable { .. }), "{err}");
    assert!(err.to_string().contains("immutable"), "{err}");

    // A file system mounted read-only.
    let fs = Tmpfs::new(&dir.path().join("ro"), "4m");
    let paths = AuditPaths::new(fs.0.join("state"));
    AuditStore::open(&paths, CheckpointPolicy::default())
        .unwrap()
        .append(&rec(1))
        .unwrap();
    assert!(Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&fs.0)
        .status()
        .unwrap()
        .success());
    let err = AuditStore::open(&paths, CheckpointPolicy::default())
        .err()
        .expect("must refuse");
    assert!(err.to_string().contains("read-only"), "{err}");
    // Still readable and verifiable.
    assert!(verify(&paths).unwrap().is_ok());
}

#[test]
fn symlinks_and_directories_others_control_are_refused() {
    need_root!();
    let dir = tempfile::tempdir().unwrap();
    // The audit directory as a symlink to a missing path: nothing is created there.
    let paths = AuditPaths::new(dir.path().join("state"));
    std::fs::create_dir(&paths.state_dir).unwrap();
    std::fs::set_permissions(&paths.state_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let target = dir.path().join("elsewhere");
    std::os::unix::fs::symlink(&target, &paths.audit_dir).unwrap();
    let err = AuditStore::open(&paths, CheckpointPolicy::default())
        .err()
        .expect("must refuse");
    assert!(err.to_string().contains("symlink"), "{err}");
    assert!(!target.exists());

    // A segment replaced by a symlink.
    let dir = tempfile::tempdir().unwrap();
    let paths = AuditPaths::new(dir.path().join("state"));
    AuditStore::open(&paths, CheckpointPolicy::default())
        .unwrap()
        .append(&rec(1))
        .unwrap();
    let seg = segment::list_segments(&paths.audit_dir).unwrap().remove(0);
    let moved = dir.path().join("moved.seg");
    std::fs::rename(&seg.path, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &seg.path).unwrap();
    assert!(AuditStore::open(&paths, CheckpointPolicy::default()).is_err());
    assert!(verify(&paths).is_err() || !verify(&paths).unwrap().is_ok());

    // A state directory owned by another user, mode 0777.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = AuditStore::open(&AuditPaths::new(&state), CheckpointPolicy::default())
        .err()
        .expect("must refuse");
    assert!(matches!(err, AuditError::UnsafeDir { .. }), "{err}");
    assert!(err.to_string().contains("uid 65534"), "{err}");
    // Ours, but writable by everyone.
    std::os::unix::fs::chown(&state, Some(0), Some(0)).unwrap();
    let err = AuditStore::open(&AuditPaths::new(&state), CheckpointPolicy::default())
        .err()
        .expect("must refuse");
    assert!(err.to_string().contains("mode 0777"), "{err}");
    std::thread::sleep(Duration::from_millis(1));
}

#[test]
fn inode_flags_keep_segments_append_only_and_verify_misses_them_when_taken_off() {
    need_root!();
    let dir = tempfile::tempdir().unwrap();
    let paths = AuditPaths::new(dir.path().join("state"));
    let options = secops_daemon::audit::StoreOptions {
        inode_flags: true,
        segment_bytes: 32 << 10,
        ..Default::default()
    };
    let mut store = AuditStore::open_with(&paths, options).unwrap();
    for chunk in (1..=400).map(rec).collect::<Vec<_>>().chunks(50) {
        store.append_batch(chunk).unwrap();
    }
    drop(store);
    let segs = segment::list_segments(&paths.audit_dir).unwrap();
    assert!(segs.len() > 2);
    // Closed segments cannot be changed or removed, the open one only appended to.
    assert!(std::fs::remove_file(&segs[0].path).is_err());
    assert!(std::fs::OpenOptions::new()
        .write(true)
        .open(&segs[0].path)
        .is_err());
    let open = &segs[segs.len() - 1].path;
    assert!(
        std::fs::OpenOptions::new().write(true).open(open).is_err(),
        "not without O_APPEND"
    );
    assert!(verify(&paths).unwrap().is_ok());
    // Taking a flag off is a finding, as dropping the old triggers should have been.
    assert!(Command::new("chattr")
        .arg("-i")
        .arg(&segs[0].path)
        .status()
        .unwrap()
        .success());
    let report = verify(&paths).unwrap();
    assert!(
        report.problems.iter().any(|p| matches!(
            p,
            secops_daemon::audit::Problem::ProtectionRemoved {
                expected: "immutable",
                ..
            }
        )),
        "{report}"
    );
    segment::unprotect_tree(&paths.audit_dir);
}
