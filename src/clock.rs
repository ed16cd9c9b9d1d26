//! UTC timestamps for snapshot ids and manifests, without a date-time dependency.

use std::time::{SystemTime, UNIX_EPOCH};

/// (year, month, day, hour, minute, second) in UTC.
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem / 60 % 60) as u32,
        (rem % 60) as u32,
    )
}

pub struct Now {
    pub rfc3339: String,
    /// Sorts chronologically; a random-ish suffix keeps two captures in one second apart.
    pub snapshot_id: String,
}

/// The current time. Test builds may set it with RESTORE_NOW (seconds since 1970), so that
/// retention can be tested on snapshots spread over years.
fn system_now() -> std::time::Duration {
    #[cfg(feature = "test-hooks")]
    if let Some(secs) = std::env::var("RESTORE_NOW")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return std::time::Duration::from_secs(secs);
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's days-from-civil).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since 1970 of an RFC 3339 UTC time as manifests record it
/// ("2026-11-30T12:50:14.123456Z"); None when it is not one.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, d);
    u64::try_from(days * 86_400 + i64::from(h * 3600 + mi * 60 + sec)).ok()
}

/// The calendar buckets a time falls in, for retention: hour, day, ISO week, month, year.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Buckets {
    pub hour: (i64, u32, u32, u32),
    pub day: (i64, u32, u32),
    pub week: (i64, u32),
    pub month: (i64, u32),
    pub year: i64,
}

pub fn buckets(secs: u64) -> Buckets {
    let (y, m, d, h, _, _) = civil(secs);
    let days = (secs / 86_400) as i64;
    // ISO 8601 week: Monday first; week 1 holds the year's first Thursday.
    let weekday = (days + 3).rem_euclid(7); // 0 = Monday (1970-01-01 was a Thursday)
    let thursday = days - weekday + 3;
    let (ty, _, _, _, _, _) = civil((thursday * 86_400) as u64);
    let week = (thursday - days_from_civil(ty, 1, 1)) / 7 + 1;
    Buckets {
        hour: (y, m, d, h),
        day: (y, m, d),
        week: (ty, week as u32),
        month: (y, m),
        year: y,
    }
}

/// The RFC 3339 time `days` days from now (for "a snapshot from the future").
pub fn rfc3339_after_days(days: u64) -> String {
    let t = system_now().as_secs() + days * 86_400;
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.000000Z")
}

pub fn now() -> Now {
    let t = system_now();
    let (y, mo, d, h, mi, s) = civil(t.as_secs());
    let salt =
        blake3::hash(format!("{}{}{}", t.as_nanos(), std::process::id(), line!()).as_bytes());
    Now {
        rfc3339: format!(
            "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:06}Z",
            t.subsec_micros()
        ),
        snapshot_id: format!(
            "{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z-{}",
            &salt.to_hex()[..6]
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(super::civil(1_796_043_014), (2026, 11, 30, 12, 50, 14));
        assert_eq!(super::civil(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(
            super::parse_rfc3339("2026-11-30T12:50:14.123456Z"),
            Some(1_796_043_014)
        );
        assert_eq!(
            super::parse_rfc3339("2000-02-29T00:00:00Z"),
            Some(951_782_400)
        );
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-11-30 12:50:14Z",
            "2026-11-30T12:50:14",
        ] {
            assert_eq!(super::parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn iso_weeks() {
        let w = |s: &str| super::buckets(super::parse_rfc3339(s).unwrap()).week;
        assert_eq!(
            w("2021-01-03T12:00:00Z"),
            (2020, 53),
            "a Sunday in 2020's last week"
        );
        assert_eq!(w("2021-01-04T00:00:00Z"), (2021, 1), "the Monday after");
        assert_eq!(w("2026-12-03T00:00:00Z"), (2026, 49));
        assert_eq!(w("2024-12-30T00:00:00Z"), (2025, 1));
    }
}
