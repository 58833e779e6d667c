//! Times: for people, parsed from RFC 3339 (`2026-11-22T10:00:00Z`) or an age (`10m`, `2h`,
//! `1day`, meaning that long before now) and printed as RFC 3339 with nanoseconds; and the
//! kernel's boot clock (what BPF programs stamp events and grant expiries with) against UTC.

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

/// Converts the kernel's CLOCK_BOOTTIME stamps to UTC and back.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    realtime_minus_boottime_ns: i64,
}

impl Clock {
    pub(crate) fn now() -> Clock {
        let realtime = clock_ns(libc::CLOCK_REALTIME);
        let boottime = clock_ns(libc::CLOCK_BOOTTIME);
        Clock {
            realtime_minus_boottime_ns: realtime - boottime,
        }
    }

    /// The boot-clock time of a UTC time (0 for a time before boot).
    pub(crate) fn boot_ns(&self, utc_ns: i64) -> u64 {
        u64::try_from(utc_ns.saturating_sub(self.realtime_minus_boottime_ns)).unwrap_or(0)
    }

    pub(crate) fn utc_ns(&self, boot_ns: u64) -> i64 {
        i64::try_from(boot_ns)
            .unwrap_or(i64::MAX)
            .saturating_add(self.realtime_minus_boottime_ns)
    }
}

/// CLOCK_BOOTTIME now, the clock BPF programs read (`bpf_ktime_get_boot_ns`).
pub fn boot_now_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_BOOTTIME)).unwrap_or(0)
}

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the pointer given.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec)
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

    #[test]
    fn boot_clock_round_trips_through_utc() {
        let clock = Clock::now();
        let boot = boot_now_ns();
        let utc = clock.utc_ns(boot);
        assert!((utc - now_ns()).abs() < 1_000_000_000);
        assert_eq!(clock.boot_ns(utc), boot);
        assert_eq!(clock.boot_ns(0), 0, "a time before boot is 0");
    }
}
