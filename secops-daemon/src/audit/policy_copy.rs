//! Copies of the policies that were in force, kept by content hash, so an evidence bundle can
//! carry the exact bytes an audit record's `sha256` names.
//!
//! `<state>/policies/<sha256>.json`: every file of the policy (path and text) in load order.
//! The daemon keeps one whenever a policy goes into force (at start, on each reload) and
//! records at start which one is in force (`sys:policy`), so the policy of any record can be
//! found by walking back to the newest `sys:policy` record before it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use secops_common::{CoreAction, RiskLevel, Verdict};

use super::record::{AuditObject, NewRecord, ObjectKind, Source};
use crate::policy::{policy_hash, Policy};

/// One policy as it was in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyCopy {
    pub content_hash: String,
    pub files: Vec<PolicyFileCopy>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyFileCopy {
    pub path: String,
    pub text: String,
}

impl PolicyCopy {
    /// The hash the files really have (the one `content_hash` claims, if nothing changed).
    pub fn computed_hash(&self) -> String {
        policy_hash(
            self.files
                .iter()
                .map(|f| (f.path.clone(), Sha256::digest(f.text.as_bytes()).into())),
        )
    }

    /// Reads the files of a loaded policy again. `None` if they changed since it was loaded
    /// (the reload that change triggers keeps the next copy).
    pub fn of(policy: &Policy) -> std::io::Result<Option<PolicyCopy>> {
        let mut files = Vec::with_capacity(policy.files.len());
        for path in &policy.files {
            files.push(PolicyFileCopy {
                path: path.to_string_lossy().into_owned(),
                text: fs::read_to_string(path)?,
            });
        }
        let copy = PolicyCopy {
            content_hash: policy.content_hash.clone(),
            files,
        };
        Ok((copy.computed_hash() == policy.content_hash).then_some(copy))
    }
}

pub fn policies_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("policies")
}

fn copy_path(state_dir: &Path, hash: &str) -> PathBuf {
    policies_dir(state_dir).join(format!("{hash}.json"))
}

/// Keeps a copy of `policy` under the state directory (once per hash).
pub fn keep(state_dir: &Path, policy: &Policy) -> anyhow::Result<()> {
    use anyhow::Context;
    let target = copy_path(state_dir, &policy.content_hash);
    if target.exists() {
        return Ok(());
    }
    let Some(copy) = PolicyCopy::of(policy).context("reading the policy files to keep a copy")?
    else {
        tracing::warn!(sha256 = %policy.content_hash, "the policy files changed after they were loaded; no copy kept of this one");
        return Ok(());
    };
    let dir = policies_dir(state_dir);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.tmp", policy.content_hash));
    let mut f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec_pretty(&copy)?)?;
    f.sync_all()?;
    fs::rename(&tmp, &target).with_context(|| format!("renaming to {}", target.display()))?;
    Ok(())
}

/// The copy of the policy with this hash, if one was kept.
pub fn load(state_dir: &Path, hash: &str) -> anyhow::Result<Option<PolicyCopy>> {
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let path = copy_path(state_dir, hash);
    match fs::read(&path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!("{} is not a policy copy: {e}", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

/// The record saying which policy is in force when the daemon starts.
pub fn in_force_at_start(policy: &Policy) -> NewRecord {
    NewRecord {
        object: Some(AuditObject {
            kind: ObjectKind::Target,
            value: "policy".to_owned(),
        }),
        ..NewRecord::new(
            crate::time::now_ns(),
            CoreAction::SysPolicy.as_str(),
            Verdict::Allow,
            RiskLevel::High,
            format!(
                "policy in force at daemon start: sha256 {}; files: {}",
                policy.content_hash,
                policy
                    .files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Source::Daemon,
        )
    }
}

/// The hash of the policy in force after a `sys:policy` record: the new one of a reload
/// (`sha256 OLD -> NEW`), otherwise the one it names first (at start, or a refused reload's
/// policy that stays).
pub fn in_force_after(record: &NewRecord) -> Option<String> {
    if record.action != CoreAction::SysPolicy.as_str() {
        return None;
    }
    let reason = &record.reason;
    let at = reason.find("sha256 ")? + "sha256 ".len();
    let first = reason.get(at..at + 64)?;
    let hash = match (record.verdict, reason[at + 64..].strip_prefix(" -> ")) {
        (Verdict::Allow, Some(rest)) => rest.get(..64)?,
        _ => first,
    };
    hash.bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then(|| hash.to_owned())
}

/// Keeps a copy of the policy in force and records that it is: called once when the daemon
/// starts, before anything is decided.
pub fn record_at_start(
    writer: &super::AuditWriter,
    state_dir: &Path,
    policy: &Policy,
) -> anyhow::Result<()> {
    if let Err(e) = keep(state_dir, policy) {
        tracing::warn!("no copy kept of the policy in force: {e:#}");
    }
    writer
        .append(in_force_at_start(policy))
        .wait()
        .map_err(|e| anyhow::anyhow!("recording the policy in force: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_record(verdict: Verdict, reason: &str) -> NewRecord {
        NewRecord::new(
            1,
            "sys:policy",
            verdict,
            RiskLevel::High,
            reason.into(),
            Source::Daemon,
        )
    }

    #[test]
    fn the_policy_in_force_after_each_kind_of_policy_record() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let start = format!("policy in force at daemon start: sha256 {a}; files: /p.yaml");
        assert_eq!(
            in_force_after(&policy_record(Verdict::Allow, &start)),
            Some(a.clone())
        );
        let reload = format!("policy reloaded (SIGHUP): sha256 {a} -> {b}; files: /p.yaml");
        assert_eq!(
            in_force_after(&policy_record(Verdict::Allow, &reload)),
            Some(b.clone())
        );
        let refused = format!(
            "policy not reloaded (SIGHUP): the one in force (sha256 {a}) stays: sha256 {b} -> x"
        );
        assert_eq!(
            in_force_after(&policy_record(Verdict::Deny, &refused)),
            Some(a)
        );
        assert_eq!(
            in_force_after(&policy_record(Verdict::Allow, "sha256 short")),
            None
        );
    }
}
