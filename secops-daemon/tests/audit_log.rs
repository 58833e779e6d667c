//! The audit log against real SQLite files: tampering as an attacker with write access to the
//! file would do it (triggers dropped first), keys, foreign files, concurrent writers, queries
//! and the batching writer.
//!
//! Test names all live under `audit_*` modules so that `cargo test audit` selects them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection};
use secops_common::{RiskLevel, Verdict};
use secops_daemon::audit::chain;
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

fn attacker(paths: &AuditPaths) -> Connection {
    let c = Connection::open(&paths.db).unwrap();
    c.execute_batch(
        "DROP TRIGGER records_no_update; DROP TRIGGER records_no_delete;
         DROP TRIGGER checkpoints_no_update; DROP TRIGGER checkpoints_no_delete;",
    )
    .unwrap();
    c
}

fn problem(paths: &AuditPaths) -> Option<Problem> {
    let report = verify(paths).unwrap();
    println!("{report}");
    report.problem
}

/// Renumbers every record with seq >= `from` by `delta`, the way one has to with a primary key.
fn shift(c: &Connection, from: i64, delta: i64) {
    c.execute("UPDATE records SET seq = -seq WHERE seq >= ?1", [from])
        .unwrap();
    c.execute("UPDATE records SET seq = -seq + ?1 WHERE seq < 0", [delta])
        .unwrap();
}

fn hash_of(c: &Connection, seq: i64) -> Vec<u8> {
    c.query_row("SELECT hash FROM records WHERE seq = ?1", [seq], |r| {
        r.get(0)
    })
    .unwrap()
}

/// Copies row `src` to a new row `dst`, then applies `set` (an SQL SET list) to the copy.
fn copy_row(c: &Connection, src: i64, dst: i64, set: &str) {
    c.execute(
        "INSERT INTO records SELECT ?2, ts_ns, agent, cgroup_id, pid, tgid, uid, comm, exe, action,
                object_kind, object, verdict, risk, rule_id, reason, source, prev_hash, hash
         FROM records WHERE seq = ?1",
        [src, dst],
    )
    .unwrap();
    if !set.is_empty() {
        c.execute(&format!("UPDATE records SET {set} WHERE seq = ?1"), [dst])
            .unwrap();
    }
}

/// Rewrites `prev_hash`/`hash` of every record from `from` on so the chain is consistent
/// again: what an attacker who read the source would do after editing a record.
fn recompute_chain(paths: &AuditPaths, c: &Connection, from: u64) {
    let reader = AuditReader::open(paths).unwrap();
    let all = reader.query(&QueryFilter::default()).unwrap();
    let mut prev: [u8; 32] = if from == 1 {
        let mut id = [0u8; 16];
        hex::decode_to_slice(reader.log_id(), &mut id).unwrap();
        chain::genesis_hash(&id)
    } else {
        all[(from - 2) as usize].hash
    };
    for r in all.iter().filter(|r| r.seq >= from) {
        let h = chain::record_hash(&prev, r.seq, &r.body);
        c.execute(
            "UPDATE records SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
            params![&prev[..], &h[..], r.seq as i64],
        )
        .unwrap();
        prev = h;
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
        assert!(report.missing_triggers.is_empty());
        let text = report.to_string();
        assert!(text.contains("result: OK"), "{text}");
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
    fn edited_column() {
        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        c.execute("UPDATE records SET verdict = 'allow' WHERE seq = 38", [])
            .unwrap();
        assert_eq!(problem(&paths), Some(Problem::Altered { seq: 38 }));
        let report = verify(&paths).unwrap();
        assert!(!report.missing_triggers.is_empty());
        assert!(
            report.to_string().contains("record 38 was altered"),
            "{report}"
        );
    }

    #[test]
    fn edited_column_with_own_hash_recomputed() {
        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        let reader = AuditReader::open(&paths).unwrap();
        let mut r = reader
            .query(&QueryFilter {
                after_seq: Some(36),
                limit: Some(1),
                ..Default::default()
            })
            .unwrap()
            .remove(0);
        assert_eq!(r.seq, 37);
        r.body.reason = "nothing happened".into();
        let h = chain::record_hash(&r.prev_hash, 37, &r.body);
        c.execute(
            "UPDATE records SET reason = ?1, hash = ?2 WHERE seq = 37",
            params![r.body.reason, &h[..]],
        )
        .unwrap();
        assert_eq!(problem(&paths), Some(Problem::Altered { seq: 37 }));
    }

    #[test]
    fn edited_link_or_hash_column() {
        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        c.execute(
            "UPDATE records SET prev_hash = zeroblob(32) WHERE seq = 44",
            [],
        )
        .unwrap();
        assert_eq!(problem(&paths), Some(Problem::Altered { seq: 44 }));

        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        c.execute("UPDATE records SET hash = zeroblob(32) WHERE seq = 44", [])
            .unwrap();
        assert_eq!(problem(&paths), Some(Problem::Altered { seq: 44 }));

        // A value the schema would never produce is an alteration too, not a read error.
        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        c.execute(
            "UPDATE records SET verdict = 'maybe', pid = -1 WHERE seq = 45",
            [],
        )
        .unwrap();
        assert_eq!(problem(&paths), Some(Problem::Altered { seq: 45 }));
    }

    #[test]
    fn deleted_rows() {
        let (_d, paths) = log_with(N);
        attacker(&paths)
            .execute("DELETE FROM records WHERE seq = 37", [])
            .unwrap();
        assert_eq!(problem(&paths), Some(Problem::Deleted { from: 37, to: 37 }));

        let (_d, paths) = log_with(N);
        attacker(&paths)
            .execute("DELETE FROM records WHERE seq BETWEEN 37 AND 41", [])
            .unwrap();
        assert_eq!(problem(&paths), Some(Problem::Deleted { from: 37, to: 41 }));

        let (_d, paths) = log_with(N);
        attacker(&paths)
            .execute("DELETE FROM records WHERE seq = 1", [])
            .unwrap();
        assert_eq!(problem(&paths), Some(Problem::Deleted { from: 1, to: 1 }));
    }

    #[test]
    fn deleted_and_renumbered() {
        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        c.execute("DELETE FROM records WHERE seq = 37", []).unwrap();
        shift(&c, 38, -1);
        assert_eq!(problem(&paths), Some(Problem::Deleted { from: 37, to: 37 }));

        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        c.execute("DELETE FROM records WHERE seq BETWEEN 37 AND 39", [])
            .unwrap();
        shift(&c, 40, -3);
        assert_eq!(problem(&paths), Some(Problem::Deleted { from: 37, to: 39 }));

        // In the unsealed tail too.
        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        c.execute("DELETE FROM records WHERE seq = 102", [])
            .unwrap();
        shift(&c, 103, -1);
        assert_eq!(
            problem(&paths),
            Some(Problem::Deleted { from: 102, to: 102 })
        );
    }

    #[test]
    fn inserted_row_with_later_rows_renumbered() {
        // A made-up row with a garbage link.
        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        shift(&c, 37, 1);
        copy_row(
            &c,
            36,
            37,
            "reason = 'forged', prev_hash = randomblob(32), hash = randomblob(32)",
        );
        assert_eq!(problem(&paths), Some(Problem::Inserted { seq: 37 }));

        // A made-up row that links correctly to its predecessor but has a made-up hash.
        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        shift(&c, 37, 1);
        let h36 = hash_of(&c, 36);
        copy_row(&c, 36, 37, "reason = 'forged', hash = randomblob(32)");
        c.execute("UPDATE records SET prev_hash = ?1 WHERE seq = 37", [&h36])
            .unwrap();
        assert_eq!(problem(&paths), Some(Problem::Inserted { seq: 37 }));

        // A well-formed forgery: correct link and a correctly computed hash.
        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        shift(&c, 37, 1);
        let reader = AuditReader::open(&paths).unwrap();
        let r36 = reader
            .query(&QueryFilter {
                after_seq: Some(35),
                limit: Some(1),
                ..Default::default()
            })
            .unwrap()
            .remove(0);
        let mut forged = r36.body.clone();
        forged.reason = "forged".into();
        let h = chain::record_hash(&r36.hash, 37, &forged);
        copy_row(&c, 36, 37, "reason = 'forged'");
        c.execute(
            "UPDATE records SET prev_hash = ?1, hash = ?2 WHERE seq = 37",
            params![&r36.hash[..], &h[..]],
        )
        .unwrap();
        assert_eq!(problem(&paths), Some(Problem::Inserted { seq: 37 }));

        // A duplicate of an earlier genuine record.
        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        shift(&c, 37, 1);
        copy_row(&c, 10, 37, "");
        assert_eq!(problem(&paths), Some(Problem::Inserted { seq: 37 }));

        // At the very start.
        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        shift(&c, 1, 1);
        copy_row(&c, 5, 1, "reason = 'forged'");
        assert_eq!(problem(&paths), Some(Problem::Inserted { seq: 1 }));
    }

    #[test]
    fn row_with_impossible_seq() {
        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        copy_row(&c, 5, 0, "reason = 'forged'");
        assert_eq!(problem(&paths), Some(Problem::BadSeq { found: 0 }));
    }

    #[test]
    fn swapped_rows() {
        // Whole rows swapped (by renumbering them).
        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        c.execute_batch(
            "UPDATE records SET seq = -1 WHERE seq = 37;
             UPDATE records SET seq = 37 WHERE seq = 52;
             UPDATE records SET seq = 52 WHERE seq = -1;",
        )
        .unwrap();
        assert_eq!(problem(&paths), Some(Problem::Reordered { seq: 37 }));

        // Adjacent rows.
        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        c.execute_batch(
            "UPDATE records SET seq = -1 WHERE seq = 37;
             UPDATE records SET seq = 37 WHERE seq = 38;
             UPDATE records SET seq = 38 WHERE seq = -1;",
        )
        .unwrap();
        assert_eq!(problem(&paths), Some(Problem::Reordered { seq: 37 }));

        // Only the content columns swapped, hashes left in place.
        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        c.execute_batch(
            "CREATE TEMP TABLE t AS SELECT * FROM records WHERE seq IN (37, 52);
             UPDATE records SET
                (ts_ns, agent, cgroup_id, pid, tgid, uid, comm, exe, action, object_kind, object,
                 verdict, risk, rule_id, reason, source) =
                (SELECT ts_ns, agent, cgroup_id, pid, tgid, uid, comm, exe, action, object_kind,
                        object, verdict, risk, rule_id, reason, source
                 FROM t WHERE t.seq = 89 - records.seq)
             WHERE seq IN (37, 52);",
        )
        .unwrap();
        assert_eq!(problem(&paths), Some(Problem::Reordered { seq: 37 }));
    }

    #[test]
    fn moved_row() {
        // Record 37 moved to after 41: 38..41 move down one.
        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        c.execute_batch(
            "UPDATE records SET seq = -1 WHERE seq = 37;
             UPDATE records SET seq = seq - 1 WHERE seq BETWEEN 38 AND 41;
             UPDATE records SET seq = 41 WHERE seq = -1;",
        )
        .unwrap();
        assert_eq!(problem(&paths), Some(Problem::Reordered { seq: 37 }));
    }

    #[test]
    fn truncated_tail_covered_by_checkpoint() {
        let (_d, paths) = log_with(N);
        attacker(&paths)
            .execute("DELETE FROM records WHERE seq > 90", [])
            .unwrap();
        assert_eq!(
            problem(&paths),
            Some(Problem::Truncated {
                last_present: 90,
                checkpoint_seq: 100
            })
        );

        let (_d, paths) = log_with(N);
        attacker(&paths).execute("DELETE FROM records", []).unwrap();
        assert_eq!(
            problem(&paths),
            Some(Problem::Truncated {
                last_present: 0,
                checkpoint_seq: 20
            })
        );
    }

    #[test]
    fn recomputed_chain_is_caught_by_checkpoint() {
        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        c.execute(
            "UPDATE records SET verdict = 'allow', reason = 'fine' WHERE seq = 50",
            [],
        )
        .unwrap();
        recompute_chain(&paths, &c, 50);
        let p = problem(&paths);
        assert_eq!(
            p,
            Some(Problem::BadCheckpoint {
                id: 3,
                seq: 60,
                from: 41,
                why: CheckpointFault::HashMismatch
            })
        );
        let text = p.unwrap().to_string();
        assert!(text.contains("records 41..=60"), "{text}");

        // Moving the checkpoint to the forged hash needs the key.
        let h60 = hash_of(&c, 60);
        c.execute("UPDATE checkpoints SET hash = ?1 WHERE seq = 60", [&h60])
            .unwrap();
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
    fn recomputed_chain_after_deletion_is_caught_by_checkpoint() {
        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        c.execute("DELETE FROM records WHERE seq = 25", []).unwrap();
        shift(&c, 26, -1);
        recompute_chain(&paths, &c, 25);
        assert!(matches!(
            problem(&paths),
            Some(Problem::BadCheckpoint {
                seq: 40,
                from: 21,
                why: CheckpointFault::HashMismatch,
                ..
            })
        ));
    }

    #[test]
    fn deleted_checkpoint() {
        let (_d, paths) = log_with(N);
        attacker(&paths)
            .execute("DELETE FROM checkpoints WHERE id = 2", [])
            .unwrap();
        assert_eq!(
            problem(&paths),
            Some(Problem::BadCheckpoint {
                id: 3,
                seq: 60,
                from: 21,
                why: CheckpointFault::Missing { previous_id: 1 }
            })
        );
    }

    #[test]
    fn unsealed_tail() {
        // Garbage after the last checkpoint that never links back: torn or forged tail.
        let (_d, paths) = log_with(N);
        let c = attacker(&paths);
        for seq in 106..=108 {
            copy_row(
                &c,
                100,
                seq,
                "prev_hash = randomblob(32), hash = randomblob(32)",
            );
        }
        assert_eq!(
            problem(&paths),
            Some(Problem::TornTail { from: 106, to: 108 })
        );
        let text = verify(&paths).unwrap().to_string();
        assert!(text.contains("crash") && text.contains("forged"), "{text}");

        // An edit in the unsealed tail is still pinned to its record.
        let (_d, paths) = log_with(N);
        attacker(&paths)
            .execute("UPDATE records SET reason = 'x' WHERE seq = 103", [])
            .unwrap();
        assert_eq!(problem(&paths), Some(Problem::Altered { seq: 103 }));

        // Removing unsealed records is not detectable from the file; it must still verify.
        let (_d, paths) = log_with(N);
        attacker(&paths)
            .execute("DELETE FROM records WHERE seq > 100", [])
            .unwrap();
        assert_eq!(problem(&paths), None);
    }

    #[test]
    fn verify_needs_matching_public_key() {
        let (_d, paths) = log_with(5);
        let other = tempfile::tempdir().unwrap();
        let other_paths = AuditPaths::new(other.path());
        drop(AuditStore::open(&other_paths, policy()).unwrap());
        std::fs::copy(&other_paths.public_key, &paths.public_key).unwrap();
        match verify(&paths) {
            Err(AuditError::KeyMismatch { path, .. }) => assert_eq!(path, paths.public_key),
            other => panic!("expected key mismatch, got {other:?}"),
        }
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
        let text = std::fs::read_to_string(&paths.signing_key).unwrap();
        assert_eq!(text.trim().len(), 64);
        let public = std::fs::read_to_string(&paths.public_key).unwrap();
        let c = Connection::open(&paths.db).unwrap();
        let meta: String = c
            .query_row("SELECT value FROM meta WHERE key = 'public_key'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(public.trim(), meta);
        // No temporary files left behind.
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
        match &err {
            AuditError::KeyPermissions { path, mode } => {
                assert_eq!(path, &paths.signing_key);
                assert_eq!(*mode, 0o644);
            }
            other => panic!("expected KeyPermissions, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("audit-signing.key") && msg.contains("0644"),
            "{msg}"
        );
    }

    #[test]
    fn open_keys_dir_refused() {
        let (_d, paths) = log_with(1);
        std::fs::set_permissions(&paths.keys_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            AuditStore::open(&paths, policy()),
            Err(AuditError::KeyDirPermissions { .. })
        ));
    }

    #[test]
    fn replaced_key_refused() {
        let (_d, paths) = log_with(1);
        std::fs::remove_file(&paths.signing_key).unwrap();
        std::fs::remove_file(&paths.public_key).unwrap();
        // A new key would be created, but the log was started with another one.
        match AuditStore::open(&paths, policy()) {
            Err(AuditError::KeyMismatch { .. }) => {}
            other => panic!("expected KeyMismatch, got {:?}", other.err()),
        }
    }

    #[test]
    fn not_sqlite_is_a_precise_error() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        std::fs::write(&paths.db, vec![b'x'; 8192]).unwrap();
        for err in [
            AuditStore::open(&paths, policy()).err().expect("must fail"),
            AuditReader::open(&paths).err().expect("must fail"),
        ] {
            match &err {
                AuditError::NotAnAuditLog { path, why } => {
                    assert_eq!(path, &paths.db);
                    assert!(why.contains("not an SQLite database"), "{why}");
                }
                other => panic!("expected NotAnAuditLog, got {other:?}"),
            }
            assert!(err.to_string().contains("audit.db"), "{err}");
        }
        assert_eq!(std::fs::read(&paths.db).unwrap(), vec![b'x'; 8192]);
    }

    #[test]
    fn foreign_sqlite_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        {
            let c = Connection::open(&paths.db).unwrap();
            c.execute_batch("CREATE TABLE users (name TEXT); INSERT INTO users VALUES ('a');")
                .unwrap();
        }
        let err = AuditStore::open(&paths, policy()).err().expect("must fail");
        assert!(
            matches!(&err, AuditError::NotAnAuditLog { why, .. } if why.contains("users")),
            "{err}"
        );
        let c = Connection::open(&paths.db).unwrap();
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            mode, "delete",
            "a foreign database must not be converted to WAL"
        );
        assert!(matches!(
            verify(&paths),
            Err(AuditError::NotAnAuditLog { .. })
        ));
    }

    #[test]
    fn unknown_schema_version_is_refused() {
        let (_d, paths) = log_with(1);
        Connection::open(&paths.db)
            .unwrap()
            .execute(
                "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
                [],
            )
            .unwrap();
        match AuditStore::open(&paths, policy()) {
            Err(AuditError::UnsupportedVersion { found, path, .. }) => {
                assert_eq!(found, "99");
                assert_eq!(path, paths.db);
            }
            other => panic!("expected UnsupportedVersion, got {:?}", other.err()),
        }
        assert!(matches!(
            verify(&paths),
            Err(AuditError::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn missing_log_is_reported_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        assert!(matches!(verify(&paths), Err(AuditError::Missing { .. })));
        assert!(!paths.db.exists());
    }

    #[test]
    fn append_only_triggers_refuse_edits() {
        // 25 records: one checkpoint exists, so the DELETE below has a row to refuse.
        let (_d, paths) = log_with(25);
        let c = Connection::open(&paths.db).unwrap();
        let e = c
            .execute("UPDATE records SET reason = 'x' WHERE seq = 1", [])
            .unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
        let e = c.execute("DELETE FROM checkpoints", []).unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
        let e = c
            .execute("DELETE FROM records WHERE seq > 20", [])
            .unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
        assert!(verify(&paths).unwrap().is_ok());
    }

    #[test]
    fn two_stores_interleave_into_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        let mut a = AuditStore::open(&paths, policy()).unwrap();
        let mut b = AuditStore::open(&paths, policy()).unwrap();
        let mut seqs = Vec::new();
        for i in 0..30u64 {
            let (s, r) = if i % 2 == 0 {
                (&mut a, rec(i))
            } else {
                (&mut b, rec(i))
            };
            seqs.extend(s.append_batch(&[r.clone(), r]).unwrap());
        }
        assert_eq!(seqs, (1..=60).collect::<Vec<_>>());
        let report = verify(&paths).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.records, 60);
        assert_eq!(report.last_checkpoint_seq, Some(60));
    }

    #[test]
    fn two_stores_in_threads() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        drop(AuditStore::open(&paths, policy()).unwrap());
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let paths = paths.clone();
                std::thread::spawn(move || {
                    let mut s = AuditStore::open(&paths, policy()).unwrap();
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
        assert_eq!(mode(&paths.signing_key), 0o600);
    }

    #[test]
    fn fields_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        let mut store = AuditStore::open(&paths, policy()).unwrap();
        let mut max = rec(1);
        max.cgroup_id = Some(u64::MAX);
        max.pid = Some(u32::MAX);
        max.ts_ns = i64::MIN;
        let mut min = rec(2);
        min.agent = None;
        min.cgroup_id = Some(1 << 63);
        min.pid = None;
        min.tgid = None;
        min.uid = None;
        min.comm = None;
        min.exe = None;
        min.object = None;
        min.rule_id = None;
        min.reason = String::new();
        min.source = Source::Approval;
        min.agent = Some("ünïcode ✓".into());
        store.append_batch(&[max.clone(), min.clone()]).unwrap();
        let got = AuditReader::open(&paths)
            .unwrap()
            .read_all()
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].body, max);
        assert_eq!(got[0].body.cgroup_id, Some(u64::MAX));
        assert_eq!(got[1].body, min);
        assert_eq!(got[1].prev_hash, got[0].hash);
        assert!(verify(&paths).unwrap().is_ok());
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
        // The log was just created: the first append is not yet due.
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
        let r = AuditReader::open(&paths).unwrap();
        let all: Vec<_> = r.read_all().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 3000);
        assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq));

        let q = |f: QueryFilter| r.query(&f).unwrap();
        let by_agent = q(QueryFilter {
            agent: Some("agent-1".into()),
            ..Default::default()
        });
        assert_eq!(by_agent.len(), 1000);
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
        assert_eq!(fs.len(), 1000);
        assert!(fs.iter().all(|x| x.body.action == "fs:delete"));
        let exact = q(QueryFilter {
            action: Some("net:connect".into()),
            ..Default::default()
        });
        assert_eq!(exact.len(), 1000);
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
        let window = q(QueryFilter {
            since_ns: Some(t0 + 10 * 1_000_000),
            until_ns: Some(t0 + 20 * 1_000_000),
            ..Default::default()
        });
        assert_eq!(
            window.iter().map(|x| x.seq).collect::<Vec<_>>(),
            (10..20).collect::<Vec<_>>()
        );

        let page = q(QueryFilter {
            after_seq: Some(2990),
            limit: Some(5),
            ..Default::default()
        });
        assert_eq!(
            page.iter().map(|x| x.seq).collect::<Vec<_>>(),
            vec![2991, 2992, 2993, 2994, 2995]
        );
        let big_page = q(QueryFilter {
            limit: Some(2500),
            ..Default::default()
        });
        assert_eq!(big_page.len(), 2500);

        let tail = r.tail(3).unwrap();
        assert_eq!(
            tail.iter().map(|x| x.seq).collect::<Vec<_>>(),
            vec![2998, 2999, 3000]
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
            vec![2995, 2998]
        );
        assert_eq!(r.last_seq().unwrap(), 3000);
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

        // Another process holds the write lock: the writer's transaction cannot commit.
        let mut blocker = Connection::open(&paths.db).unwrap();
        let lock = blocker
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        let ticket = writer.append(rec(2));
        let acked = Arc::new(AtomicBool::new(false));
        let waiter = {
            let acked = acked.clone();
            std::thread::spawn(move || {
                let seq = ticket.wait();
                acked.store(true, Ordering::SeqCst);
                seq
            })
        };
        std::thread::sleep(Duration::from_millis(400));
        assert!(
            !acked.load(Ordering::SeqCst),
            "acknowledged before the commit"
        );
        assert_eq!(AuditReader::open(&paths).unwrap().last_seq().unwrap(), 1);
        lock.commit().unwrap();
        let seq = waiter.join().unwrap().unwrap();
        assert_eq!(seq, 2);
        // Acknowledged means visible (and durable) to any other reader.
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
            AuditWriter::open(
                &paths,
                CheckpointPolicy::default(),
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
        let reader = AuditReader::open(&paths).unwrap();
        assert!(reader.checkpoints().unwrap().is_empty());
        std::thread::sleep(Duration::from_millis(900));
        let cps = reader.checkpoints().unwrap();
        assert_eq!(cps.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![3]);
        drop(writer);
        // Dropping joined the thread and had nothing left to seal.
        assert_eq!(reader.checkpoints().unwrap().len(), 1);
    }

    #[test]
    fn failed_batch_is_reported_to_every_producer() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        let writer = AuditWriter::open(&paths, policy(), WriterOptions::default()).unwrap();
        let mut bad = rec(1);
        bad.action.clear();
        let t1 = writer.append(rec(1));
        let t2 = writer.append(bad);
        let t3 = writer.append(rec(3));
        // The invalid record fails alone; the records batched around it are written.
        assert_eq!(t1.wait().unwrap(), 1);
        let err = t2.wait().unwrap_err();
        assert!(err.to_string().contains("action type is empty"), "{err}");
        assert_eq!(t3.wait().unwrap(), 2);
        writer.close().unwrap();
        assert!(verify(&paths).unwrap().is_ok());
    }

    #[test]
    fn enqueued_records_share_batches_with_acknowledged_ones() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path());
        let writer = AuditWriter::open(&paths, policy(), WriterOptions::default()).unwrap();
        let mut bad = rec(2);
        bad.action.clear();
        assert!(writer.enqueue(rec(1)));
        assert!(writer.enqueue(bad), "validation happens in the writer");
        let t3 = writer.append(rec(3));
        assert!(writer.enqueue(rec(4)));
        // Acknowledgements stay with their own records: the invalid one is dropped alone and
        // the ticket gets the seq of its own record, committed after record 1.
        assert_eq!(t3.wait().unwrap(), 2);
        writer.close().unwrap();
        let reader = AuditReader::open(&paths).unwrap();
        assert_eq!(reader.last_seq().unwrap(), 3, "1, 3 and 4 are written");
        assert!(verify(&paths).unwrap().is_ok());
    }
}
