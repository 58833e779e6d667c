//! What the output scanner does with findings, as a policy says it: `redact`, `withhold`,
//! `log-only`, or one of them per autonomy level. The scanner (`crate::scan`) applies it.

use std::collections::BTreeMap;

use secops_common::AutonomyLevel;
use serde::{Deserialize, Serialize};

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

/// An autonomy-tiered response policy that names no response for this level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the autonomy-tiered response policy has no entry for autonomy level {0}")]
pub struct MissingTier(pub AutonomyLevel);

impl ResponsePolicy {
    /// The concrete policy for an agent at `autonomy`.
    pub fn resolve(&self, autonomy: AutonomyLevel) -> Result<TierPolicy, MissingTier> {
        match self {
            ResponsePolicy::Redact => Ok(TierPolicy::Redact),
            ResponsePolicy::Withhold => Ok(TierPolicy::Withhold),
            ResponsePolicy::LogOnly => Ok(TierPolicy::LogOnly),
            ResponsePolicy::AutonomyTiered(tiers) => {
                tiers.get(&autonomy).copied().ok_or(MissingTier(autonomy))
            }
        }
    }
}
