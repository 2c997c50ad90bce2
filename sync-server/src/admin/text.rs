//! How the console writes and reads times and errors: UTC times, ages, and the first line of an
//! error.

use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

/// `2026-12-02 03:47:39` for epoch milliseconds, in UTC.
pub(crate) fn time(ms: i64) -> String {
    let at =
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    at.format(format_description!("[year]-[month]-[day] [hour]:[minute]:[second]")).unwrap_or_default()
}

/// The epoch milliseconds of a time an operator typed, in UTC: `2026-12-02T03:47` (as a
/// `datetime-local` field sends it), with `:SS` or a space instead of `T`, a bare date, or a number
/// of epoch milliseconds. `None` for anything else.
pub(crate) fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim().trim_end_matches(['Z', 'z']);
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    let (date, clock) = text.split_once(['T', ' ']).unwrap_or((text, "00:00"));
    let date =
        Date::parse(date, format_description!("[year padding:zero repr:full base:calendar]-[month]-[day]")).ok()?;
    let clock = Time::parse(clock, format_description!("[hour]:[minute]:[second]"))
        .or_else(|_| Time::parse(clock, format_description!("[hour]:[minute]")))
        .ok()?;
    let at = PrimitiveDateTime::new(date, clock).assume_utc();
    (at.year() >= 1970).then(|| (at.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// How long ago or ahead a span of milliseconds is, roughly: `42 s`, `5 min`, `3 h`, `2 d`.
pub(crate) fn span(ms: i64) -> String {
    let secs = ms.abs() / 1000;
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// The first line of `text`, at most `max` characters (an ellipsis marks a cut).
pub(crate) fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or_default().trim();
    if line.chars().count() <= max {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(max).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_and_read_in_utc() {
        assert_eq!(time(0), "1970-01-01 00:00:00");
        assert_eq!(time(1_796_123_970_033), "2026-12-01 11:19:30");
        for typed in ["2026-12-01T11:19:30", "2026-12-01 11:19:30", "2026-12-01T11:19:30Z"] {
            assert_eq!(parse_time(typed), Some(1_796_123_970_000), "{typed}");
        }
        assert_eq!(parse_time("2026-12-01T11:19"), Some(1_796_123_940_000));
        assert_eq!(parse_time("2024-02-29"), Some(1_709_164_800_000));
        assert_eq!(parse_time("1796123970033"), Some(1_796_123_970_033));
        for bad in ["", "yesterday", "2026-02-30", "2026-13-01", "2026-12-01T25:00", "2026-12-01T10:00:00:00", "1-2"] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
        assert_eq!(parse_time("99999999999999999999999"), None);
    }

    #[test]
    fn spans_and_first_lines_are_short() {
        assert_eq!(span(42_000), "42 s");
        assert_eq!(span(-300_000), "5 min");
        assert_eq!(span(3 * 3_600_000), "3 h");
        assert_eq!(span(3 * 86_400_000), "3 d");
        assert_eq!(first_line("\n  connection refused\nat line 2", 100), "connection refused");
        assert_eq!(first_line("éééé", 2), "éé…");
    }
}
