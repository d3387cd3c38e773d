//! Durations as the configuration and the command line write them: `90s`,
//! `5m`, `1h`, `7d`, `250ms`, or several joined (`1h30m`).

use std::time::Duration;

/// Parses `90s`, `5m`, `1h`, `7d`, `250ms` and sums like `1h30m`.
/// The error names what was wrong so that callers can prefix the key.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration (write e.g. 90s, 5m, 1h, 7d)".into());
    }
    let bytes = s.as_bytes();
    let mut total: u128 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!(
                "`{text}` is not a duration (write e.g. 90s, 5m, 1h, 7d)"
            ));
        }
        let n: u128 = s[start..i]
            .parse()
            .map_err(|_| format!("`{text}`: number too large"))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let millis_per_unit: u128 = match &s[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{text}` lacks a unit (ms, s, m, h or d)")),
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}` (ms, s, m, h or d)"
                ));
            }
        };
        total = total
            .checked_add(n.checked_mul(millis_per_unit).ok_or("duration too large")?)
            .ok_or("duration too large")?;
    }
    let millis = u64::try_from(total).map_err(|_| "duration too large".to_string())?;
    Ok(Duration::from_millis(millis))
}

/// The shortest exact rendering in the same notation (`300s` → `5m`).
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
    }

    #[test]
    fn rejects_with_reason() {
        assert!(parse("").unwrap_err().contains("empty"));
        assert!(parse("5").unwrap_err().contains("lacks a unit"));
        assert!(parse("5y").unwrap_err().contains("unknown unit `y`"));
        assert!(parse("m5").unwrap_err().contains("not a duration"));
        assert!(parse("-5s").unwrap_err().contains("not a duration"));
        assert!(parse("99999999999999999999999d").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for s in ["90s", "5m", "1h", "7d", "250ms"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }
}
