//! Turn timestamps of the conversation CSV: RFC 3339 (`2025-06-02T09:15:00.25Z`,
//! `...+02:00`), `YYYY-MM-DD HH:MM:SS[.fraction]` (UTC), or plain seconds (`1717000000.5`, `12`).
//! Parsed into integer nanoseconds so sub-second stamps survive. Also the stamps the log writer
//! and the demo CSV print. The calendar and the date-time parser are the trace crate's
//! ([`inferencelab_trace::time`]).

use inferencelab_trace::time::{parse_datetime_ns, Utc};

/// A parsed turn time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stamp {
    /// Nanoseconds since the Unix epoch, from a calendar date-time.
    DateTime(i64),
    /// Nanoseconds on the file's own clock, from plain seconds.
    Seconds(i64),
}

impl Stamp {
    pub fn nanos(self) -> i64 {
        match self {
            Stamp::DateTime(n) | Stamp::Seconds(n) => n,
        }
    }
}

const NS: i64 = 1_000_000_000;

/// Parse one timestamp cell, or say why it is not one.
pub fn parse_stamp(s: &str) -> Result<Stamp, String> {
    let t = s.trim();
    let b = t.as_bytes();
    if b.len() >= 10 && b[4] == b'-' && b[7] == b'-' {
        return parse_datetime(t).map(Stamp::DateTime);
    }
    match t.parse::<f64>() {
        Ok(x) if x.is_finite() && (0.0..9.0e9).contains(&x) => {
            Ok(Stamp::Seconds((x * NS as f64).round() as i64))
        }
        Ok(x) if x < 0.0 => Err(format!(
            "{x} is a negative time: plain seconds count from 0 (or give a date-time)"
        )),
        _ => Err(format!(
            "{:?} is not a time: expected RFC 3339 (2025-06-02T09:15:00Z), \
             YYYY-MM-DD HH:MM:SS[.fraction] or plain seconds",
            t.chars().take(40).collect::<String>()
        )),
    }
}

/// vLLM's log stamp `MM-DD HH:MM:SS` (Python logging `%m-%d %H:%M:%S`: the second is floored)
/// of a time in Unix nanoseconds.
pub fn log_stamp(unix_ns: i64) -> [u8; 14] {
    let t = Utc::from_unix_secs(unix_ns.div_euclid(NS));
    let two = |v: u32| [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8];
    let mut out = [0u8; 14];
    out[0..2].copy_from_slice(&two(t.month));
    out[2] = b'-';
    out[3..5].copy_from_slice(&two(t.day));
    out[5] = b' ';
    out[6..8].copy_from_slice(&two(t.hour));
    out[8] = b':';
    out[9..11].copy_from_slice(&two(t.minute));
    out[11] = b':';
    out[12..14].copy_from_slice(&two(t.second));
    out
}

/// Unix nanoseconds of a date-time (the trace crate's ISO-8601 parser); the reason otherwise.
fn parse_datetime(s: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "{:?} is not a date-time like 2025-06-02 09:15:00.25 or 2025-06-02T09:15:00Z",
            s.chars().take(40).collect::<String>()
        )
    };
    let ns = parse_datetime_ns(s).map_err(|_| bad())?;
    i64::try_from(ns).map_err(|_| bad())
}

/// Format Unix nanoseconds as `YYYY-MM-DD HH:MM:SS.mmm` (UTC), the demo CSV's style.
pub fn format_datetime_ms(unix_ns: i64) -> String {
    let ms = unix_ns.div_euclid(1_000_000);
    let t = Utc::from_unix_secs(ms.div_euclid(1000));
    format!(
        "{} {:02}:{:02}:{:02}.{:03}",
        t.date(),
        t.hour,
        t.minute,
        t.second,
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferencelab_trace::time::{civil_from_days, days_from_civil};

    #[test]
    fn accepted_forms() {
        let base = parse_stamp("2025-06-02 09:15:00").unwrap();
        assert_eq!(
            base,
            Stamp::DateTime((days_from_civil(2025, 6, 2) * 86_400 + 9 * 3600 + 15 * 60) * NS)
        );
        assert_eq!(parse_stamp("2025-06-02T09:15:00Z").unwrap(), base);
        assert_eq!(parse_stamp("2025-06-02T11:15:00+02:00").unwrap(), base);
        assert_eq!(parse_stamp("2025-06-02t04:15:00-0500").unwrap(), base);
        assert_eq!(
            parse_stamp("2025-06-02 09:15:00.25").unwrap().nanos() - base.nanos(),
            250_000_000
        );
        assert_eq!(
            parse_stamp("2025-06-02 09:15:00.123456789123")
                .unwrap()
                .nanos()
                - base.nanos(),
            123_456_789
        );
        assert_eq!(
            parse_stamp(" 12.5 ").unwrap(),
            Stamp::Seconds(12_500_000_000)
        );
        assert_eq!(
            parse_stamp("1717000000").unwrap().nanos(),
            1_717_000_000 * NS
        );
    }

    #[test]
    fn refused_forms_say_what_is_expected() {
        for bad in [
            "",
            "yesterday",
            "2025-13-01 00:00:00",
            "2025-02-29 00:00:00",
            "2025-06-02",
            "2025-06-02 25:00:00",
            "2025-06-02 09:15:00 junk",
            "2025-06-02 09:15:00.",
            "NaN",
            "1e300",
        ] {
            let e = parse_stamp(bad).unwrap_err();
            assert!(e.contains("like") || e.contains("expected"), "{bad}: {e}");
        }
    }

    #[test]
    fn calendar_round_trips_and_log_stamps() {
        for z in [-1, 0, 19_000, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        let t = parse_stamp("2025-08-12 12:00:06.999").unwrap().nanos();
        assert_eq!(&log_stamp(t), b"08-12 12:00:06");
        assert_eq!(format_datetime_ms(t), "2025-08-12 12:00:06.999");
    }
}
