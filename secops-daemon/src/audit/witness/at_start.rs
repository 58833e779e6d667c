//! Holding the log to its witnesses before an appender writes to it: the daemon refuses to
//! start on a log that is behind a checkpoint a witness saw, or that contradicts one (like
//! the head file's `Rewound` refusal, and `secops audit accept-rewind --witness` is the way
//! on). Witnesses that can be read back are asked (a file, an HTTP witness); a syslog
//! witness cannot be (the syslog server's file is for `verify --witness`).
//!
//! Only checkpoints witnessed after the newest accepted rewind count: what an operator
//! accepted is not found again at every start. A witness unreachable at start is a warning,
//! not a refusal: it is no evidence about the log, and `verify --witness` still holds it.

use super::{load_witness, WitnessSpec, WitnessedCheckpoint};
use crate::audit::error::AuditError;
use crate::audit::problem::Problem;
use crate::audit::{verify_with, AuditPaths, AuditReader, QueryFilter, VerifyOptions};

/// How the record of an accepted rewind begins (written by the store and by
/// `accept-rewind --witness`).
pub const ACCEPTED_PREFIX: &str = "the audit log was found not as this host left it";

/// What the witnesses that can be read back saw that the log contradicts or lacks.
pub fn witness_findings(
    paths: &AuditPaths,
    specs: &[WitnessSpec],
    host: Option<&str>,
) -> Result<Vec<String>, AuditError> {
    let accepted_after = newest_acceptance(paths);
    let mut witnesses: Vec<(String, Vec<WitnessedCheckpoint>)> = Vec::new();
    for spec in specs {
        let source = match spec {
            WitnessSpec::File(p) => p.display().to_string(),
            WitnessSpec::Http(u) => u.clone(),
            WitnessSpec::SyslogTcp(_) => continue,
        };
        match load_witness(&source) {
            Ok((checkpoints, _)) => witnesses.push((
                format!("witness {spec}"),
                checkpoints
                    .into_iter()
                    .filter(|c| c.ts_ns > accepted_after)
                    .collect(),
            )),
            Err(e) => {
                tracing::warn!(witness = %spec, "the witness cannot be read at start, so the log is not held to it now: {e}")
            }
        }
    }
    if witnesses.iter().all(|(_, c)| c.is_empty()) {
        return Ok(Vec::new());
    }
    let report = match verify_with(
        paths,
        &VerifyOptions {
            witnesses: witnesses.clone(),
            ..VerifyOptions::default()
        },
    ) {
        Ok(r) => r,
        // No log at all: gone, if a witness saw a log of this host.
        Err(AuditError::Missing { .. }) => {
            return Ok(witnesses
                .iter()
                .filter_map(|(name, cps)| {
                    let last = cps
                        .iter()
                        .filter(|c| host.is_some() && c.host.as_deref() == host)
                        .max_by_key(|c| c.number)?;
                    Some(format!(
                        "there is no audit log, but {name} saw log {} of this host up to checkpoint {} (record {})",
                        last.log_id, last.number, last.seq
                    ))
                })
                .collect())
        }
        Err(e) => return Err(e),
    };
    Ok(report
        .problems
        .iter()
        .filter(|p| {
            matches!(
                p,
                Problem::BehindWitness { .. }
                    | Problem::WitnessDiffers { .. }
                    | Problem::WitnessKeyDiffers { .. }
                    | Problem::WitnessedCheckpointsGone { .. }
            )
        })
        .map(|p| p.to_string())
        .collect())
}

/// Refuses (`Rewound`) a log its witnesses contradict; called before the daemon opens it.
pub fn hold_to_witnesses(paths: &AuditPaths, specs: &[WitnessSpec]) -> Result<(), AuditError> {
    let findings = witness_findings(paths, specs, super::hostname().as_deref())?;
    if findings.is_empty() {
        return Ok(());
    }
    Err(AuditError::Rewound {
        path: paths.audit_dir.clone(),
        finding: findings.join("; "),
    })
}

/// When the newest accepted rewind was recorded (0 if never).
fn newest_acceptance(paths: &AuditPaths) -> i64 {
    let Ok(reader) = AuditReader::open(paths) else {
        return 0;
    };
    let filter = QueryFilter {
        action: Some("sys:audit".into()),
        ..QueryFilter::default()
    };
    let Ok(records) = reader.iter(&filter) else {
        return 0;
    };
    records
        .filter_map(Result::ok)
        .filter(|r| r.body.reason.starts_with(ACCEPTED_PREFIX))
        .map(|r| r.body.ts_ns)
        .max()
        .unwrap_or(0)
}
