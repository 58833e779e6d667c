//! The audit log against real segment files: tampering as an attacker with write access to
//! the files would do it, keys, foreign files, concurrent appenders, queries and the batching
//! writer.
//!
//! Test names all live under `audit_*` modules so that `cargo test audit` selects them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secops_common::{RiskLevel, Verdict};
use secops_daemon::audit::chain;
use secops_daemon::audit::frame::{Frame, RecordFrame};
use secops_daemon::audit::segment;
use secops_daemon::audit::{
    verify, AuditError, AuditObject, AuditPaths, AuditReader, AuditStore, AuditWriter,
    CheckpointFault, CheckpointPolicy, NewRecord, ObjectKind, Problem, QueryFilter, Source,
    WriterOptions,
};
use tempfile::TempDir;

fn rec(i: u64) -> NewRecord {
    NewRecord {
        ts_ns: 1_700_000_000_000_000_000 + i as i64 * 1_000_000,
        agent: Some(format!("agent-{}", i % 3)),
        cgroup_id: Some(0x1000 + i % 7),
        pid: Some(1000 + (i % 500) as u32),
        tgid: Some(1000 + (i % 500) as u32),
        uid: Some(1000),
        comm: Some("python3".into()),
        exe: Some("/usr/bin/python3.11".into()),
        action: ["fs:delete", "net:connect", "proc:exec"][(i % 3) as usize].into(),
        object: Some(AuditObject {
            kind: ObjectKind::Path,
            value: format!("/home/dev/project/src/module_{i}.py"),
        }),
        verdict: [Verdict::Allow, Verdict::Deny, Verdict::Escalate][(i % 3) as usize],
        risk: RiskLevel::Medium,
        rule_id: Some("workspace-writes".into()),
        reason: format!("rule workspace-writes matched (record {i})"),
        source: Source::Kernel,
    }
}

/// Checkpoints at 20, 40, 60, 80, 100; records 101..=105 are the unsealed tail.
const N: u64 = 105;
fn policy() -> CheckpointPolicy {
    CheckpointPolicy {
        every_records: 20,
        every: Duration::from_secs(3600),
    }
}

fn log_with(n: u64) -> (TempDir, AuditPaths) {
    let dir = tempfile::tempdir().unwrap();
    let paths = AuditPaths::new(dir.path().join("state"));
    let mut store = AuditStore::open(&paths, policy()).unwrap();
    let all: Vec<NewRecord> = (1..=n).map(rec).collect();
    for chunk in all.chunks(10) {
        store.append_batch(chunk).unwrap();
    }
    drop(store);
    (dir, paths)
}

fn problem(paths: &AuditPaths) -> Option<Problem> {
    let report = verify(paths).unwrap();
    println!("{report}");
    report.problems.into_iter().next()
}

/// The one segment of a small log, as frames an attacker edits and writes back.
struct Seg {
    path: PathBuf,
    frames: Vec<Frame>,
}

impl Seg {
    fn open(paths: &AuditPaths) -> Seg {
        let segs = segment::list_segments(&paths.audit_dir).unwrap();
        assert_eq!(segs.len(), 1);
        let (frames, torn) = segment::read_frames(&segs[0].path).unwrap();
        assert!(torn.is_none());
        Seg {
            path: segs[0].path.clone(),
            frames: frames.into_iter().map(|f| f.frame.unwrap()).collect(),
        }
    }

    fn save(&self) {
        segment::write_frames(&self.path, &self.frames).unwrap();
    }

    /// Index in `frames` of the record that claims `seq`.
    fn at(&self, seq: u64) -> usize {
        self.frames
            .iter()
            .position(
                |f| matches!(f, Frame::Record(r) if chain::encoded_seq(&r.encoding) == Some(seq)),
            )
            .unwrap_or_else(|| panic!("no record {seq}"))
    }

    fn rec(&self, seq: u64) -> RecordFrame {
        match &self.frames[self.at(seq)] {
            Frame::Record(r) => r.clone(),
            _ => unreachable!(),
        }
    }

    fn body(&self, seq: u64) -> NewRecord {
        chain::decode_record(&self.rec(seq).encoding).unwrap().1
    }

    fn set(&mut self, seq: u64, r: RecordFrame) {
        let i = self.at(seq);
        self.frames[i] = Frame::Record(r);
    }

    /// Rewrites the record's contents (keeping links and hash unless told).
    fn edit(&mut self, seq: u64, f: impl FnOnce(&mut NewRecord), rehash: bool) {
        let mut r = self.rec(seq);
        let mut body = self.body(seq);
        f(&mut body);
        r.encoding = chain::encode_record(seq, &body);
        if rehash {
            r.hash = chain::record_hash(&r.prev, seq, &body);
        }
        self.set(seq, r);
    }

    fn remove(&mut self, seqs: std::ops::RangeInclusive<u64>) {
        for s in seqs {
            let i = self.at(s);
            self.frames.remove(i);
        }
    }

    /// Renumbers every record claiming seq >= `from` by `delta` (keeping links and hashes),
    /// as someone hiding a gap would.
    fn shift(&mut self, from: u64, delta: i64) {
        self.shift_range(from..=u64::MAX, delta)
    }

    fn shift_range(&mut self, range: std::ops::RangeInclusive<u64>, delta: i64) {
        for f in &mut self.frames {
            if let Frame::Record(r) = f {
                let s = chain::encoded_seq(&r.encoding).unwrap();
                if range.contains(&s) {
                    let (_, body) = chain::decode_record(&r.encoding).unwrap();
                    r.encoding = chain::encode_record((s as i64 + delta) as u64, &body);
                }
            }
        }
    }

    /// Recomputes links and hashes of every record from `from` on, so the chain holds again.
    fn recompute_chain(&mut self, from: u64) {
        let mut prev = None;
        for f in &mut self.frames {
            if let Frame::Record(r) = f {
                let s = chain::encoded_seq(&r.encoding).unwrap();
                if s >= from {
                    if let Some(p) = prev {
                        r.prev = p;
                    }
                    r.hash = chain::link_hash(&r.prev, s, &chain::content_hash(&r.encoding));
                }
                prev = Some(r.hash);
            }
        }
    }

    fn checkpoint_index(&self, number: u64) -> usize {
        self.frames
            .iter()
            .position(|f| matches!(f, Frame::Checkpoint(c) if c.number == number))
            .unwrap()
    }
}

mod audit_tamper {
    use super::*;

    #[test]
    fn clean_log_verifies() {
        let (_d, paths) = log_with(N);
        let report = verify(&paths).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.records, N);
        assert_eq!(report.last_seq, N);
        assert_eq!(report.checkpoints, 5);
        assert_eq!(report.last_checkpoint_seq, Some(100));
        assert_eq!(report.unsealed, 5);
        let text = report.to_string();
        assert!(text.contains("result: OK"), "{text}");
        assert!(text.contains("not pinned"), "{text}");
    }

    #[test]
    fn empty_log_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        drop(AuditStore::open(&paths, policy()).unwrap());
        let report = verify(&paths).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.records, 0);
    }

    #[test]
    fn edited_record() {
        let (_d, paths) = log_with(N);
        let mut s = Seg::open(&paths);
        s.edit(38, |b| b.verdict = Verdict::Allow, false);
        s.save();
        assert_eq!(problem(&paths), Some(Problem::Altered { seq: 38 }));
        assert!(verify(&paths)
            .unwrap()
            .to_string()
            .contains("record 38 was altered"));
    }

    #[test]
    fn edited_record_with_own_hash_recomputed() {
        let (_d, paths) = log_with(N);
        let mut s = Seg::open(&paths);
        s.edit(37, |b| b.reason = "nothing happened".into(), true);
        s.save();
        assert_eq!(problem(&paths), Some(Problem::Altered { seq: 37 }));
    }

    #[test]
    fn edited_link_hash_or_bytes() {
        for edit in 0..3 {
            let (_d, paths) = log_with(N);
            let mut s = Seg::open(&paths);
            let mut r = s.rec(44);
            match edit {
                0 => r.prev = [0; 32],
                1 => r.hash = [0; 32],
                // Bytes no encoder writes: an alteration too, not a read error.
                _ => {
                    let n = r.encoding.len();
                    r.encoding[n - 3] = 0xff;
                }
            }
            s.set(44, r);
            s.save();
            assert_eq!(
                problem(&paths),
                Some(Problem::Altered { seq: 44 }),
                "edit {edit}"
            );
        }
    }

    #[test]
    fn deleted_records() {
        for (range, want) in [(37..=37, (37, 37)), (37..=41, (37, 41)), (1..=1, (1, 1))] {
            let (_d, paths) = log_with(N);
            let mut s = Seg::open(&paths);
            s.remove(range);
            s.save();
            assert_eq!(
                problem(&paths),
                Some(Problem::Deleted {
                    from: want.0,
                    to: want.1
                })
            );
        }
    }

    #[test]
    fn deleted_and_renumbered() {
        for (from, to) in [(37, 37), (37, 39), (102, 102)] {
            let (_d, paths) = log_with(N);
            let mut s = Seg::open(&paths);
            s.remove(from..=to);
            s.shift(to + 1, -((to - from + 1) as i64));
            s.save();
            assert_eq!(problem(&paths), Some(Problem::Deleted { from, to }));
        }
    }

    #[test]
    fn inserted_record_with_later_ones_renumbered() {
        let (_d, paths) = log_with(N);
        let mut s = Seg::open(&paths);
        s.shift(37, 1);
        let mut forged = s.body(36);
        forged.reason = "forged".into();
        let r36 = s.rec(36);
        let encoding = chain::encode_record(37, &forged);
        let frame = RecordFrame {
            prev: r36.hash,
            hash: chain::link_hash(&r36.hash, 37, &chain::content_hash(&encoding)),
            encoding,
        };
        let i = s.at(36) + 1;
        s.frames.insert(i, Frame::Record(frame));
        s.save();
        assert_eq!(problem(&paths), Some(Problem::Inserted { seq: 37 }));

        // Garbage links.
        let (_d, paths) = log_with(N);
        let mut s = Seg::open(&paths);
        s.shift(37, 1);
        let i = s.at(36) + 1;
        s.frames.insert(
            i,
            Frame::Record(RecordFrame {
                prev: [7; 32],
                hash: [8; 32],
                encoding: chain::encode_record(37, &rec(999)),
            }),
        );
        s.save();
        assert_eq!(problem(&paths), Some(Problem::Inserted { seq: 37 }));
    }

    #[test]
    fn record_with_impossible_seq() {
        let (_d, paths) = log_with(N);
        let mut s = Seg::open(&paths);
        let mut r = s.rec(5);
        r.encoding = chain::encode_record(0, &rec(5));
        s.frames.insert(1, Frame::Record(r));
        s.save();
        assert_eq!(problem(&paths), Some(Problem::BadSeq { found: 0 }));
    }

    #[test]
    fn swapped_records() {
        for other in [52, 38] {
            let (_d, paths) = log_with(N);
            let mut s = Seg::open(&paths);
            let (a, b) = (s.at(37), s.at(other));
            s.frames.swap(a, b);
            // Renumbered to their new places, as the seq is part of what is hashed.
            for (i, seq) in [(a, 37), (b, other)] {
                if let Frame::Record(r) = &mut s.frames[i] {
                    r.encoding =
                        chain::encode_record(seq, &chain::decode_record(&r.encoding).unwrap().1);
                }
            }
            s.save();
            assert_eq!(
                problem(&paths),
                Some(Problem::Reordered { seq: 37 }),
                "{other}"
            );
        }
        // Only the contents swapped, links and hashes left in place.
        let (_d, paths) = log_with(N);
        let mut s = Seg::open(&paths);
        let (b37, b52) = (s.body(37), s.body(52));
        s.edit(37, |b| *b = b52, false);
        s.edit(52, |b| *b = b37, false);
        s.save();
        assert_eq!(problem(&paths), Some(Problem::Reordered { seq: 37 }));
    }

    #[test]
    fn moved_record() {
        // Record 37 moved to after 41 and renumbered: 38..41 move down one.
        let (_d, paths) = log_with(N);
        let mut s = Seg::open(&paths);
        let i = s.at(37);
        let Frame::Record(mut moved) = s.frames.remove(i) else {
            unreachable!()
        };
        s.shift_range(38..=41, -1);
        moved.encoding =
            chain::encode_record(41, &chain::decode_record(&moved.encoding).unwrap().1);
        let j = s.at(40) + 1;
        s.frames.insert(j, Frame::Record(moved));
        s.save();
        assert_eq!(problem(&paths), Some(Problem::Reordered { seq: 37 }));
    }

    #[test]
    fn recomputed_chain_is_caught_by_checkpoint() {
        let (_d, paths) = log_with(N);
        let mut s = Seg::open(&paths);
        s.edit(
            50,
            |b| {
                b.verdict = Verdict::Allow;
                b.reason = "fine".into()
            },
            false,
        );
        s.recompute_chain(50);
        s.save();
        let p = problem(&paths);
        assert_eq!(
            p,
            Some(Problem::BadCheckpoint {
                number: 3,
                seq: 60,
                from: 41,
                why: CheckpointFault::HashMismatch
            })
        );
        assert!(p.unwrap().to_string().contains("records 41..=60"));

        // Moving the checkpoint to the forged hash needs the key.
        let h60 = s.rec(60).hash;
        let i = s.checkpoint_index(3);
        if let Frame::Checkpoint(c) = &mut s.frames[i] {
            c.hash = h60;
        }
        s.save();
        assert!(matches!(
            problem(&paths),
            Some(Problem::BadCheckpoint {
                seq: 60,
                from: 41,
                why: CheckpointFault::BadSignature,
                ..
            })
        ));
    }

    #[test]
    fn deleted_checkpoint_between_others() {
        let (_d, paths) = log_with(N);
        let mut s = Seg::open(&paths);
        let i = s.checkpoint_index(2);
        s.frames.remove(i);
        s.save();
        assert_eq!(
            problem(&paths),
            Some(Problem::BadCheckpoint {
                number: 3,
                seq: 60,
                from: 21,
                why: CheckpointFault::Missing { previous: 1 }
            })
        );
    }

    #[test]
    fn truncated_with_checkpoints_is_caught_by_the_head_file() {
        let (_d, paths) = log_with(N);
        let mut s = Seg::open(&paths);
        let cut = s.at(91);
        s.frames.truncate(cut);
        s.save();
        let report = verify(&paths).unwrap();
        println!("{report}");
        assert!(
            matches!(
                report.problem(),
                Some(Problem::BehindWitness {
                    last_present: 90,
                    witnessed_number: 5,
                    witnessed_seq: 100,
                    ..
                })
            ),
            "{report}"
        );
        assert!(report.to_string().contains("records 91..=100"), "{report}");
    }

    #[test]
    fn deleted_newest_checkpoint_is_caught_by_the_head_file() {
        let (_d, paths) = log_with(N);
        let mut s = Seg::open(&paths);
        let i = s.checkpoint_index(5);
        s.frames.remove(i);
        s.save();
        let report = verify(&paths).unwrap();
        assert!(
            matches!(report.problem(), Some(Problem::WitnessedCheckpointsGone { numbers, .. }) if numbers == &[5]),
            "{report}"
        );
    }

    #[test]
    fn unsealed_tail() {
        // Garbage after the last checkpoint that never links back: a forged tail.
        let (_d, paths) = log_with(N);
        let mut s = Seg::open(&paths);
        for seq in 106..=108 {
            s.frames.push(Frame::Record(RecordFrame {
                prev: [seq as u8; 32],
                hash: [1; 32],
                encoding: chain::encode_record(seq, &rec(seq)),
            }));
        }
        s.save();
        assert_eq!(
            problem(&paths),
            Some(Problem::BrokenTail { from: 106, to: 108 })
        );

        // An edit in the unsealed tail is still pinned to its record.
        let (_d, paths) = log_with(N);
        let mut s = Seg::open(&paths);
        s.edit(103, |b| b.reason = "x".into(), false);
        s.save();
        assert_eq!(problem(&paths), Some(Problem::Altered { seq: 103 }));

        // Removing unsealed records cannot be seen by anyone: it must still verify. (Hence
        // checkpoints every second: see the writer tests.)
        let (_d, paths) = log_with(N);
        let mut s = Seg::open(&paths);
        s.remove(101..=105);
        s.save();
        assert_eq!(problem(&paths), None);
    }

    #[test]
    fn torn_write_is_a_note_not_a_problem() {
        let (_d, paths) = log_with(N);
        let segs = segment::list_segments(&paths.audit_dir).unwrap();
        let mut bytes = std::fs::read(&segs[0].path).unwrap();
        let whole = bytes.len();
        bytes.extend_from_slice(&[0, 0, 1, 0, 2, 9, 9]);
        std::fs::write(&segs[0].path, &bytes).unwrap();
        let report = verify(&paths).unwrap();
        assert!(report.is_ok(), "{report}");
        assert!(
            report.to_string().contains("incomplete write of 7 bytes"),
            "{report}"
        );
        // The next appender removes it and says so in the log.
        let mut store = AuditStore::open(&paths, policy()).unwrap();
        assert_eq!(store.open_report().torn_bytes_removed, Some(7));
        store.append(&rec(106)).unwrap();
        drop(store);
        assert!(std::fs::metadata(&segs[0].path).unwrap().len() > whole as u64);
        let notes = AuditReader::open(&paths)
            .unwrap()
            .query(&QueryFilter {
                action: Some("sys:audit".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(notes.len(), 1);
        assert!(notes[0].body.reason.contains("incomplete write of 7 bytes"));
        assert!(verify(&paths).unwrap().is_ok());
    }

    #[test]
    fn another_public_key_file_is_a_problem() {
        let (_d, paths) = log_with(5);
        let other = tempfile::tempdir().unwrap();
        let other_paths = AuditPaths::new(other.path());
        drop(AuditStore::open(&other_paths, policy()).unwrap());
        std::fs::copy(&other_paths.public_key, &paths.public_key).unwrap();
        assert!(matches!(
            problem(&paths),
            Some(Problem::KeyFileDiffers { .. })
        ));
    }

    #[test]
    fn a_rotated_key_is_followed_from_the_pinned_one_and_a_forged_rotation_is_not() {
        let (_d, paths) = log_with(30);
        let old = secops_daemon::audit::verify::read_pinned_key(&paths.public_key).unwrap();
        let mut store = AuditStore::open(&paths, policy()).unwrap();
        let (old_id, new_id) = store.rotate_key().unwrap();
        assert_ne!(old_id, new_id);
        store
            .append_batch(&(31..=45).map(rec).collect::<Vec<_>>())
            .unwrap();
        drop(store);
        // Another appender picks the new key up from the key directory.
        AuditStore::open(&paths, policy())
            .unwrap()
            .append(&rec(46))
            .unwrap();
        let pinned = |key: [u8; 32]| {
            secops_daemon::audit::verify_with(
                &paths,
                &secops_daemon::audit::VerifyOptions {
                    pinned_key: Some(key),
                    ..Default::default()
                },
            )
            .unwrap()
        };
        let report = pinned(old);
        assert!(report.is_ok(), "{report}");
        assert_eq!(
            report.key_ids,
            vec![hex::encode(old_id), hex::encode(new_id)]
        );
        // Pinning the new key: the checkpoints before the handover are not its.
        let new = secops_daemon::audit::verify::read_pinned_key(&paths.public_key).unwrap();
        assert!(matches!(
            pinned(new).problem(),
            Some(Problem::WrongKey {
                first_number: 1,
                ..
            })
        ));
        // A rotation frame signed by anyone but the key in force does not hold.
        let mut s = Seg::open(&paths);
        for f in &mut s.frames {
            if let Frame::Rotation(r) = f {
                r.signature[0] ^= 1;
            }
        }
        s.save();
        assert!(matches!(
            pinned(old).problem(),
            Some(Problem::BadRotation { at_seq: 30, .. })
        ));
    }

    #[test]
    fn verify_does_not_need_the_private_key() {
        let (_d, paths) = log_with(25);
        std::fs::remove_file(&paths.signing_key).unwrap();
        assert!(verify(&paths).unwrap().is_ok());
    }
}

mod audit_store {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn key_created_private() {
        let (_d, paths) = log_with(1);
        assert_eq!(mode(&paths.signing_key), 0o600);
        assert_eq!(mode(&paths.keys_dir), 0o700);
        assert_eq!(mode(&paths.audit_dir), 0o700);
        let text = std::fs::read_to_string(&paths.signing_key).unwrap();
        assert_eq!(text.trim().len(), 64);
        let names: Vec<_> = std::fs::read_dir(&paths.keys_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn readable_key_refused() {
        let (_d, paths) = log_with(1);
        std::fs::set_permissions(&paths.signing_key, std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let err = AuditStore::open(&paths, policy())
            .err()
            .expect("must refuse");
        assert!(
            matches!(&err, AuditError::KeyPermissions { mode: 0o644, .. }),
            "{err}"
        );
    }

    #[test]
    fn replaced_key_refused() {
        let (_d, paths) = log_with(1);
        std::fs::remove_file(&paths.signing_key).unwrap();
        std::fs::remove_file(&paths.public_key).unwrap();
        match AuditStore::open(&paths, policy()) {
            Err(AuditError::KeyMismatch { .. }) => {}
            other => panic!("expected KeyMismatch, got {:?}", other.err()),
        }
    }

    #[test]
    fn not_a_segment_is_a_precise_error() {
        let (_d, paths) = log_with(3);
        let segs = segment::list_segments(&paths.audit_dir).unwrap();
        std::fs::write(&segs[0].path, vec![b'x'; 100]).unwrap();
        let err = AuditStore::open(&paths, policy()).err().expect("must fail");
        assert!(matches!(&err, AuditError::NotAnAuditLog { .. }), "{err}");
        assert!(err.to_string().contains(".seg"), "{err}");
        let report = verify(&paths).unwrap();
        assert!(
            matches!(report.problem(), Some(Problem::BadSegment { .. })),
            "{report}"
        );
    }

    #[test]
    fn old_single_file_log_is_named_not_touched() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        std::fs::write(paths.legacy_db(), b"SQLite format 3\0").unwrap();
        let err = AuditStore::open(&paths, policy()).err().expect("must fail");
        assert!(matches!(err, AuditError::LegacyLog { .. }), "{err}");
        assert!(!paths.audit_dir.exists());
        assert!(matches!(verify(&paths), Err(AuditError::LegacyLog { .. })));
    }

    #[test]
    fn missing_log_is_reported_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        assert!(matches!(verify(&paths), Err(AuditError::Missing { .. })));
        assert!(matches!(
            AuditReader::open(&paths),
            Err(AuditError::Missing { .. })
        ));
        assert!(!paths.audit_dir.exists());
    }

    #[test]
    fn two_stores_interleave_into_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        let mut a = AuditStore::open(&paths, policy()).unwrap();
        let mut b = AuditStore::open(&paths, policy()).unwrap();
        let mut seqs = Vec::new();
        for i in 0..30u64 {
            let s = if i % 2 == 0 { &mut a } else { &mut b };
            seqs.extend(s.append_batch(&[rec(i), rec(i)]).unwrap());
        }
        assert_eq!(seqs, (1..=60).collect::<Vec<_>>());
        let report = verify(&paths).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.records, 60);
        assert_eq!(report.last_checkpoint_seq, Some(60));
    }

    #[test]
    fn two_stores_in_threads_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        let options = secops_daemon::audit::StoreOptions {
            checkpoints: policy(),
            segment_bytes: 8 * 1024,
            ..Default::default()
        };
        drop(AuditStore::open_with(&paths, options.clone()).unwrap());
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let (paths, options) = (paths.clone(), options.clone());
                std::thread::spawn(move || {
                    let mut s = AuditStore::open_with(&paths, options).unwrap();
                    for i in 0..50 {
                        s.append_batch(&[rec(t * 1000 + i), rec(t * 1000 + i + 500)])
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let report = verify(&paths).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.records, 200);
        assert!(report.segments > 3, "{report}");
        let all = AuditReader::open(&paths)
            .unwrap()
            .query(&QueryFilter::default())
            .unwrap();
        assert_eq!(all.len(), 200);
    }

    #[test]
    fn simultaneous_first_start_agrees_on_key_and_log() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path().join("state"));
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let (paths, barrier) = (paths.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut s = AuditStore::open(&paths, policy()).unwrap();
                    s.append(&rec(t)).unwrap();
                    s.log_id()
                })
            })
            .collect();
        let ids: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "one log, one id");
        let report = verify(&paths).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.records, 4);
    }

    #[test]
    fn fields_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        let mut store = AuditStore::open(&paths, policy()).unwrap();
        let full = rec(7);
        let bare = NewRecord::new(
            -5,
            "tool:call",
            Verdict::Deny,
            RiskLevel::Critical,
            String::new(),
            Source::Approval,
        );
        store.append_batch(&[full.clone(), bare.clone()]).unwrap();
        let got = AuditReader::open(&paths)
            .unwrap()
            .query(&QueryFilter::default())
            .unwrap();
        assert_eq!(got[0].body, full);
        assert_eq!(got[1].body, bare);
        assert_eq!(got[1].prev_hash, got[0].hash);
    }

    #[test]
    fn time_based_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        let policy = CheckpointPolicy {
            every_records: 1000,
            every: Duration::from_millis(200),
        };
        let mut store = AuditStore::open(&paths, policy).unwrap();
        store.append(&rec(1)).unwrap();
        assert_eq!(store.unsealed(), 1);
        std::thread::sleep(Duration::from_millis(250));
        store.append(&rec(2)).unwrap();
        assert_eq!(store.unsealed(), 0);
        store.append(&rec(3)).unwrap();
        assert_eq!(store.unsealed(), 1);
        assert!(store.checkpoint_now().unwrap().is_some());
        assert!(
            store.checkpoint_now().unwrap().is_none(),
            "nothing new to seal"
        );
        let cps = AuditReader::open(&paths).unwrap().checkpoints().unwrap();
        assert_eq!(cps.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(cps.iter().map(|c| c.number).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn rejects_unencodable_record() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        let mut store = AuditStore::open(&paths, policy()).unwrap();
        let mut r = rec(1);
        r.action.clear();
        assert!(matches!(
            store.append(&r),
            Err(AuditError::InvalidRecord { .. })
        ));
        assert_eq!(AuditReader::open(&paths).unwrap().last_seq().unwrap(), 0);
    }
}

mod audit_query {
    use super::*;

    #[test]
    fn filters() {
        let (_d, paths) = log_with(3000);
        // Half indexed, half in the tail the reader scans itself.
        let r = AuditReader::open(&paths).unwrap();
        {
            let mut store = AuditStore::open(&paths, policy()).unwrap();
            let more: Vec<NewRecord> = (3001..=3300).map(rec).collect();
            store.append_batch(&more).unwrap();
        }
        let all: Vec<_> = r.read_all().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 3300);
        assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq));

        let q = |f: QueryFilter| r.query(&f).unwrap();
        let by_agent = q(QueryFilter {
            agent: Some("agent-1".into()),
            ..Default::default()
        });
        assert_eq!(by_agent.len(), 1100);
        assert!(by_agent
            .iter()
            .all(|x| x.body.agent.as_deref() == Some("agent-1")));

        let denies = q(QueryFilter {
            verdict: Some(Verdict::Deny),
            limit: Some(7),
            ..Default::default()
        });
        assert_eq!(
            denies.iter().map(|x| x.seq).collect::<Vec<_>>(),
            vec![1, 4, 7, 10, 13, 16, 19]
        );
        let fs = q(QueryFilter {
            action: Some("fs:*".into()),
            ..Default::default()
        });
        assert_eq!(fs.len(), 1100);
        assert!(fs.iter().all(|x| x.body.action == "fs:delete"));
        assert!(q(QueryFilter {
            action: Some("f:*".into()),
            ..Default::default()
        })
        .is_empty());
        assert!(matches!(
            r.query(&QueryFilter {
                action: Some("fs:de*".into()),
                ..Default::default()
            }),
            Err(AuditError::InvalidFilter { .. })
        ));

        let t0 = rec(0).ts_ns;
        for (from, to) in [(10, 20), (2995, 3010), (3100, 3105)] {
            let window = q(QueryFilter {
                since_ns: Some(t0 + from * 1_000_000),
                until_ns: Some(t0 + to * 1_000_000),
                ..Default::default()
            });
            assert_eq!(
                window.iter().map(|x| x.seq).collect::<Vec<_>>(),
                (from as u64..to as u64).collect::<Vec<_>>()
            );
        }
        let page = q(QueryFilter {
            after_seq: Some(2990),
            limit: Some(15),
            ..Default::default()
        });
        assert_eq!(
            page.iter().map(|x| x.seq).collect::<Vec<_>>(),
            (2991..=3005).collect::<Vec<_>>()
        );
        let tail = r.tail(3).unwrap();
        assert_eq!(
            tail.iter().map(|x| x.seq).collect::<Vec<_>>(),
            vec![3298, 3299, 3300]
        );
        let tail_denies = r
            .tail_matching(
                &QueryFilter {
                    verdict: Some(Verdict::Deny),
                    ..Default::default()
                },
                2,
            )
            .unwrap();
        assert_eq!(
            tail_denies.iter().map(|x| x.seq).collect::<Vec<_>>(),
            vec![3295, 3298]
        );
        assert_eq!(r.last_seq().unwrap(), 3300);
    }

    #[test]
    fn an_index_out_of_step_is_an_error_not_a_wrong_answer() {
        let (_d, paths) = log_with(300);
        drop(AuditReader::open(&paths).unwrap());
        let c = rusqlite::Connection::open(&paths.index).unwrap();
        c.execute("UPDATE records SET agent = 'agent-1' WHERE seq = 3", [])
            .unwrap();
        drop(c);
        let r = AuditReader::open(&paths).unwrap();
        let err = r
            .query(&QueryFilter {
                agent: Some("agent-1".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("rebuild the index"), "{err}");
        // Without the index everything is read from the segments.
        std::fs::remove_file(&paths.index).unwrap();
        let r = AuditReader::open(&paths).unwrap();
        let got = r
            .query(&QueryFilter {
                agent: Some("agent-1".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(got.len(), 100);
    }
}

mod audit_writer {
    use super::*;

    #[test]
    fn acknowledges_only_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        let writer = AuditWriter::open(&paths, policy(), WriterOptions::default()).unwrap();
        assert_eq!(writer.append(rec(1)).wait().unwrap(), 1);
        // Another appender holds the lock: the writer cannot write.
        let lock = std::fs::File::open(&paths.lock).unwrap();
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let ticket = writer.append(rec(2));
        let waiter = std::thread::spawn(move || ticket.wait());
        std::thread::sleep(Duration::from_millis(300));
        assert!(!waiter.is_finished(), "acknowledged before the commit");
        assert_eq!(AuditReader::open(&paths).unwrap().last_seq().unwrap(), 1);
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::Unlock).unwrap();
        assert_eq!(waiter.join().unwrap().unwrap(), 2);
        assert_eq!(AuditReader::open(&paths).unwrap().last_seq().unwrap(), 2);
        writer.close().unwrap();
        let report = verify(&paths).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.unsealed, 0, "close seals the log");
    }

    #[test]
    fn batches_many_producers() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        let writer = Arc::new(
            // No time-based checkpoint: the explicit one below must be the one that seals.
            AuditWriter::open(
                &paths,
                CheckpointPolicy {
                    every_records: 1 << 20,
                    every: Duration::from_secs(3600),
                },
                WriterOptions::default(),
            )
            .unwrap(),
        );
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let w = writer.clone();
                std::thread::spawn(move || {
                    let tickets: Vec<_> = (0..500).map(|i| w.append(rec(t * 10_000 + i))).collect();
                    tickets
                        .into_iter()
                        .map(|t| t.wait().unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seqs: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=2000).collect::<Vec<_>>());
        assert_eq!(writer.checkpoint().unwrap(), Some(2000));
        assert_eq!(writer.checkpoint().unwrap(), None);
        Arc::into_inner(writer).unwrap().close().unwrap();
        assert!(verify(&paths).unwrap().is_ok());
    }

    #[test]
    fn seals_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        let policy = CheckpointPolicy {
            every_records: 1000,
            every: Duration::from_millis(300),
        };
        let writer = AuditWriter::open(&paths, policy, WriterOptions::default()).unwrap();
        for i in 1..=3 {
            writer.append(rec(i)).wait().unwrap();
        }
        // Nothing else is written: the writer's timer alone seals the tail.
        let reader = AuditReader::open(&paths).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while reader.checkpoints().unwrap().last().map(|c| c.seq) != Some(3) {
            assert!(std::time::Instant::now() < deadline, "never sealed");
            std::thread::sleep(Duration::from_millis(50));
        }
        let sealed = reader.checkpoints().unwrap().len();
        drop(writer);
        assert_eq!(
            reader.checkpoints().unwrap().len(),
            sealed,
            "nothing left to seal"
        );
    }

    #[test]
    fn an_invalid_record_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        let writer = AuditWriter::open(&paths, policy(), WriterOptions::default()).unwrap();
        let mut bad = rec(1);
        bad.action.clear();
        let t1 = writer.append(rec(1));
        let t2 = writer.append(bad.clone());
        let t3 = writer.append(rec(3));
        assert_eq!(t1.wait().unwrap(), 1);
        let err = t2.wait().unwrap_err();
        assert!(err.to_string().contains("action type is empty"), "{err}");
        assert_eq!(t3.wait().unwrap(), 2);
        assert!(!writer.enqueue(bad), "refused before it is queued");
        assert!(writer.enqueue(rec(4)));
        writer.close().unwrap();
        assert_eq!(AuditReader::open(&paths).unwrap().last_seq().unwrap(), 3);
        assert!(verify(&paths).unwrap().is_ok());
    }

    #[test]
    fn records_nobody_waits_for_are_refused_past_the_loss_bound() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        let writer = AuditWriter::open(
            &paths,
            policy(),
            WriterOptions {
                unacked_records: 50,
                ..WriterOptions::default()
            },
        )
        .unwrap();
        let lock = std::fs::File::open(&paths.lock).unwrap();
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let accepted = (0..200).filter(|i| writer.enqueue(rec(*i))).count();
        assert_eq!(accepted, 50);
        assert!(!writer.accepting());
        assert_eq!(writer.health().records_refused, 150);
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::Unlock).unwrap();
        assert!(writer.append(rec(999)).wait().is_ok());
        assert!(writer.accepting());
        writer.close().unwrap();
        assert_eq!(AuditReader::open(&paths).unwrap().last_seq().unwrap(), 51);
    }

    #[test]
    fn allowed_process_exits_are_counted_not_itemized() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        let writer = AuditWriter::open(&paths, policy(), WriterOptions::default()).unwrap();
        let exit = |i: u64, verdict| NewRecord {
            agent: Some("builder".into()),
            ..NewRecord::new(
                1_700_000_000_000_000_000 + i as i64,
                "proc:exit",
                verdict,
                RiskLevel::Low,
                format!("exit {i}"),
                Source::Kernel,
            )
        };
        for i in 0..300 {
            assert!(writer.enqueue(exit(i, Verdict::Allow)));
        }
        // A denied one is itemized; a waited-on allowed one writes the summary now.
        let denied = writer.append(exit(300, Verdict::Deny)).wait().unwrap();
        let summary = writer.append(exit(301, Verdict::Allow)).wait().unwrap();
        writer.close().unwrap();
        let all = AuditReader::open(&paths)
            .unwrap()
            .query(&QueryFilter::default())
            .unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
        let s = all.iter().find(|r| r.seq == summary).unwrap();
        assert!(
            s.body.reason.starts_with("301 proc:exit allowed"),
            "{}",
            s.body.reason
        );
        assert_eq!(s.body.agent.as_deref(), Some("builder"));
        assert_eq!(
            all.iter().find(|r| r.seq == denied).unwrap().body.verdict,
            Verdict::Deny
        );
        assert!(verify(&paths).unwrap().is_ok());
    }
}
