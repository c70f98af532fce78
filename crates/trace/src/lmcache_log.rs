//! The log of LMCache's multi-process server (`lmcache server ... > lmcache.log`, issue 24):
//! the ticks of its L1 eviction loop that evicted, put on a vLLM log's clock.
//!
//! LMCache 0.5.6 logs every line as `[YYYY-MM-DD HH:MM:SS,mmm] LMCache LEVEL: message (file:line:
//! logger)` (`lmcache/logging.py`; colour codes around it on a terminal or not), its local wall
//! clock with milliseconds. The eviction loop (`v1/distributed/storage_controllers/
//! eviction_controller.py:160-192`) logs `L1 memory usage U above watermark W; triggering
//! eviction.` (line 179) on every tick that evicts, just before it evicts; the ticks that find L1
//! below the watermark are not logged.
//!
//! vLLM stamps its lines with the same machine's wall clock, without the year (`MM-DD
//! HH:MM:SS[.mmm]`); the vLLM log reader keeps the stamp of the trace's time 0 (the earliest
//! request) as [`MonthDayTime`] (`Trace::clock_origin`). A tick is put on the trace's clock by
//! taking the origin in the tick's year, the year before or the year after, whichever is nearest
//! (a run across a year end), and counting the seconds between them. Both logs must come from
//! the same machine and time zone (they are local time).

use std::path::Path;

use crate::error::{TraceError, TraceResult};
use crate::time::{days_from_civil, days_in_month};

/// What LMCache's eviction loop logs on a tick that evicts (`eviction_controller.py:179`).
pub const EVICTING_TICK: &str = "triggering eviction";

/// A wall-clock stamp without a year, as vLLM writes them (`MM-DD HH:MM:SS[.fff]`): the stamp of
/// a trace's time 0 ([`crate::Trace::clock_origin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonthDayTime {
    pub month: u32,
    pub day: u32,
    /// Seconds since midnight.
    pub secs: u32,
    pub nanos: u32,
}

impl MonthDayTime {
    /// The month, day and time of day of `ns` nanoseconds since 1970-01-01 (any year).
    pub fn from_unix_ns(ns: i128) -> Self {
        const DAY: i128 = 86_400 * 1_000_000_000;
        let (_, month, day) = crate::time::civil_from_days(ns.div_euclid(DAY) as i64);
        let in_day = ns.rem_euclid(DAY);
        MonthDayTime {
            month,
            day,
            secs: (in_day / 1_000_000_000) as u32,
            nanos: (in_day % 1_000_000_000) as u32,
        }
    }
}

impl std::fmt::Display for MonthDayTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
            self.month,
            self.day,
            self.secs / 3600,
            self.secs / 60 % 60,
            self.secs % 60,
            self.nanos / 1_000_000
        )
    }
}

/// One logged tick: LMCache's stamp (local time, with the year) and its line (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedTick {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub secs: u32,
    pub millis: u32,
    pub line: usize,
}

impl LoggedTick {
    /// Seconds from `origin` (taken in this tick's year, the one before or the one after,
    /// whichever is nearest) to this tick.
    pub fn seconds_after(&self, origin: MonthDayTime) -> f64 {
        let at = days_from_civil(self.year, self.month, self.day) as f64 * 86_400.0
            + self.secs as f64
            + self.millis as f64 / 1e3;
        [self.year - 1, self.year, self.year + 1]
            .into_iter()
            // a 02-29 origin exists only in a leap year
            .filter(|&y| origin.day <= days_in_month(y, origin.month))
            .map(|y| {
                let o = days_from_civil(y, origin.month, origin.day) as f64 * 86_400.0
                    + origin.secs as f64
                    + origin.nanos as f64 / 1e9;
                at - o
            })
            .min_by(|a, b| a.abs().total_cmp(&b.abs()))
            .unwrap_or(f64::NAN)
    }
}

impl std::fmt::Display for LoggedTick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{:02}-{:02} {:02}:{:02}:{:02},{:03}",
            self.year,
            self.month,
            self.day,
            self.secs / 3600,
            self.secs / 60 % 60,
            self.secs % 60,
            self.millis
        )
    }
}

/// The evicting ticks of an LMCache server log, in log order (plain or gzip/zstd).
pub fn read_evicting_ticks(path: &Path) -> TraceResult<Vec<LoggedTick>> {
    let bytes = crate::fsutil::read_input(path).map_err(|e| TraceError::io(path, e))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut ticks = Vec::new();
    let mut stamped_lines = 0usize;
    for (i, line) in text.lines().enumerate() {
        let stamp = lmcache_stamp(line);
        stamped_lines += usize::from(stamp.is_some());
        if !line.contains(EVICTING_TICK) {
            continue;
        }
        let Some(t) = stamp else {
            return Err(TraceError::invalid(
                path,
                i + 1,
                "an eviction line without LMCache's `[YYYY-MM-DD HH:MM:SS,mmm] LMCache INFO:` \
                 stamp: give the log `lmcache server` itself wrote (its stdout and stderr, as \
                 scripts/real_lmcache_check.sh keeps them in lmcache.log)",
            ));
        };
        ticks.push(LoggedTick { line: i + 1, ..t });
    }
    if stamped_lines == 0 && !text.trim().is_empty() {
        return Err(TraceError::invalid(
            path,
            0,
            "no line carries LMCache's `[YYYY-MM-DD HH:MM:SS,mmm] LMCache LEVEL:` stamp: this is \
             not the log of `lmcache server` (give its stdout and stderr, e.g. lmcache.log of \
             scripts/real_lmcache_check.sh)",
        ));
    }
    Ok(ticks)
}

/// `[YYYY-MM-DD HH:MM:SS,mmm] LMCache ` anywhere in the line (after colour codes).
fn lmcache_stamp(line: &str) -> Option<LoggedTick> {
    let at = line.find("] LMCache ")?;
    let b = line.as_bytes();
    // "[YYYY-MM-DD HH:MM:SS,mmm" is 24 bytes
    let start = at.checked_sub(24)?;
    if b[start] != b'[' {
        return None;
    }
    let s = line.get(start + 1..at)?;
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let d = s.get(r)?;
        d.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| d.parse().ok())?
    };
    let sep = s.as_bytes();
    if sep[4] != b'-' || sep[7] != b'-' || sep[10] != b' ' || sep[13] != b':' || sep[16] != b':' {
        return None;
    }
    if sep[19] != b',' && sep[19] != b'.' {
        return None;
    }
    let (year, month, day) = (num(0..4)? as i64, num(5..7)?, num(8..10)?);
    let (h, m, sec, millis) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || h > 23
        || m > 59
        || sec > 60
    {
        return None;
    }
    Some(LoggedTick {
        year,
        month,
        day,
        secs: h * 3600 + m * 60 + sec,
        millis,
        line: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "\x1b[32;20m[2026-12-05 00:43:00,836] LMCache INFO:\x1b[0m L1 memory usage \
        0.88 above watermark 0.80; triggering eviction. \x1b[3m(eviction_controller.py:179:lmcache.\
        v1.distributed.storage_controllers.eviction_controller)\x1b[0m";

    #[test]
    fn reads_the_stamp_behind_colour_codes() {
        let t = lmcache_stamp(LINE).unwrap();
        assert_eq!((t.year, t.month, t.day), (2026, 12, 5));
        assert_eq!((t.secs, t.millis), (43 * 60, 836));
        assert!(lmcache_stamp("[2026-13-05 00:43:00,836] LMCache INFO: x").is_none());
        assert!(lmcache_stamp("INFO:     Started server process [4539]").is_none());
    }

    #[test]
    fn ticks_go_on_the_origin_of_the_nearest_year() {
        let t = lmcache_stamp(LINE).unwrap();
        // vLLM's 12-05 00:42:28.736
        let o = MonthDayTime {
            month: 12,
            day: 5,
            secs: 42 * 60 + 28,
            nanos: 736_000_000,
        };
        assert!((t.seconds_after(o) - 32.1).abs() < 1e-6);
        // a run across the year end: the origin 12-31 23:59:59 of 2026, the tick 2027-01-01
        let t = lmcache_stamp("[2027-01-01 00:00:01,000] LMCache INFO: x").unwrap();
        let o = MonthDayTime {
            month: 12,
            day: 31,
            secs: 86_399,
            nanos: 0,
        };
        assert!((t.seconds_after(o) - 2.0).abs() < 1e-9);
        // and the other way: the tick before the origin across the year end
        let t = lmcache_stamp("[2026-12-31 23:59:58,500] LMCache INFO: x").unwrap();
        let o = MonthDayTime {
            month: 1,
            day: 1,
            secs: 0,
            nanos: 0,
        };
        assert!((t.seconds_after(o) + 1.5).abs() < 1e-9);
    }

    #[test]
    fn reads_the_evicting_ticks_of_a_log_and_refuses_other_files() {
        let dir = std::env::temp_dir().join(format!("lmcache_log_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("lmcache.log");
        let text = format!(
            "[2026-12-05 00:42:29,401] LMCache INFO: Stored 256 tokens in 0.012 seconds\n{LINE}\n\
             [2026-12-05 00:43:02,837] LMCache INFO: L1 memory usage 0.83 above watermark 0.80; \
             triggering eviction. (eviction_controller.py:179)\n"
        );
        std::fs::write(&p, text).unwrap();
        let ticks = read_evicting_ticks(&p).unwrap();
        assert_eq!(ticks.len(), 2);
        assert_eq!((ticks[0].line, ticks[1].line), (2, 3));
        assert_eq!(ticks[1].to_string(), "2026-12-05 00:43:02,837");
        // an eviction line without a stamp names its line
        std::fs::write(
            &p,
            format!("{LINE}\nL1 memory usage 0.9; triggering eviction.\n"),
        )
        .unwrap();
        let e = read_evicting_ticks(&p).unwrap_err().to_string();
        assert!(e.contains(":2") && e.contains("lmcache server"), "{e}");
        // a vLLM log is not LMCache's
        std::fs::write(
            &p,
            "(APIServer pid=1) INFO 12-05 00:42:28.736 [x.py:1] hello\n",
        )
        .unwrap();
        let e = read_evicting_ticks(&p).unwrap_err().to_string();
        assert!(e.contains("not the log of `lmcache server`"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
