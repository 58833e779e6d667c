//! A writer process killed with SIGKILL in the middle of a stream of batches leaves a log that
//! verifies and holds every record it acknowledged.
//!
//! The parent re-runs this test binary as a child that appends through `AuditWriter` and
//! prints `committed <seq>` after each acknowledgement; the parent kills it by pid.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use secops_common::{RiskLevel, Verdict};
use secops_daemon::audit::{
    verify, AuditObject, AuditPaths, AuditReader, AuditWriter, CheckpointPolicy, NewRecord,
    ObjectKind, QueryFilter, Source, WriterOptions,
};

const CHILD_ENV: &str = "SECOPS_AUDIT_KILL_TEST_STATE_DIR";
const CHILD_TEST: &str = "audit_kill::child_writer_process";
const KILL_AFTER: usize = 5_000;

fn rec(i: u64) -> NewRecord {
    NewRecord {
        ts_ns: 1_700_000_000_000_000_000 + i as i64,
        agent: Some("builder".into()),
        cgroup_id: Some(0xdead_beef_0000 + i % 5),
        pid: Some(4000 + (i % 100) as u32),
        tgid: Some(4000),
        uid: Some(1000),
        comm: Some("bash".into()),
        exe: Some("/usr/bin/bash".into()),
        action: "fs:write".into(),
        object: Some(AuditObject {
            kind: ObjectKind::Path,
            value: format!("/work/project/file-{i}.txt"),
        }),
        verdict: Verdict::Allow,
        risk: RiskLevel::Low,
        rule_id: Some("workspace".into()),
        reason: format!("child record {i}"),
        source: Source::Kernel,
    }
}

mod audit_kill {
    use super::*;

    /// The child: appends until killed. Does nothing when run normally.
    #[test]
    #[ignore = "run by killed_writer_loses_nothing_committed as a child process"]
    fn child_writer_process() {
        let Some(dir) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let policy = CheckpointPolicy {
            every_records: 700,
            every: Duration::from_millis(50),
        };
        let options = WriterOptions {
            max_batch: 256,
            ..WriterOptions::default()
        };
        let writer =
            AuditWriter::open(&AuditPaths::new(dir), policy, options).expect("open writer");
        let mut i = 0u64;
        loop {
            // Keep many records in flight so the kill lands while a batch is being written.
            let tickets: Vec<_> = (0..300)
                .map(|_| {
                    i += 1;
                    writer.append(rec(i))
                })
                .collect();
            for t in tickets {
                let seq = t.wait().expect("commit");
                // stdout is line-buffered: the parent sees this line only after the commit.
                println!("committed {seq}");
            }
        }
    }

    #[test]
    fn killed_writer_loses_nothing_committed() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths::new(dir.path().join("state"));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                CHILD_TEST,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &paths.state_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut committed = Vec::new();
        // With --nocapture the harness prints "test <name> ... " without a newline, so the
        // first acknowledgement shares its line.
        let parse = |line: &str| {
            line.find("committed ").map(|at| {
                line[at + "committed ".len()..]
                    .trim()
                    .parse::<u64>()
                    .unwrap()
            })
        };
        while committed.len() < KILL_AFTER {
            match lines.next() {
                Some(line) => committed.extend(parse(&line.unwrap())),
                None => panic!("child exited early: {:?}", child.wait()),
            }
        }
        // SIGKILL, addressed by pid: no chance to flush, roll back or checkpoint.
        child.kill().unwrap();
        // Lines the child wrote before it died are acknowledgements too.
        for line in lines {
            committed.extend(parse(&line.unwrap()));
        }
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");

        let report = verify(&paths).unwrap();
        println!("{report}");
        assert!(report.problem().is_none(), "{report}");
        assert_eq!(report.records, report.last_seq);
        let max = *committed.iter().max().unwrap();
        // One writer: acknowledgements arrive in order, without gaps or repeats.
        assert_eq!(committed, (1..=max).collect::<Vec<_>>());
        assert!(
            report.last_seq >= max,
            "child reported {max} committed, log ends at {}",
            report.last_seq
        );
        // Contiguous 1..=last_seq (verified) and every acknowledged seq within it; spot-check
        // that the content is what the child wrote under that seq.
        let reader = AuditReader::open(&paths).unwrap();
        let r = reader
            .query(&QueryFilter {
                after_seq: Some(max - 1),
                limit: Some(1),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r[0].seq, max);
        assert_eq!(r[0].body, rec(max));
        println!(
            "child acknowledged {} records (max seq {max}); log holds {}",
            committed.len(),
            report.last_seq
        );
    }
}
