//! Calendar dates of recorded timestamps (seconds since the epoch, UTC), for
//! what people read: build logs, reports, PROV-JSON. No time-zone data: the
//! state records UTC and every rendering says so.

/// `secs` since 1970-01-01 as (year, month, day, hour, minute, second), UTC.
pub fn utc(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_dates() {
        assert_eq!(super::utc(0), (1970, 1, 1, 0, 0, 0));
        // 2000-02-29 (a leap day of a century divisible by 400), 12:34:56.
        assert_eq!(super::utc(951_827_696), (2000, 2, 29, 12, 34, 56));
        assert_eq!(super::utc(-1), (1969, 12, 31, 23, 59, 59));
    }
}
