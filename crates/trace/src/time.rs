//! The workspace's one calendar: proleptic Gregorian days since 1970-01-01 both ways (Howard
//! Hinnant's `days_from_civil` / `civil_from_days`, <https://howardhinnant.github.io/date_algorithms.html>),
//! a UTC breakdown of Unix seconds for the formatters (log stamps, file and folder names), and the
//! one ISO-8601 / RFC 3339 date-time parser, so no crate needs a date-time dependency. UTC only:
//! there is no time-zone database here.

/// Days from 1970-01-01 to `y-m-d` (Hinnant's `days_from_civil`). Out-of-range days roll over
/// arithmetically (Feb 30 is Mar 2), which callers validate beforehand.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month, day)` of a day count from 1970-01-01 (Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

pub fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Days in month `m` (1..=12) of year `y`; 0 for a month out of range.
pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// A Unix time broken down in UTC, to the second. Each writer formats it its own way (vLLM's
/// `MM-DD HH:MM:SS`, bench's `YYYYmmdd-HHMMSS`, LMCache's `YYYYMMDD_HHMMSS`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl Utc {
    /// The UTC date and time of `secs` seconds since the Unix epoch (negative = before 1970).
    pub fn from_unix_secs(secs: i64) -> Utc {
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400) as u32;
        Utc {
            year,
            month,
            day,
            hour: sod / 3600,
            minute: sod / 60 % 60,
            second: sod % 60,
        }
    }

    /// The UTC date and time of a [`std::time::SystemTime`] (times before 1970 count as 1970).
    pub fn from_system_time(t: std::time::SystemTime) -> Utc {
        let secs = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Utc::from_unix_secs(secs as i64)
    }

    /// `YYYY-MM-DD`.
    pub fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Parse exactly `n` ASCII digits at the start of `b`.
pub(crate) fn digits(b: &[u8], n: usize) -> Option<u32> {
    if b.len() < n {
        return None;
    }
    let mut v = 0u32;
    for &c in &b[..n] {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Some(v)
}

/// `HH:MM:SS` at the start of `b` as seconds of the day.
pub(crate) fn parse_hms(b: &[u8]) -> Option<u32> {
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let (h, m, s) = (digits(b, 2)?, digits(&b[3..], 2)?, digits(&b[6..], 2)?);
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(h * 3600 + m * 60 + s)
}

/// A fraction of a second after the `.`/`,` at the start of `b` (any number of digits, only the
/// first nine count): `(nanoseconds, bytes used including the separator)`.
pub(crate) fn parse_fraction(b: &[u8]) -> (u32, usize) {
    if b.len() < 2 || !(b[0] == b'.' || b[0] == b',') || !b[1].is_ascii_digit() {
        return (0, 0);
    }
    let n = b[1..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut ns = 0u32;
    for i in 0..9 {
        let d = if i < n { (b[1 + i] - b'0') as u32 } else { 0 };
        ns = ns * 10 + d;
    }
    (ns, 1 + n)
}

/// Nanoseconds since the Unix epoch of an ISO-8601 / RFC 3339 date-time
/// `YYYY-MM-DD[ Tt]HH:MM:SS[.f|,f][ ][Z|z|±HH:MM|±HHMM]` (no offset = UTC; the fraction's
/// first nine digits count), or the reason it is not one. `i128`: years 0..=9999 overflow
/// `i64` nanoseconds (which end in 2262). Callers with their own wording replace the message.
pub fn parse_datetime_ns(s: &str) -> Result<i128, String> {
    let bad = || {
        format!(
            "{:?} is not a date-time like 2023-11-16 18:15:46.6805900",
            s.chars().take(40).collect::<String>()
        )
    };
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b' ' | b'T' | b't') {
        return Err(bad());
    }
    let y = digits(b, 4).ok_or_else(bad)? as i64;
    let mo = digits(&b[5..], 2).ok_or_else(bad)?;
    let d = digits(&b[8..], 2).ok_or_else(bad)?;
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
        return Err(bad());
    }
    let secs = parse_hms(&b[11..]).ok_or_else(bad)?;
    let (ns, used) = parse_fraction(&b[19..]);
    let rest = match &b[19 + used..] {
        [b' ', r @ ..] => r,
        r => r,
    };
    let offset_secs: i64 = match rest {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), tz @ ..] if tz.len() == 5 && tz[2] == b':' || tz.len() == 4 => {
            let hh = digits(tz, 2).ok_or_else(bad)? as i64;
            let mm = digits(&tz[tz.len() - 2..], 2).ok_or_else(bad)? as i64;
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
    let secs = days_from_civil(y, mo, d) * 86_400 + secs as i64 - offset_secs;
    Ok(secs as i128 * 1_000_000_000 + ns as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2023, 11, 16), 19_677);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn calendar_round_trips() {
        for z in [-1, 0, 19_000, 20_000, 2_932_896, -719_468, 11_016] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn utc_breakdown() {
        // 2024-02-29 23:59:59
        let t = Utc::from_unix_secs(1_709_251_199);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second),
            (2024, 2, 29, 23, 59, 59)
        );
        assert_eq!(t.date(), "2024-02-29");
        let e = Utc::from_system_time(std::time::UNIX_EPOCH);
        assert_eq!(e, Utc::from_unix_secs(0));
        assert_eq!(e.date(), "1970-01-01");
        let before = Utc::from_unix_secs(-1);
        assert_eq!((before.year, before.hour, before.second), (1969, 23, 59));
    }

    #[test]
    fn datetimes_parse_with_fraction_and_offset() {
        let t = parse_datetime_ns("2023-11-16 18:15:46.6805900").unwrap();
        assert_eq!(
            t,
            (19_677 * 86_400 + 18 * 3600 + 15 * 60 + 46) * 1_000_000_000 + 680_590_000
        );
        let z = parse_datetime_ns("2023-11-16T18:15:46Z").unwrap();
        let plus = parse_datetime_ns("2023-11-16 19:15:46+01:00").unwrap();
        assert_eq!(z, plus);
        // RFC 3339 allows lower-case t and z; a space before the offset is read too
        assert_eq!(parse_datetime_ns("2023-11-16t18:15:46z").unwrap(), z);
        assert_eq!(parse_datetime_ns("2023-11-16 13:15:46 -0500").unwrap(), z);
        assert_eq!(
            parse_datetime_ns("2024-05-10 00:00:00.009930+00:00").unwrap()
                - parse_datetime_ns("2024-05-10 00:00:00").unwrap(),
            9_930_000
        );
        for bad in [
            "",
            "2023-11-16",
            "2023-13-16 00:00:00",
            "2023-02-29 00:00:00",
            "2023-11-16 24:00:00",
            "2023-11-16 18:15:46 junk",
            "2023-11-16 18:15:46.",
            "2023-11-16 18:15:46+1",
            "2023-11-16 18:15:46  Z",
            "２023-11-16 18:15:46",
        ] {
            assert!(parse_datetime_ns(bad).is_err(), "{bad}");
        }
        assert!(parse_datetime_ns("2024-02-29 00:00:00").is_ok());
        // fuzz regression: year 3023 overflowed i64 nanoseconds
        let far = parse_datetime_ns("3023-11-16 18:15:46").unwrap();
        let near = parse_datetime_ns("2023-11-16 18:15:46").unwrap();
        assert_eq!(
            far - near,
            (days_from_civil(3023, 11, 16) - 19_677) as i128 * 86_400 * 1_000_000_000
        );
        assert!(parse_datetime_ns("0000-01-01 00:00:00").is_ok());
        assert!(parse_datetime_ns("9999-12-31 23:59:60.999999999-23:59").is_ok());
    }
}
