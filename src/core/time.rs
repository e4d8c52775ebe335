//! Dates as the tables store them: days since 1970-01-01 (Arrow `Date32`, Delta `date`), from
//! business dates, commit timestamps and epoch milliseconds, and back to `YYYY-MM-DD` text.

use chrono::NaiveDate;

/// Days since 1970-01-01 (Arrow `Date32`).
pub fn epoch_days(date: NaiveDate) -> i32 {
    (date - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32
}

/// The `YYYY-MM-DD` text of a date stored as days since the Unix epoch (Arrow `Date32`, Delta
/// `date`); None when out of range.
pub fn date_text(days: i64) -> Option<String> {
    let secs = days.checked_mul(86_400)?;
    Some(
        chrono::DateTime::from_timestamp(secs, 0)?
            .format("%Y-%m-%d")
            .to_string(),
    )
}

/// Days since 1970-01-01 of a commit timestamp text (`2014-10-29 11:34:01.000000`, with a
/// space or `T`, optional fraction and zone suffix `Z`).
pub fn timestamp_days(text: &str) -> Option<i32> {
    let text = text.trim().trim_end_matches('Z');
    let parsed = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()?;
    Some(epoch_days(parsed.date()))
}

/// Days since 1970-01-01 of milliseconds since the Unix epoch.
pub fn millis_days(ms: i64) -> i32 {
    ms.div_euclid(86_400_000) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commit_timestamps_to_days() {
        assert_eq!(timestamp_days("1970-01-02 00:00:01.000000"), Some(1));
        assert_eq!(timestamp_days("2019-06-18T23:59:59Z"), Some(18065));
        assert_eq!(timestamp_days("yesterday"), None);
        assert_eq!(millis_days(86_400_000 * 3 + 5), 3);
        assert_eq!(millis_days(-1), -1);
    }

    #[test]
    fn dates_round_trip_through_days() {
        let date = NaiveDate::from_ymd_opt(2019, 6, 18).unwrap();
        assert_eq!(epoch_days(date), 18065);
        assert_eq!(date_text(18065).as_deref(), Some("2019-06-18"));
        assert_eq!(date_text(i64::MAX), None);
    }
}
