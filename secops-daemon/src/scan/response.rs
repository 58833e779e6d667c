//! Response policies: what happens to tool output that contains findings, and the outcome
//! record that the audit log keeps (categories and counts, never the secret).

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use secops_common::AutonomyLevel;
use serde::{Deserialize, Serialize};

use super::{Category, Finding, Scanner};

/// What to do with output that has findings in it. Written in policy files as `redact`,
/// `withhold`, `log-only` or
/// `{autonomy-tiered: {full: log-only, semi: redact, supervised: redact, locked: withhold}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(into = "PolicyRepr")]
pub enum ResponsePolicy {
    /// Replace each finding with `[REDACTED:<category>]`.
    #[default]
    Redact,
    /// Return no output at all.
    Withhold,
    /// Pass the output through unchanged; only the audit record notes the findings.
    LogOnly,
    /// One of the above per autonomy level. A level missing from the map cannot be decided,
    /// and withholds.
    AutonomyTiered(BTreeMap<AutonomyLevel, TierPolicy>),
}

/// The written form. serde_yaml 0.9 spells an externally tagged enum variant as a YAML tag
/// (`!autonomy-tiered`), not as the one-key map that policy files and JSON use, so the map is
/// spelt out here.
#[derive(Serialize)]
#[serde(untagged)]
enum PolicyRepr {
    Plain(TierPolicy),
    Tiered(TieredRepr),
}

#[derive(Serialize)]
struct TieredRepr {
    #[serde(rename = "autonomy-tiered")]
    autonomy_tiered: BTreeMap<AutonomyLevel, TierPolicy>,
}

const EXPECTED_POLICY: &str = "redact, withhold, log-only, or {autonomy-tiered: {full: ..., semi: ..., supervised: ..., locked: ...}}";

/// By hand rather than `untagged`, whose error ("did not match any variant") says neither
/// what was wrong nor where.
impl<'de> Deserialize<'de> for ResponsePolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ResponsePolicy;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(EXPECTED_POLICY)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ResponsePolicy, E> {
                match v {
                    "redact" => Ok(ResponsePolicy::Redact),
                    "withhold" => Ok(ResponsePolicy::Withhold),
                    "log-only" => Ok(ResponsePolicy::LogOnly),
                    other => Err(E::custom(format!(
                        "unknown output scan policy {other:?}; expected {EXPECTED_POLICY}"
                    ))),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ResponsePolicy, A::Error> {
                use serde::de::Error;
                let Some(key) = map.next_key::<String>()? else {
                    return Err(A::Error::custom(format!(
                        "empty map; expected {EXPECTED_POLICY}"
                    )));
                };
                if key != "autonomy-tiered" {
                    return Err(A::Error::custom(format!(
                        "unknown key {key:?}; expected {EXPECTED_POLICY}"
                    )));
                }
                let tiers: BTreeMap<AutonomyLevel, TierPolicy> = map.next_value()?;
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(A::Error::custom(format!(
                        "unexpected key {extra:?} beside autonomy-tiered"
                    )));
                }
                Ok(ResponsePolicy::AutonomyTiered(tiers))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl From<ResponsePolicy> for PolicyRepr {
    fn from(policy: ResponsePolicy) -> Self {
        match policy {
            ResponsePolicy::Redact => PolicyRepr::Plain(TierPolicy::Redact),
            ResponsePolicy::Withhold => PolicyRepr::Plain(TierPolicy::Withhold),
            ResponsePolicy::LogOnly => PolicyRepr::Plain(TierPolicy::LogOnly),
            ResponsePolicy::AutonomyTiered(tiers) => PolicyRepr::Tiered(TieredRepr {
                autonomy_tiered: tiers,
            }),
        }
    }
}

/// The policies an autonomy tier may name (tiers do not nest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TierPolicy {
    Redact,
    Withhold,
    LogOnly,
}

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
    #[error("the autonomy-tiered response policy has no entry for autonomy level {0}")]
    MissingTier(AutonomyLevel),
    #[error("a finding does not fall on character boundaries of the output")]
    BadOffsets,
}

impl ResponsePolicy {
    /// The concrete policy for an agent at `autonomy`.
    pub fn resolve(&self, autonomy: AutonomyLevel) -> Result<TierPolicy, PolicyError> {
        match self {
            ResponsePolicy::Redact => Ok(TierPolicy::Redact),
            ResponsePolicy::Withhold => Ok(TierPolicy::Withhold),
            ResponsePolicy::LogOnly => Ok(TierPolicy::LogOnly),
            ResponsePolicy::AutonomyTiered(tiers) => tiers
                .get(&autonomy)
                .copied()
                .ok_or(PolicyError::MissingTier(autonomy)),
        }
    }
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
        let applied = policy.resolve(autonomy).and_then(|p| match p {
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
