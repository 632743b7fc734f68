//! Strict reading of JSON request bodies: an object with known fields only, each of the
//! right type, every refusal naming the field.

use serde_json::{Map, Value};

use super::Reply;

pub(crate) struct Body<'a> {
    map: &'a Map<String, Value>,
}

fn bad(message: String) -> Reply {
    Reply::error(400, "invalid_input", message)
}

impl<'a> Body<'a> {
    /// The body as an object whose fields are all among `allowed`.
    pub fn new(value: &'a Value, allowed: &[&str]) -> Result<Body<'a>, Reply> {
        let map = value
            .as_object()
            .ok_or_else(|| bad("the body must be a JSON object".into()))?;
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(bad(format!(
                "unknown field `{unknown}` (expected one of: {})",
                allowed.join(", ")
            )));
        }
        Ok(Body { map })
    }

    /// A field that may be absent or null (null counts as absent).
    pub fn value(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    /// A field as given, null included (for data such as a job's input).
    pub fn given(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field)
    }

    pub fn string(&self, field: &str) -> Result<Option<&'a str>, Reply> {
        match self.value(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(bad(format!(
                "field `{field}` must be a string, not {}",
                kind(other)
            ))),
        }
    }

    pub fn boolean(&self, field: &str) -> Result<Option<bool>, Reply> {
        match self.value(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(bad(format!(
                "field `{field}` must be true or false, not {}",
                kind(other)
            ))),
        }
    }

    pub fn required_string(&self, field: &str) -> Result<&'a str, Reply> {
        self.string(field)?
            .ok_or_else(|| bad(format!("field `{field}` is required")))
    }

    pub fn integer(&self, field: &str) -> Result<Option<i64>, Reply> {
        match self.value(field) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| bad(format!("field `{field}` must be a whole number, not {n}"))),
            Some(other) => Err(bad(format!(
                "field `{field}` must be a whole number, not {}",
                kind(other)
            ))),
        }
    }

    pub fn integer_in<T: TryFrom<i64>>(&self, field: &str, what: &str) -> Result<Option<T>, Reply> {
        match self.integer(field)? {
            None => Ok(None),
            Some(n) => T::try_from(n)
                .map(Some)
                .map_err(|_| bad(format!("field `{field}` must be {what}, not {n}"))),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
