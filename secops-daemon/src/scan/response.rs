//! Response policies: what happens to tool output that contains findings, and the outcome
//! record that the audit log keeps (categories and counts, never the secret).

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use secops_common::AutonomyLevel;
use serde::{Deserialize, Serialize};

use super::{Category, Finding, Scanner};
use crate::policy::response::MissingTier;
pub use crate::policy::response::{ResponsePolicy, TierPolicy};

/// What [`Scanner::respond`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Applied {
    /// Nothing was found; the output is unchanged whatever the policy.
    Clean,
    Redacted,
    Withheld,
    LoggedOnly,
}

/// The result of scanning one output: what may be returned and what may be recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScanOutcome {
    /// The output to hand back; `None` when withheld.
    pub text: Option<String>,
    /// How many findings of each category. Never the findings' text.
    pub findings: BTreeMap<Category, usize>,
    pub action: Applied,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error(transparent)]
    MissingTier(#[from] MissingTier),
    #[error("a finding does not fall on character boundaries of the output")]
    BadOffsets,
}

/// `text` with every finding replaced by its marker. Findings must be sorted and
/// non-overlapping, as [`Scanner::scan`] returns them.
pub fn redact(text: &str, findings: &[Finding]) -> Result<String, PolicyError> {
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for f in findings {
        let before = text.get(pos..f.start).ok_or(PolicyError::BadOffsets)?;
        out.push_str(before);
        out.push_str("[REDACTED:");
        out.push_str(f.category.as_str());
        out.push(']');
        pos = f.end;
    }
    out.push_str(text.get(pos..).ok_or(PolicyError::BadOffsets)?);
    Ok(out)
}

impl Scanner {
    /// Scans `text` and applies `policy` for an agent at `autonomy`. Fails closed: if the
    /// policy cannot be applied, or anything in scanning goes wrong (including a panic), the
    /// outcome is `Withheld` and the raw text is never returned.
    pub fn respond(
        &self,
        text: &str,
        policy: &ResponsePolicy,
        autonomy: AutonomyLevel,
    ) -> ScanOutcome {
        let attempt = catch_unwind(AssertUnwindSafe(|| {
            let findings = self.scan(text);
            let counts = Scanner::count(&findings);
            (findings, counts)
        }));
        let Ok((findings, counts)) = attempt else {
            tracing::error!("output scanner failed; withholding the output");
            return withheld(BTreeMap::new());
        };
        if findings.is_empty() {
            return ScanOutcome {
                text: Some(text.to_owned()),
                findings: counts,
                action: Applied::Clean,
            };
        }
        let applied = policy
            .resolve(autonomy)
            .map_err(PolicyError::from)
            .and_then(|p| match p {
                TierPolicy::Redact => redact(text, &findings).map(|t| (Some(t), Applied::Redacted)),
                TierPolicy::Withhold => Ok((None, Applied::Withheld)),
                TierPolicy::LogOnly => Ok((Some(text.to_owned()), Applied::LoggedOnly)),
            });
        match applied {
            Ok((text, action)) => ScanOutcome {
                text,
                findings: counts,
                action,
            },
            Err(e) => {
                tracing::warn!(error = %e, "output response policy failed; withholding");
                withheld(counts)
            }
        }
    }
}

fn withheld(findings: BTreeMap<Category, usize>) -> ScanOutcome {
    ScanOutcome {
        text: None,
        findings,
        action: Applied::Withheld,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_rejects_bad_offsets() {
        let f = [Finding {
            category: Category::Email,
            start: 1,
            end: 2,
        }];
        assert_eq!(redact("é", &f), Err(PolicyError::BadOffsets));
    }
}
