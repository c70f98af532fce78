//! Validated numbers for flags and YAML values. Each type checks once, where the value enters
//! (clap's value parser through `FromStr`, serde through `try_from`), so no later arithmetic sees
//! a NaN, an infinity, a negative size or a duration that `Duration::from_secs_f64` would panic
//! on. The error text says what is allowed; clap and serde prefix it with the flag or the YAML key
//! (and line), so a message names both the place and the fix.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest span any time flag takes, in seconds (about 31.7 years): far beyond any run, and
/// far inside what `Duration` and tokio's timers represent.
pub const MAX_SECONDS: f64 = 1e9;

fn parse_f64(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .map_err(|_| format!("{s:?} is not a number"))
}

macro_rules! checked_f64 {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
        #[serde(try_from = "f64", into = "f64")]
        pub struct $name(f64);

        impl $name {
            /// The value, checked at construction.
            pub fn get(self) -> f64 {
                self.0
            }
        }

        impl TryFrom<f64> for $name {
            type Error = String;
            fn try_from(v: f64) -> Result<Self, String> {
                let check: fn(f64) -> Result<(), String> = $check;
                check(v).map(|()| $name(v))
            }
        }

        impl From<$name> for f64 {
            fn from(v: $name) -> f64 {
                v.0
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::try_from(parse_f64(s)?)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

checked_f64!(
    /// A finite number greater than 0 (rates, speeds, widths).
    Positive,
    |v| {
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            Err(format!("{v} is not allowed: give a finite number greater than 0"))
        }
    }
);

checked_f64!(
    /// A finite number, 0 or more (sizes in GiB: 0 switches a tier off).
    NonNegative,
    |v| {
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(format!("{v} is not allowed: give a finite number, 0 or more"))
        }
    }
);

checked_f64!(
    /// A span of seconds, 0 to [`MAX_SECONDS`]: always a valid [`Duration`].
    Seconds,
    |v| {
        if v.is_finite() && (0.0..=MAX_SECONDS).contains(&v) {
            Ok(())
        } else {
            Err(format!(
                "{v} is not allowed: give seconds from 0 to {MAX_SECONDS:e}"
            ))
        }
    }
);

checked_f64!(
    /// A speed-up factor (trace seconds per real second), 1e-6 to 1e6: time divided or
    /// multiplied by it stays a valid [`Duration`].
    Scale,
    |v| {
        if v.is_finite() && (1e-6..=1e6).contains(&v) {
            Ok(())
        } else {
            Err(format!("{v} is not allowed: give a factor from 1e-6 to 1e6"))
        }
    }
);

impl Seconds {
    pub const ZERO: Seconds = Seconds(0.0);

    /// The span as a [`Duration`] (cannot panic: the range is checked).
    pub fn duration(self) -> Duration {
        Duration::from_secs_f64(self.0)
    }
}

impl Positive {
    /// `v` when it is a finite number above 0.
    pub fn new(v: f64) -> Option<Positive> {
        Positive::try_from(v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_nan_infinity_and_out_of_range() {
        for s in ["nan", "inf", "-inf", "-1", "0", "x", ""] {
            assert!(s.parse::<Positive>().is_err(), "Positive took {s}");
        }
        for s in ["nan", "inf", "-1e-9", "1e10"] {
            assert!(s.parse::<Seconds>().is_err(), "Seconds took {s}");
        }
        for s in ["1e-300", "0", "1e7", "nan"] {
            assert!(s.parse::<Scale>().is_err(), "Scale took {s}");
        }
        assert!("-0.5".parse::<NonNegative>().is_err());
        assert_eq!("0".parse::<NonNegative>().unwrap().get(), 0.0);
        assert_eq!(
            "1e9".parse::<Seconds>().unwrap().duration(),
            Duration::from_secs(1_000_000_000)
        );
    }

    #[test]
    fn serde_checks_too() {
        assert!(serde_json::from_str::<Positive>("-5").is_err());
        assert!(serde_json::from_str::<Seconds>("1e30").is_err());
        let p: Positive = serde_json::from_str("2.5").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "2.5");
    }
}
