//! UTC calendar time without a time-zone database: what the console log's
//! stamps, manifests and snapshot tags print, and `logs --since` parses
//! (Howard Hinnant's `civil_from_days` and `days_from_civil`, proleptic
//! Gregorian).

use std::time::{SystemTime, UNIX_EPOCH};

/// A moment as UTC calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub milli: u32,
}

impl Utc {
    /// `t`, to the millisecond; times before the epoch read as the epoch.
    pub fn of(t: SystemTime) -> Utc {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut u = Utc::of_secs(ms.div_euclid(1000));
        u.milli = ms.rem_euclid(1000) as u32;
        u
    }

    /// `secs` since the epoch.
    pub fn of_secs(secs: i64) -> Utc {
        let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        Utc {
            year,
            month,
            day,
            hour: (rest / 3600) as u32,
            minute: (rest % 3600 / 60) as u32,
            second: (rest % 60) as u32,
            milli: 0,
        }
    }

    /// RFC 3339 to the second: `2026-12-07T14:30:00Z`.
    pub fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Days since 1970-01-01 to (year, month, day).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) to days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips_and_known_dates() {
        assert_eq!(Utc::of_secs(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(Utc::of_secs(951_782_400).rfc3339(), "2000-02-29T00:00:00Z");
        assert_eq!(
            Utc::of_secs(1_796_641_712).rfc3339(),
            "2026-12-07T11:08:32Z"
        );
        for days in [-800_000, -1, 0, 59, 60, 11_016, 20_794, 800_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
