//! Risk, verdicts and autonomy, and the one matrix that turns risk into a verdict.

use serde::{Deserialize, Serialize};

/// How bad an action would be if it were the wrong thing to do. Ordered: `Low < Critical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RiskLevel {
    Low,
    Medium,
    High,
    Critical,
}

/// What happens to an action. Ordered by strictness: `Allow < Escalate < Deny`, so that
/// combining verdicts is `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    /// Ask a human. In the kernel path this is "deny now, open a ticket".
    Escalate,
    Deny,
}

/// How much an agent may do without a human. Ordered from most to least trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutonomyLevel {
    Full,
    Semi,
    Supervised,
    Locked,
}

impl AutonomyLevel {
    /// The autonomy x risk matrix: the verdict for an action whose rule gave a risk but left
    /// the verdict open.
    ///
    /// | autonomy   | low      | medium   | high     | critical |
    /// |------------|----------|----------|----------|----------|
    /// | full       | allow    | allow    | allow    | escalate |
    /// | semi       | allow    | allow    | escalate | escalate |
    /// | supervised | allow    | escalate | escalate | deny     |
    /// | locked     | escalate | deny     | deny     | deny     |
    pub const fn verdict_for(self, risk: RiskLevel) -> Verdict {
        use AutonomyLevel::*;
        use RiskLevel::*;
        use Verdict::*;
        match (self, risk) {
            (Full, Low | Medium | High) => Allow,
            (Full, Critical) => Escalate,
            (Semi, Low | Medium) => Allow,
            (Semi, High | Critical) => Escalate,
            (Supervised, Low) => Allow,
            (Supervised, Medium | High) => Escalate,
            (Supervised, Critical) => Deny,
            (Locked, Low) => Escalate,
            (Locked, Medium | High | Critical) => Deny,
        }
    }

    pub const ALL: [AutonomyLevel; 4] = [Self::Full, Self::Semi, Self::Supervised, Self::Locked];

    /// One step less trusted; `None` for `locked`, which has nowhere lower to go.
    pub const fn lowered(self) -> Option<AutonomyLevel> {
        match self {
            Self::Full => Some(Self::Semi),
            Self::Semi => Some(Self::Supervised),
            Self::Supervised => Some(Self::Locked),
            Self::Locked => None,
        }
    }
}

impl RiskLevel {
    pub const ALL: [RiskLevel; 4] = [Self::Low, Self::Medium, Self::High, Self::Critical];
}

/// A name (of a level, verdict, source, ...) that is not one of the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {given:?} (expected one of: {expected})")]
pub struct ParseLevelError {
    pub kind: &'static str,
    pub given: String,
    pub expected: &'static str,
}

/// Gives a fieldless enum its lowercase names: `as_str`, `Display` and a `FromStr` whose
/// error lists the names that exist. One macro for every such enum (levels, verdicts, audit
/// sources), so their names parse and print alike.
#[macro_export]
macro_rules! named_enum {
    ($ty:ident, $kind:literal, $($variant:ident => $name:literal),+ $(,)?) => {
        impl $ty {
            pub const fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }
        impl ::core::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl ::core::str::FromStr for $ty {
            type Err = $crate::ParseLevelError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err($crate::ParseLevelError {
                        kind: $kind,
                        given: s.to_owned(),
                        expected: concat!($($name, " "),+).trim_ascii_end(),
                    }),
                }
            }
        }
    };
}

named_enum!(RiskLevel, "risk level", Low => "low", Medium => "medium", High => "high", Critical => "critical");
named_enum!(Verdict, "verdict", Allow => "allow", Escalate => "escalate", Deny => "deny");
named_enum!(AutonomyLevel, "autonomy level", Full => "full", Semi => "semi", Supervised => "supervised", Locked => "locked");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_combine_by_strictness() {
        assert!(Verdict::Allow < Verdict::Escalate);
        assert!(Verdict::Escalate < Verdict::Deny);
        assert_eq!(Verdict::Allow.max(Verdict::Deny), Verdict::Deny);
    }

    #[test]
    fn less_autonomy_is_never_more_permissive() {
        for risk in RiskLevel::ALL {
            for pair in AutonomyLevel::ALL.windows(2) {
                assert!(
                    pair[0].verdict_for(risk) <= pair[1].verdict_for(risk),
                    "{} is more permissive than {} at {risk}",
                    pair[1],
                    pair[0]
                );
            }
        }
    }

    #[test]
    fn lowering_walks_full_to_locked_one_step_at_a_time() {
        let mut level = AutonomyLevel::Full;
        let mut seen = vec![level];
        while let Some(lower) = level.lowered() {
            assert!(lower > level, "{lower} is not less trusted than {level}");
            level = lower;
            seen.push(level);
        }
        assert_eq!(seen, AutonomyLevel::ALL);
    }

    #[test]
    fn more_risk_is_never_more_permissive() {
        for autonomy in AutonomyLevel::ALL {
            for pair in RiskLevel::ALL.windows(2) {
                assert!(autonomy.verdict_for(pair[0]) <= autonomy.verdict_for(pair[1]));
            }
        }
    }

    #[test]
    fn critical_risk_is_never_allowed_by_autonomy() {
        for autonomy in AutonomyLevel::ALL {
            assert_ne!(autonomy.verdict_for(RiskLevel::Critical), Verdict::Allow);
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for v in [Verdict::Allow, Verdict::Escalate, Verdict::Deny] {
            assert_eq!(v.as_str().parse::<Verdict>(), Ok(v));
        }
        let err = "alow".parse::<Verdict>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown verdict \"alow\" (expected one of: allow escalate deny)"
        );
        assert!(
            "Critical".parse::<RiskLevel>().is_err(),
            "names are case-sensitive"
        );
        assert_eq!(
            serde_json::to_string(&AutonomyLevel::Supervised).unwrap(),
            "\"supervised\""
        );
    }
}
