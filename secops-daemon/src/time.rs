//! Times for people: parsed from RFC 3339 (`2026-11-22T10:00:00Z`) or an age (`10m`, `2h`,
//! `1day`, meaning that long before now), and printed as RFC 3339 with nanoseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Parses a time given on the command line into nanoseconds since the Unix epoch (UTC).
pub fn parse_time_arg(raw: &str) -> anyhow::Result<i64> {
    if let Ok(t) = humantime::parse_rfc3339_weak(raw) {
        return to_ns(t).with_context(|| format!("time {raw:?} is before 1970"));
    }
    match humantime::parse_duration(raw) {
        Ok(age) => {
            let t = SystemTime::now()
                .checked_sub(age)
                .ok_or_else(|| anyhow!("{raw:?} reaches before 1970"))?;
            to_ns(t).with_context(|| format!("{raw:?} reaches before 1970"))
        }
        Err(_) => Err(anyhow!(
            "{raw:?} is neither an RFC 3339 time (2026-11-22T10:00:00Z) nor an age (10m, 2h, 1day)"
        )),
    }
}

fn to_ns(t: SystemTime) -> anyhow::Result<i64> {
    let d = t.duration_since(UNIX_EPOCH)?;
    Ok(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// `2026-11-22T10:00:00.123456789Z`.
pub fn format_ns(ts_ns: i64) -> String {
    match u64::try_from(ts_ns) {
        Ok(ns) => {
            humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
        }
        Err(_) => format!("{ts_ns}ns"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_and_relative_times() {
        assert_eq!(
            parse_time_arg("1970-01-01T00:00:01Z").unwrap(),
            1_000_000_000
        );
        let ten_minutes_ago = parse_time_arg("10m").unwrap();
        let expected = now_ns() - 600_000_000_000;
        assert!((ten_minutes_ago - expected).abs() < 5_000_000_000);
        assert!(parse_time_arg("yesterday-ish")
            .unwrap_err()
            .to_string()
            .contains("neither"));
        assert_eq!(format_ns(1_000_000_001), "1970-01-01T00:00:01.000000001Z");
    }
}
