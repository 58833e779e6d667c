//! `auto_lower`: after how many denials within how long an agent's autonomy drops one step.
//!
//! Written as `auto_lower: {denials: 5, within: 1m}` or `auto_lower: off`, in `defaults` and
//! per agent. Read from a raw YAML value (like `ports`) so each mistake is reported on the
//! exact sub-field, with the policy's own `file:line:column: field:` position.

use std::time::Duration;

use super::pattern::yaml_kind;

/// The most denials a threshold may ask for: beyond this the feature is effectively off,
/// which should be written as `off`.
pub const MAX_DENIALS: u32 = 100_000;
/// The longest window: the daemon keeps at most `denials` timestamps per agent, so a long
/// window costs nothing, but a threshold spread over days is no longer "repeated denials".
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Lower an agent's autonomy one step once it has been denied `denials` times within
/// `within`; the count then starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoLower {
    pub denials: u32,
    pub within: Duration,
}

impl std::fmt::Display for AutoLower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} denials within {}",
            self.denials,
            humantime::format_duration(self.within)
        )
    }
}

/// One problem, on `field` below the `auto_lower` key (empty: the value itself).
#[derive(Debug, PartialEq, Eq)]
pub struct AutoLowerError {
    pub field: &'static str,
    pub message: String,
}

fn error(field: &'static str, message: impl Into<String>) -> AutoLowerError {
    AutoLowerError {
        field,
        message: message.into(),
    }
}

/// `Ok(None)` is `off`.
pub fn parse(value: &serde_yaml::Value) -> Result<Option<AutoLower>, Vec<AutoLowerError>> {
    use serde_yaml::Value;
    let map = match value {
        Value::String(s) if s == "off" => return Ok(None),
        Value::Mapping(map) => map,
        other => {
            return Err(vec![error(
                "",
                format!(
                    "expected `off` or {{denials: N, within: DURATION}}, found {}",
                    match other {
                        Value::String(s) => format!("{s:?}"),
                        other => yaml_kind(other).to_owned(),
                    }
                ),
            )])
        }
    };
    let mut errors = Vec::new();
    let mut denials = None;
    let mut within = None;
    for (key, raw) in map {
        match key.as_str() {
            Some("denials") => match raw.as_u64() {
                Some(n @ 1..) if n <= u64::from(MAX_DENIALS) => denials = u32::try_from(n).ok(),
                _ => errors.push(error(
                    "denials",
                    format!("expected a whole number from 1 to {MAX_DENIALS}"),
                )),
            },
            Some("within") => match raw.as_str().map(humantime::parse_duration) {
                Some(Ok(d)) if !d.is_zero() && d <= MAX_WINDOW => within = Some(d),
                Some(Ok(_)) => errors.push(error(
                    "within",
                    "the window must be longer than 0 s and at most 24h",
                )),
                Some(Err(e)) => errors.push(error(
                    "within",
                    format!(
                        "{:?} is not a duration (30s, 1m, 2h): {e}",
                        raw.as_str().unwrap_or("")
                    ),
                )),
                None => errors.push(error(
                    "within",
                    format!("expected a duration such as 1m, found {}", yaml_kind(raw)),
                )),
            },
            _ => errors.push(error(
                "",
                format!(
                    "unknown field {}, expected `denials` or `within`",
                    match key {
                        Value::String(s) => format!("`{s}`"),
                        other => yaml_kind(other).to_owned(),
                    }
                ),
            )),
        }
    }
    for (field, missing) in [("denials", denials.is_none()), ("within", within.is_none())] {
        if missing && !errors.iter().any(|e| e.field == field) {
            errors.push(error("", format!("missing field `{field}`")));
        }
    }
    match (denials, within) {
        (Some(denials), Some(within)) if errors.is_empty() => {
            Ok(Some(AutoLower { denials, within }))
        }
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> serde_yaml::Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn off_and_thresholds_parse() {
        assert_eq!(parse(&yaml("off")), Ok(None));
        assert_eq!(
            parse(&yaml("{denials: 5, within: 1m}")),
            Ok(Some(AutoLower {
                denials: 5,
                within: Duration::from_secs(60)
            }))
        );
        assert_eq!(
            parse(&yaml("{denials: 5, within: 90s}"))
                .unwrap()
                .unwrap()
                .to_string(),
            "5 denials within 1m 30s"
        );
    }

    #[test]
    fn each_mistake_names_its_field() {
        let fields = |text: &str| -> Vec<(&'static str, String)> {
            parse(&yaml(text))
                .unwrap_err()
                .into_iter()
                .map(|e| (e.field, e.message))
                .collect()
        };
        assert_eq!(fields("{denials: 0, within: 1m}")[0].0, "denials");
        assert_eq!(fields("{denials: -3, within: 1m}")[0].0, "denials");
        assert_eq!(fields("{denials: five, within: 1m}")[0].0, "denials");
        assert_eq!(fields("{denials: 5, within: soon}")[0].0, "within");
        assert_eq!(fields("{denials: 5, within: 0s}")[0].0, "within");
        assert_eq!(fields("{denials: 5, within: 2days}")[0].0, "within");
        assert_eq!(fields("{denials: 5, within: 60}")[0].0, "within");
        let missing = fields("{denials: 5}");
        assert_eq!(missing, [("", "missing field `within`".to_owned())]);
        let unknown = fields("{denials: 5, within: 1m, window: 2m}");
        assert_eq!(unknown[0].0, "");
        assert!(
            unknown[0].1.contains("unknown field `window`"),
            "{unknown:?}"
        );
        assert!(fields("on")[0].1.contains("found \"on\""));
        assert!(fields("true")[0].1.contains("found a boolean"));
    }
}
