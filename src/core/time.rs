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
    timestamp_micros(text).map(micros_days)
}

/// Microseconds since the Unix epoch (UTC) of a commit timestamp text, in the forms
/// [`timestamp_days`] takes.
pub fn timestamp_micros(text: &str) -> Option<i64> {
    let text = text.trim().trim_end_matches('Z');
    let parsed = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()?;
    Some(parsed.and_utc().timestamp_micros())
}

/// Days since 1970-01-01 of microseconds since the Unix epoch.
pub fn micros_days(us: i64) -> i32 {
    us.div_euclid(86_400_000_000) as i32
}

/// Microseconds since the Unix epoch of a DMS change file name's timestamp: the stem
/// `YYYYMMDD-HHMMSS` followed by fraction digits (`20141029-1134010000`: 11:34:01.0000), as AWS
/// DMS names the files it writes to S3; anything after the digits (`-2`, an extension) is
/// ignored. None for a name of another form.
pub fn dms_name_micros(stem: &str) -> Option<i64> {
    let (date, rest) = stem.split_once('-')?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) || digits.len() < 6 {
        return None;
    }
    let (time, fraction) = digits.split_at(6);
    let fraction: String = fraction.chars().chain("000000".chars()).take(6).collect();
    let parsed = chrono::NaiveDateTime::parse_from_str(
        &format!("{date}{time}{fraction}"),
        "%Y%m%d%H%M%S%6f",
    )
    .ok()?;
    Some(parsed.and_utc().timestamp_micros())
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
        assert_eq!(timestamp_micros("1970-01-01 00:00:01.5"), Some(1_500_000));
        assert_eq!(micros_days(86_400_000_000 * 2 - 1), 1);
    }

    #[test]
    fn dms_file_names_give_their_timestamp() {
        let base = timestamp_micros("2014-10-29 11:34:01").unwrap();
        assert_eq!(dms_name_micros("20141029-1134010000"), Some(base));
        assert_eq!(dms_name_micros("20141029-113401250"), Some(base + 250_000));
        assert_eq!(dms_name_micros("20141029-1134010000-2"), Some(base));
        assert_eq!(dms_name_micros("20141029-113401"), Some(base));
        for other in [
            "LOAD00000001",
            "changes",
            "2014-10-29",
            "20141029-1134",
            "x-113401",
        ] {
            assert_eq!(dms_name_micros(other), None, "{other}");
        }
    }

    #[test]
    fn dates_round_trip_through_days() {
        let date = NaiveDate::from_ymd_opt(2019, 6, 18).unwrap();
        assert_eq!(epoch_days(date), 18065);
        assert_eq!(date_text(18065).as_deref(), Some("2019-06-18"));
        assert_eq!(date_text(i64::MAX), None);
    }
}
