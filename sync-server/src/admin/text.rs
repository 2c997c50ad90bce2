//! How the console writes and reads times and errors: UTC times without a date library, ages, and
//! the first line of an error.

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (`civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `2026-12-02 03:47:39` for epoch milliseconds, in UTC.
pub(crate) fn time(ms: i64) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000) / 1000);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rest / 3600, rest / 60 % 60, rest % 60)
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
    let number = |s: &str, min: i64, max: i64| {
        (!s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<i64>().ok())
            .flatten()
            .filter(|n| (min..=max).contains(n))
    };
    let mut date_parts = date.split('-');
    let (year, month, day) = (
        number(date_parts.next()?, 1970, 9999)?,
        number(date_parts.next()?, 1, 12)?,
        number(date_parts.next()?, 1, 31)?,
    );
    let mut clock_parts = clock.split(':');
    let hour = number(clock_parts.next()?, 0, 23)?;
    let minute = number(clock_parts.next()?, 0, 59)?;
    let second = clock_parts.next().map_or(Some(0), |s| number(s, 0, 59))?;
    if date_parts.next().is_some() || clock_parts.next().is_some() {
        return None;
    }
    let days = days_from_civil(year, month, day);
    // 2026-02-31 would silently become March 3rd.
    (civil_from_days(days) == (year, month, day)).then_some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000)
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
