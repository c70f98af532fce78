//! Small calendar helpers for the text stamps of logs and CSV traces, so the crate needs no
//! date-time dependency: proleptic Gregorian days since 1970-01-01, and a parser for
//! `YYYY-MM-DD HH:MM:SS[.fraction][Z|+HH:MM|-HH:MM]` (also with a `T` separator).

/// Days from 1970-01-01 to `y-m-d` (Howard Hinnant's `days_from_civil`). Out-of-range days
/// roll over arithmetically (Feb 30 is Mar 2), which callers validate beforehand.
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub(crate) fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub(crate) fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Parse exactly `n` ASCII digits.
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

/// Nanoseconds since the Unix epoch of `YYYY-MM-DD HH:MM:SS[.f][Z|±HH:MM]`, or the reason it is
/// not one. `i128`: years 0..=9999 overflow `i64` nanoseconds (which end in 2262).
pub(crate) fn parse_datetime_ns(s: &str) -> Result<i128, String> {
    let bad = || {
        format!(
            "{:?} is not a date-time like 2023-11-16 18:15:46.6805900",
            s.chars().take(40).collect::<String>()
        )
    };
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b' ' || b[10] == b'T') {
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
    let rest = &b[19 + used..];
    let offset_secs: i64 = match rest {
        [] | [b'Z'] => 0,
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
            "2023-11-16 18:15:46+1",
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
