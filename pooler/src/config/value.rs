//! Typed readers for parameter values: booleans, integers, times, lists and enums, each with
//! PgBouncer's accepted spellings. Errors are reasons ([`BadValue`]); the caller adds file
//! and line.

use std::time::Duration;

use super::BadValue;

/// A boolean: 0/1 as PgBouncer writes them, and the usual words.
pub fn boolean(v: &str) -> Result<bool, BadValue> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "on" | "true" | "yes" => Ok(true),
        "0" | "off" | "false" | "no" | "" => Ok(false),
        _ => Err(BadValue(format!("invalid boolean value: \"{v}\""))),
    }
}

/// A non-negative integer no larger than `max`, read as PgBouncer reads it (C's `strtol` with
/// base 0): decimal, `0x` hexadecimal, a leading `0` octal (`010` is 8), a `+` sign, blanks
/// before it but nothing after.
pub fn integer(v: &str, max: u64) -> Result<u64, BadValue> {
    let bad = || BadValue(format!("invalid integer value: \"{v}\""));
    let t = v.trim_start();
    let t = t.strip_prefix('+').unwrap_or(t);
    let (radix, digits) = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => (16, hex),
        None if t.len() > 1 && t.starts_with('0') => (8, &t[1..]),
        None => (10, t),
    };
    // from_str_radix takes a sign of its own; strtol would not take a second one.
    if digits.starts_with(['+', '-']) {
        return Err(bad());
    }
    let n = u64::from_str_radix(digits, radix).map_err(|_| bad())?;
    if n > max {
        return Err(BadValue(format!("value {n} out of range (max {max})")));
    }
    Ok(n)
}

/// A time in seconds (fractions allowed, as PgBouncer stores µs), or with a unit suffix
/// (`us`, `ms`, `s`, `min`, `h`, `d`) as a convenience beyond PgBouncer.
pub fn seconds(v: &str) -> Result<Duration, BadValue> {
    let t = v.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.trim().parse().map_err(|_| BadValue(format!("invalid time value: \"{v}\"")))?;
    if !n.is_finite() || n < 0.0 {
        return Err(BadValue(format!("invalid time value: \"{v}\"")));
    }
    let micros_per = match unit.trim() {
        "" | "s" => 1e6,
        "us" => 1.0,
        "ms" => 1e3,
        "min" => 6e7,
        "h" => 3.6e9,
        "d" => 8.64e10,
        _ => return Err(BadValue(format!("invalid time unit in \"{v}\""))),
    };
    let micros = n * micros_per;
    if micros > 1e16 {
        return Err(BadValue(format!("time value too large: \"{v}\"")));
    }
    // Cut to the microsecond, as PgBouncer stores `(usec_t)(USEC * v)` (0.00397 is 3969 us).
    Ok(Duration::from_micros(micros as u64))
}

/// A non-negative decimal integer no larger than `max` (the numbers of a `[databases]` or
/// `[users]` entry, which PgBouncer reads with `atoi`: `010` is 10 there).
pub fn decimal(v: &str, max: u64) -> Result<u64, BadValue> {
    let n: u64 = v.trim().parse().map_err(|_| BadValue(format!("invalid integer value: \"{v}\"")))?;
    if n > max {
        return Err(BadValue(format!("value {n} out of range (max {max})")));
    }
    Ok(n)
}

/// A time as SHOW CONFIG prints it: seconds in C's `%g` (six significant digits, no trailing
/// zeros, an exponent below 1e-4 and from 1e6 up), as PgBouncer prints its times.
pub fn seconds_shown(d: Duration) -> String {
    let x = d.as_secs_f64();
    if x == 0.0 {
        return "0".to_owned();
    }
    // The exponent after rounding to six digits decides the style, as in C.
    let sci = format!("{x:.5e}");
    let (mantissa, exp) = sci.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("exponent");
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s.to_owned()
        }
    };
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{}e{sign}{:02}", trim(mantissa), exp.abs());
    }
    trim(&format!("{x:.*}", (5 - exp) as usize))
}

/// A comma (or space) separated list; empty items dropped.
pub fn list(v: &str) -> Vec<String> {
    v.split([',', ' ', '\t']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbouncer_spellings() {
        assert_eq!(seconds("15").unwrap(), Duration::from_secs(15));
        assert_eq!(seconds("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(seconds("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(seconds("0.00397").unwrap(), Duration::from_micros(3969), "cut, as PgBouncer");
        assert_eq!(seconds_shown(seconds("0.00397").unwrap()), "0.003969");
        assert_eq!(seconds("2min").unwrap(), Duration::from_secs(120));
        assert!(seconds("-1").is_err());
        assert!(seconds("ten").is_err());
        assert!(seconds("5 parsecs").is_err());
        assert!(boolean("1").unwrap() && !boolean("0").unwrap());
        assert!(boolean("maybe").is_err());
        assert_eq!(integer("20", 100).unwrap(), 20);
        assert!(integer("-3", 100).is_err());
        assert!(integer("101", 100).is_err());
        assert_eq!(decimal("010", 100).unwrap(), 10, "atoi in [databases] and [users]");
        // As strtol with base 0.
        assert_eq!(integer("010", 100).unwrap(), 8);
        assert_eq!(integer("0x1f", 100).unwrap(), 31);
        assert_eq!(integer("+5", 100).unwrap(), 5);
        assert_eq!(integer("  5", 100).unwrap(), 5);
        assert_eq!(integer("0", 100).unwrap(), 0);
        for bad in ["5 ", "09", "0x", "+-5", "--5", "5x", "", "1e3"] {
            assert!(integer(bad, 100).is_err(), "{bad:?}");
        }
        assert_eq!(list("a, b,,c"), vec!["a", "b", "c"]);
    }

    #[test]
    fn times_are_shown_as_c_prints_them_with_percent_g() {
        let shown = |secs: f64| seconds_shown(Duration::from_secs_f64(secs));
        assert_eq!(shown(0.0), "0");
        assert_eq!(shown(90.0), "90");
        assert_eq!(shown(3600.5), "3600.5");
        assert_eq!(shown(0.25), "0.25");
        assert_eq!(shown(120.0), "120");
        assert_eq!(shown(999_999.0), "999999");
        assert_eq!(shown(1_000_000.0), "1e+06");
        assert_eq!(shown(1_234_567.0), "1.23457e+06");
        assert_eq!(shown(0.00005), "5e-05");
        assert_eq!(shown(0.0001), "0.0001");
        assert_eq!(shown(86_400.0 * 365.0), "3.1536e+07");
    }
}
