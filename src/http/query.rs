//! Query strings and path segments, percent-decoded.

use super::Reply;

/// Query parameters, percent-decoded.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: &str) -> Query {
        Query(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (decode(k, true), decode(v, true))
                })
                .collect(),
        )
    }

    /// Refuses a parameter not in `known`, naming it.
    pub(crate) fn only(&self, known: &[&str]) -> Result<(), Reply> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some((unknown, _)) => Err(Reply::error(
                400,
                "invalid_input",
                if known.is_empty() {
                    format!("unknown query parameter {unknown:?}: this route takes none")
                } else {
                    format!(
                        "unknown query parameter {unknown:?} (this route takes {})",
                        known.join(", ")
                    )
                },
            )),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn number(&self, name: &str) -> Result<Option<usize>, Reply> {
        self.get(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    Reply::error(
                        400,
                        "invalid_input",
                        format!("query `{name}` must be a whole number, not {v:?}"),
                    )
                })
            })
            .transpose()
    }

    pub(crate) fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1" | "yes"))
    }
}

/// Percent-decoding of a query component (where `+` is a space) or a path segment (where it
/// is itself); bad escapes are kept as they are.
pub(crate) fn decode(s: &str, plus_is_space: bool) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi * 16 + lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_are_percent_decoded() {
        assert_eq!(decode("a%20b+c", true), "a b c");
        assert_eq!(decode("a%20b+c", false), "a b+c");
        assert_eq!(decode("%E2%9C%93", true), "✓");
        assert_eq!(decode("100%", true), "100%");
        assert_eq!(decode("%zz", true), "%zz");
        assert_eq!(decode("%4", true), "%4");
        let q = Query::parse("status=failed&limit=5&stats=true&empty=");
        assert_eq!(
            (q.get("status"), q.get("empty"), q.flag("stats")),
            (Some("failed"), None, true)
        );
    }
}
