//! JSON as jobq stores it: any JSON, except integers that do not fit in 64 bits.
//!
//! serde_json reads an integer past `u64` as a float, and SQLite's JSON functions read one
//! past `i64` as a float: either way `12345678901234567890123` would silently come back as
//! `1.2345678901234568e22`. jobq refuses such a number instead, naming where it is.

use serde_json::Value;

use crate::error::{Error, Result};

/// Parses JSON text the way jobq stores it: any valid JSON whose integer literals all fit
/// in a signed 64-bit integer.
///
/// # Errors
///
/// [`Error::InvalidInput`] naming `field` when the text is not JSON, or holds an integer
/// outside `i64` (which would otherwise turn into an inexact float).
///
/// # Examples
///
/// ```
/// assert_eq!(jobq::parse_json("input", r#"{"n": 42}"#)?["n"], 42);
/// assert!(jobq::parse_json("input", r#"{"n": 99999999999999999999}"#).is_err());
/// assert!(jobq::parse_json("input", r#"{"n": 1e30}"#).is_ok()); // a float stays a float
/// # Ok::<(), jobq::Error>(())
/// ```
pub fn parse_json(field: &'static str, text: &str) -> Result<Value> {
    check_integers(field, text)?;
    serde_json::from_str(text).map_err(|e| Error::invalid(field, format!("not valid JSON: {e}")))
}

/// Refuses JSON text holding an integer literal (digits, with no fraction or exponent)
/// outside `i64`. Text that is not JSON passes here: parsing it says what is wrong.
pub(crate) fn check_integers(field: &'static str, text: &str) -> Result<()> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let number = &text[start..i];
                let integer = !number.contains(['.', 'e', 'E']);
                if integer && number.parse::<i64>().is_err() && number.len() > 1 {
                    return Err(Error::invalid(
                        field,
                        format!(
                            "the integer {number} does not fit in 64 bits (-9223372036854775808 to 9223372036854775807); send it as a string"
                        ),
                    ));
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_past_64_bits_are_refused_wherever_they_are() {
        for text in [
            "9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            r#"{"a": [1, {"b": 123456789012345678901234567890}]}"#,
            r#"["x", -99999999999999999999]"#,
        ] {
            let err = check_integers("input", text).unwrap_err();
            assert!(
                err.to_string().contains("does not fit in 64 bits"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn everything_else_passes() {
        for text in [
            "9223372036854775807",
            "-9223372036854775808",
            r#"{"a": 1.5e300, "b": -0.0, "c": 1E400, "d": 12.00000000000000000001}"#,
            r#"{"s": "99999999999999999999 in a string", "e": "\"99999999999999999999"}"#,
            r#"{"99999999999999999999": true}"#,
            "[]",
            "-",
            "",
        ] {
            assert!(check_integers("input", text).is_ok(), "{text}");
        }
    }
}
