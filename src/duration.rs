//! Durations as people write them: `500ms`, `30s`, `5m`, `2h`, `7d`.

use std::time::Duration;

use crate::error::{Error, Result};

/// The longest duration jobq takes anywhere (a delay, a timeout, a window): 100 years.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parses a duration written as a whole number and a unit: `ms`, `s`, `m`, `h` or `d`
/// (`500ms`, `30s`, `5m`, `2h`, `7d`). Whitespace around it is ignored.
///
/// # Errors
///
/// [`Error::InvalidInput`] with field `"duration"` for anything else: a missing or unknown
/// unit, a negative or fractional number, or more than 100 years.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// assert_eq!(jobq::parse_duration("90s")?, Duration::from_secs(90));
/// assert_eq!(jobq::parse_duration("500ms")?, Duration::from_millis(500));
/// assert!(jobq::parse_duration("5 minutes").is_err());
/// # Ok::<(), jobq::Error>(())
/// ```
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = |why: &str| {
        Error::invalid(
            "duration",
            format!("{text:?} {why} (write it like 500ms, 30s, 5m, 2h or 7d)"),
        )
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| bad("has no unit"))?;
    let (number, unit) = t.split_at(split);
    if number.is_empty() {
        return Err(bad("does not start with a whole number"));
    }
    let n: u64 = number.parse().map_err(|_| bad("is too large"))?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad("has an unknown unit")),
    };
    let ms = n
        .checked_mul(ms_per_unit)
        .ok_or_else(|| bad("is too large"))?;
    if ms > MAX_DURATION.as_millis() as u64 {
        return Err(bad("is longer than 100 years"));
    }
    Ok(Duration::from_millis(ms))
}

/// Writes a duration the way [`parse_duration`] reads it, in the largest whole unit.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_units_parse() {
        for (text, ms) in [
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("7d", 604_800_000),
            (" 0s ", 0),
        ] {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_millis(ms),
                "{text}"
            );
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for text in [
            "",
            "s",
            "5",
            "5x",
            "-5s",
            "1.5s",
            "5 s",
            "5sec",
            "99999999999999999999s",
            "40000d",
            "5s5s",
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidInput {
                        field: "duration",
                        ..
                    }
                ),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn formatting_round_trips() {
        for text in ["500ms", "30s", "5m", "2h", "7d", "90s", "1500ms"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
