//! The timestamp at the start of every log line: RFC 3339 in UTC with microseconds
//! (`2026-11-28T10:21:16.695543Z`), the same text `tracing-subscriber`'s `SystemTime`
//! timer writes, made cheap. Turning seconds since 1970 into a calendar date and
//! formatting six numbers through `fmt` cost about 2,000 instructions a line; here each
//! thread keeps the `YYYY-MM-DDTHH:MM:SS` of the last second it formatted, so a line
//! costs a clock read, a comparison, a copy and eight characters. Instants the cache
//! cannot represent (before 1970, after 9999) go to `tracing-subscriber`'s own timer.

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// Length of `YYYY-MM-DDTHH:MM:SS`.
const SECOND_LEN: usize = 19;

/// Seconds from 1970-01-01 to 10000-01-01: from there on the year has five digits and
/// `tracing-subscriber` writes it differently (`+10000`), so its timer takes over.
const FIRST_FIVE_DIGIT_YEAR: u64 = 253_402_300_800;

/// A [`FormatTime`] that writes the current time as `tracing-subscriber`'s
/// `SystemTime` does, caching the part that changes once a second per thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct CachedSystemTime;

impl FormatTime for CachedSystemTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        match cacheable(SystemTime::now()) {
            Some(since_epoch) => write_since_epoch(w, since_epoch),
            // A clock before 1970 or after 9999: rare enough to take the long way.
            None => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

thread_local! {
    /// The last second this thread formatted, and its text. Starts at a second no
    /// clock reads (`u64::MAX`), so the first line fills it.
    static LAST_SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// `time` as a duration since 1970, when it falls in the years this module writes
/// (1970 to 9999).
fn cacheable(time: SystemTime) -> Option<Duration> {
    time.duration_since(UNIX_EPOCH)
        .ok()
        .filter(|d| d.as_secs() < FIRST_FIVE_DIGIT_YEAR)
}

/// Write the instant `since_epoch` after 1970 (below [`FIRST_FIVE_DIGIT_YEAR`]) as
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds, truncated).
fn write_since_epoch(w: &mut impl Write, since_epoch: Duration) -> fmt::Result {
    let secs = since_epoch.as_secs();
    LAST_SECOND.with(|last| match last.try_borrow_mut() {
        Ok(mut last) => {
            if last.0 != secs {
                last.1.clear();
                push_second(&mut last.1, secs);
                last.0 = secs;
            }
            w.write_str(&last.1)
        }
        // Only if writing to `w` logged a line itself; then without the cache.
        Err(_) => {
            let mut text = String::with_capacity(SECOND_LEN);
            push_second(&mut text, secs);
            w.write_str(&text)
        }
    })?;
    // `.ffffffZ` in one write: each write to `w` is a call through `dyn Write`.
    let micros = since_epoch.subsec_micros();
    let mut tail = *b".000000Z";
    for (at, unit) in [100_000, 10_000, 1000, 100, 10, 1].into_iter().enumerate() {
        tail[at + 1] = b'0' + (micros / unit % 10) as u8;
    }
    // Only ASCII digits, a dot and a `Z`.
    w.write_str(std::str::from_utf8(&tail).map_err(|_| fmt::Error)?)
}

/// Append `YYYY-MM-DDTHH:MM:SS` for `secs` since 1970 (below
/// [`FIRST_FIVE_DIGIT_YEAR`]).
fn push_second(text: &mut String, secs: u64) {
    let days = secs / 86_400;
    // Each below 100 000.
    let in_day = (secs % 86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    let parts = [
        (year, 1000, '-'),
        (month, 10, '-'),
        (day, 10, 'T'),
        (in_day / 3600, 10, ':'),
        (in_day / 60 % 60, 10, ':'),
    ];
    for (value, mut unit, separator) in parts {
        while unit > 0 {
            text.push(digit(value / unit));
            unit /= 10;
        }
        text.push(separator);
    }
    text.push(digit(in_day % 60 / 10));
    text.push(digit(in_day % 10));
}

/// The last decimal digit of `value`.
fn digit(value: u32) -> char {
    char::from(b'0' + (value % 10) as u8)
}

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01: Howard
/// Hinnant's `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>),
/// for days on or after 1970, counted in 400-year eras from 0000-03-01.
fn civil_from_days(days: u64) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    // Below FIRST_FIVE_DIGIT_YEAR the year has at most four digits.
    (year as u32, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn text(time: SystemTime) -> String {
        let mut out = String::new();
        write_since_epoch(&mut out, cacheable(time).unwrap()).unwrap();
        out
    }

    fn at(secs: u64, micros: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, micros * 1000 + 999)
    }

    /// Days in `month` of `year`, the slow and obvious way.
    fn month_len(year: u64, month: u64) -> u64 {
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// The date of `days` since 1970, by counting whole years and months.
    fn counted(mut days: u64) -> (u64, u64, u64) {
        let mut year = 1970;
        loop {
            let len: u64 = (1..=12).map(|m| month_len(year, m)).sum();
            if days < len {
                break;
            }
            days -= len;
            year += 1;
        }
        let mut month = 1;
        while days >= month_len(year, month) {
            days -= month_len(year, month);
            month += 1;
        }
        (year, month, days + 1)
    }

    #[test]
    fn known_instants_are_written_as_rfc3339_utc_with_microseconds() {
        assert_eq!(text(at(0, 0)), "1970-01-01T00:00:00.000000Z");
        assert_eq!(text(at(951_782_400, 7)), "2000-02-29T00:00:00.000007Z");
        assert_eq!(
            text(at(1_795_861_276, 695_543)),
            "2026-11-28T10:21:16.695543Z"
        );
        assert_eq!(
            text(at(4_107_542_399, 999_999)),
            "2100-02-28T23:59:59.999999Z"
        );
        assert_eq!(text(at(4_107_542_400, 0)), "2100-03-01T00:00:00.000000Z");
        assert_eq!(
            text(at(FIRST_FIVE_DIGIT_YEAR - 1, 999_999)),
            "9999-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn the_cached_second_is_refreshed_when_the_second_changes() {
        // Same thread, so the second call finds the first one's cache.
        assert_eq!(text(at(86_399, 1)), "1970-01-01T23:59:59.000001Z");
        assert_eq!(text(at(86_399, 2)), "1970-01-01T23:59:59.000002Z");
        assert_eq!(text(at(86_400, 3)), "1970-01-02T00:00:00.000003Z");
    }

    #[test]
    fn instants_before_1970_or_after_9999_are_left_to_tracing_subscribers_timer() {
        assert!(cacheable(UNIX_EPOCH - Duration::from_nanos(1)).is_none());
        assert!(cacheable(UNIX_EPOCH + Duration::from_secs(FIRST_FIVE_DIGIT_YEAR)).is_none());
        assert!(cacheable(UNIX_EPOCH).is_some());
    }

    #[test]
    fn now_matches_tracing_subscribers_timer_to_the_second() {
        // Formatted back to back; retried when a second boundary falls between them.
        for _ in 0..10 {
            let mut theirs = String::new();
            tracing_subscriber::fmt::time::SystemTime
                .format_time(&mut Writer::new(&mut theirs))
                .unwrap();
            let mut ours = String::new();
            CachedSystemTime
                .format_time(&mut Writer::new(&mut ours))
                .unwrap();
            assert_eq!(ours.len(), theirs.len(), "{ours} vs {theirs}");
            if ours[..SECOND_LEN] == theirs[..SECOND_LEN] {
                return;
            }
        }
        panic!("never agreed on the second");
    }

    proptest! {
        #[test]
        fn dates_agree_with_counting_days(days in 0u64..(FIRST_FIVE_DIGIT_YEAR / 86_400)) {
            let (y, m, d) = counted(days);
            let expected = format!("{y:04}-{m:02}-{d:02}T00:00:00.000000Z");
            prop_assert_eq!(text(at(days * 86_400, 0)), expected);
        }
    }
}
