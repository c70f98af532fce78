//! Turn timestamps of the conversation CSV: RFC 3339 (`2025-06-02T09:15:00.25Z`,
//! `...+02:00`), `YYYY-MM-DD HH:MM:SS[.fraction]` (UTC), or plain seconds (`1717000000.5`, `12`).
//! Parsed into integer nanoseconds so sub-second stamps survive. Also the calendar arithmetic
//! the log writer needs to print `MM-DD HH:MM:SS`.

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

fn digits(b: &[u8], n: usize) -> Option<i64> {
    if b.len() < n {
        return None;
    }
    b[..n].iter().try_fold(0i64, |v, &c| {
        c.is_ascii_digit().then(|| v * 10 + (c - b'0') as i64)
    })
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days from 1970-01-01 (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month, day)` of a day count from 1970-01-01 (Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// vLLM's log stamp `MM-DD HH:MM:SS` (Python logging `%m-%d %H:%M:%S`: the second is floored)
/// of a time in Unix nanoseconds.
pub fn log_stamp(unix_ns: i64) -> [u8; 14] {
    let secs = unix_ns.div_euclid(NS);
    let (_, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let two = |v: i64| [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8];
    let mut out = [0u8; 14];
    out[0..2].copy_from_slice(&two(m));
    out[2] = b'-';
    out[3..5].copy_from_slice(&two(d));
    out[5] = b' ';
    out[6..8].copy_from_slice(&two(s / 3600));
    out[8] = b':';
    out[9..11].copy_from_slice(&two(s / 60 % 60));
    out[11] = b':';
    out[12..14].copy_from_slice(&two(s % 60));
    out
}

/// Unix nanoseconds of a date-time; the reason otherwise.
fn parse_datetime(s: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "{:?} is not a date-time like 2025-06-02 09:15:00.25 or 2025-06-02T09:15:00Z",
            s.chars().take(40).collect::<String>()
        )
    };
    let b = s.as_bytes();
    let y = digits(b, 4).ok_or_else(bad)?;
    let mo = digits(&b[5..], 2).ok_or_else(bad)?;
    let d = digits(&b[8..], 2).ok_or_else(bad)?;
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
        return Err(bad());
    }
    if b.len() < 19 || !(b[10] == b' ' || b[10] == b'T' || b[10] == b't') {
        return Err(bad());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let h = digits(&b[11..], 2).ok_or_else(bad)?;
    let mi = digits(&b[14..], 2).ok_or_else(bad)?;
    let sec = digits(&b[17..], 2).ok_or_else(bad)?;
    if h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let mut rest = &b[19..];
    let mut frac_ns = 0i64;
    if let [b'.' | b',', tail @ ..] = rest {
        let n = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return Err(bad());
        }
        for i in 0..9 {
            frac_ns = frac_ns * 10
                + tail
                    .get(i)
                    .filter(|_| i < n)
                    .map_or(0, |c| (c - b'0') as i64);
        }
        rest = &tail[n..];
    }
    let rest = match rest {
        [b' ', r @ ..] => r,
        r => r,
    };
    let offset = match rest {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), tz @ ..] if (tz.len() == 5 && tz[2] == b':') || tz.len() == 4 => {
            let hh = digits(tz, 2).ok_or_else(bad)?;
            let mm = digits(&tz[tz.len() - 2..], 2).ok_or_else(bad)?;
            if hh > 23 || mm > 59 {
                return Err(bad());
            }
            let off = hh * 3600 + mm * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return Err(bad()),
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Ok(secs * NS + frac_ns)
}

/// Format Unix nanoseconds as `YYYY-MM-DD HH:MM:SS.mmm` (UTC), the demo CSV's style.
pub fn format_datetime_ms(unix_ns: i64) -> String {
    let ms = unix_ns.div_euclid(1_000_000);
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
