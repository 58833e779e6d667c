//! The daemon's start holds the log to its witnesses (`hold_to_witnesses`, what
//! `daemon/start.rs` calls before opening the log): a state directory rolled back whole
//! (segments, head file and keys together, so the head file cannot tell) or a log rewritten
//! under the same checkpoint numbers is refused as `Rewound`, naming what the witness saw;
//! `secops audit accept-rewind --witness` records it and the start goes on.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use secops_common::{RiskLevel, Verdict};
use secops_daemon::audit::witness::at_start::hold_to_witnesses;
use secops_daemon::audit::witness::WitnessSpec;
use secops_daemon::audit::{
    AuditError, AuditPaths, AuditWriter, CheckpointPolicy, NewRecord, Source, WriterOptions,
};

fn rec(i: u64) -> NewRecord {
    NewRecord {
        agent: Some("coder".into()),
        ..NewRecord::new(
            1_800_000_000_000_000_000 + i as i64,
            "fs:delete",
            Verdict::Deny,
            RiskLevel::High,
            format!("record {i}"),
            Source::Kernel,
        )
    }
}

fn write(paths: &AuditPaths, witness: &Path, from: u64, to: u64) {
    let w = AuditWriter::open(
        paths,
        CheckpointPolicy {
            every_records: 10,
            every: Duration::from_secs(3600),
        },
        WriterOptions {
            witnesses: vec![WitnessSpec::File(witness.to_owned())],
            ..WriterOptions::default()
        },
    )
    .unwrap();
    for i in from..=to {
        w.append(rec(i)).wait().unwrap();
    }
    w.close().unwrap();
}

fn cp(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn a_start_on_a_log_its_witness_saw_further_is_refused_until_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let paths = AuditPaths::new(&state);
    let witness = dir.path().join("witness.jsonl");
    let specs = vec![WitnessSpec::File(witness.clone())];
    write(&paths, &witness, 1, 40);
    hold_to_witnesses(&paths, &specs).expect("the log is where its witness saw it");
    let old = dir.path().join("old-state");
    cp(&state, &old);
    write(&paths, &witness, 41, 80);

    // Rolled back whole: the head file agrees with the log, the witness does not.
    let _ = std::fs::remove_dir_all(&state);
    cp(&old, &state);
    match hold_to_witnesses(&paths, &specs) {
        Err(AuditError::Rewound { finding, .. }) => assert!(
            finding.contains("behind") || finding.contains("80"),
            "{finding}"
        ),
        other => panic!("a rolled-back log was not refused: {other:?}"),
    }

    // The operator accepts it; the start goes on, and the log says what was accepted.
    let out = Command::new(env!("CARGO_BIN_EXE_secops"))
        .arg("--state-dir")
        .arg(&state)
        .args([
            "audit",
            "accept-rewind",
            "--reason",
            "restored from backup",
            "--witness",
        ])
        .arg(format!("file:{}", witness.display()))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("its witnesses saw what it does not hold")
            && text.contains("restored from backup"),
        "{text}"
    );
    hold_to_witnesses(&paths, &specs).expect("accepted");
    write(&paths, &witness, 41, 45);
    hold_to_witnesses(&paths, &specs).expect("new checkpoints of the accepted log are held");
}

#[test]
fn a_log_rewritten_under_the_same_checkpoint_numbers_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let paths = AuditPaths::new(&state);
    let witness = dir.path().join("witness.jsonl");
    let specs = vec![WitnessSpec::File(witness.clone())];
    write(&paths, &witness, 1, 20);
    let old = dir.path().join("old-state");
    cp(&state, &old);
    write(&paths, &witness, 21, 40);
    // Back to record 20, then other records 21..=40 (same numbers, other content), the
    // witness fed only by the honest run.
    let _ = std::fs::remove_dir_all(&state);
    cp(&old, &state);
    let elsewhere = dir.path().join("elsewhere.jsonl");
    write(&paths, &elsewhere, 1021, 1040);
    match hold_to_witnesses(&paths, &specs) {
        Err(AuditError::Rewound { finding, .. }) => {
            assert!(finding.contains("witness file:"), "{finding}")
        }
        other => panic!("a rewritten log was not refused: {other:?}"),
    }
}
