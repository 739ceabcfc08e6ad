//! Time as the hit log and the review commands see it: milliseconds since
//! the Unix epoch (UTC), RFC 3339 text, the times an operator types, and
//! minutes and UTC days.

/// Milliseconds in a minute.
pub const MINUTE_MS: i64 = 60_000;
/// Milliseconds in a (UTC) day.
pub const DAY_MS: i64 = 86_400_000;

/// Unix seconds now.
pub fn unix_now() -> i64 {
    now_ms().div_euclid(1000)
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// RFC 3339 with milliseconds, UTC (`2026-11-26T10:15:00.123Z`).
pub fn format_ts(ms: i64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Parse RFC 3339 (any offset) to milliseconds since the epoch.
pub fn parse_ts(text: &str) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A point in time as an operator writes it: a duration back from `now`
/// (`24h`, `7d`, `90min`), an RFC 3339 time, a UTC date (`2026-11-01`),
/// or `now`.
pub fn parse_time(text: &str, now: i64) -> Result<i64, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
    }
    if let Some(ts) = parse_ts(text) {
        return Ok(ts);
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = time::Date::parse(text, &date_format) {
        let t = date.midnight().assume_utc();
        return Ok(t.unix_timestamp() * 1000);
    }
    Err(format!(
        "{text:?} is not a time: use a duration back from now (24h, 7d), \
         an RFC 3339 time (2026-11-01T08:00:00Z) or a date (2026-11-01)"
    ))
}

/// The minute a time falls in, as the hit store's `hits_minutes` keys it.
pub fn minute(ts: i64) -> i64 {
    ts.div_euclid(MINUTE_MS)
}

/// The default report range's start: midnight (UTC) `days - 1` days ago,
/// so "the last 30 days" is 29 whole days and today. Whole days are what
/// the roll-up holds, so such a report never reads raw rows.
pub fn whole_days_since(now: i64, days: i64) -> i64 {
    (now.div_euclid(DAY_MS) - (days - 1)) * DAY_MS
}

/// `YYYY-MM-DD` for a day number.
pub fn day_name(day: i64) -> String {
    format_ts(day * DAY_MS)[..10].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_with_milliseconds() {
        let ms = 1_795_000_000_123;
        let text = format_ts(ms);
        assert!(text.ends_with(".123Z"), "{text}");
        assert_eq!(parse_ts(&text), Some(ms));
        assert_eq!(
            parse_ts("2026-11-26T10:00:00+01:00"),
            parse_ts("2026-11-26T09:00:00Z")
        );
        assert_eq!(parse_ts("yesterday"), None);
    }

    #[test]
    fn times_parse_as_durations_dates_or_rfc3339() {
        let now = 1_000_000_000_000;
        assert_eq!(parse_time("24h", now), Ok(now - 86_400_000));
        assert_eq!(parse_time("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("1970-01-02", now), Ok(86_400_000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z", now), Ok(1000));
        assert!(
            parse_time("last tuesday", now)
                .unwrap_err()
                .contains("not a time")
        );
    }
}
