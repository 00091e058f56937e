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

/// A non-negative integer no larger than `max`.
pub fn integer(v: &str, max: u64) -> Result<u64, BadValue> {
    let n: u64 = v.trim().parse().map_err(|_| BadValue(format!("invalid integer value: \"{v}\"")))?;
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
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "us" => 1e-6,
        "ms" => 1e-3,
        "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return Err(BadValue(format!("invalid time unit in \"{v}\""))),
    };
    let secs = n * scale;
    if secs > 1e10 {
        return Err(BadValue(format!("time value too large: \"{v}\"")));
    }
    Ok(Duration::from_micros((secs * 1e6).round() as u64))
}

/// A comma (or space) separated list; empty items dropped.
pub fn list(v: &str) -> Vec<String> {
    v.split([',', ' ', '\t']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// An octal file mode like `0777`.
pub fn octal_mode(v: &str) -> Result<u32, BadValue> {
    u32::from_str_radix(v.trim(), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| BadValue(format!("invalid file mode: \"{v}\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbouncer_spellings() {
        assert_eq!(seconds("15").unwrap(), Duration::from_secs(15));
        assert_eq!(seconds("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(seconds("250ms").unwrap(), Duration::from_millis(250));
        assert!(seconds("-1").is_err());
        assert!(seconds("ten").is_err());
        assert!(seconds("5 parsecs").is_err());
        assert!(boolean("1").unwrap() && !boolean("0").unwrap());
        assert!(boolean("maybe").is_err());
        assert_eq!(integer("20", 100).unwrap(), 20);
        assert!(integer("-3", 100).is_err());
        assert!(integer("101", 100).is_err());
        assert_eq!(list("a, b,,c"), vec!["a", "b", "c"]);
        assert_eq!(octal_mode("0777").unwrap(), 0o777);
        assert!(octal_mode("999").is_err());
    }
}
