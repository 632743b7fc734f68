//! Answers: a status, a content type and a body; errors as `{"error": {code, message}}`.

use serde_json::{Value, json};

use super::MAX_BODY;
use crate::error::Error;

/// An HTTP answer: a status and a JSON body (or text, or nothing).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(super) status: u16,
    pub(super) body: Vec<u8>,
    pub(super) content_type: &'static str,
    pub(super) headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn json(status: u16, value: &impl serde::Serialize) -> Reply {
        Reply {
            status,
            body: serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()),
            content_type: "application/json",
            headers: Vec::new(),
        }
    }

    pub fn ok(value: &impl serde::Serialize) -> Reply {
        Reply::json(200, value)
    }

    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            body: Vec::new(),
            content_type: "application/json",
            headers: Vec::new(),
        }
    }

    pub fn text(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            body: body.into(),
            content_type,
            headers: Vec::new(),
        }
    }

    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Reply {
        Reply::json(
            status,
            &json!({"error": {"code": code, "message": message.into()}}),
        )
    }

    /// The message of an error reply.
    pub fn message(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// An error reply with `prefix` before its message.
    pub fn prefixed(self, prefix: &str) -> Reply {
        let Ok(mut doc) = serde_json::from_slice::<Value>(&self.body) else {
            return self;
        };
        let Some(message) = doc["error"]["message"].as_str() else {
            return self;
        };
        doc["error"]["message"] = Value::String(format!("{prefix}{message}"));
        Reply::json(self.status, &doc)
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

impl From<Error> for Reply {
    fn from(e: Error) -> Reply {
        let (status, code) = match &e {
            Error::NotFound { .. } => (404, "not_found"),
            Error::InvalidTransition { .. } => (409, "invalid_transition"),
            Error::LockLost { .. } => (409, "lock_lost"),
            Error::Duplicate { .. } => (409, "duplicate"),
            Error::BudgetExceeded { .. } => (422, "budget_exceeded"),
            Error::InvalidInput { .. } => (400, "invalid_input"),
            Error::Forbidden { .. } => (403, "forbidden"),
            Error::Busy { .. } => (503, "busy"),
            Error::DiskFull(_) => (507, "disk_full"),
            Error::Pool(_) => (503, "busy"),
            Error::Unavailable { .. } => (503, "unavailable"),
            Error::Timeout { .. } => (504, "timeout"),
            Error::SchemaTooNew { .. }
            | Error::NotJobqDatabase { .. }
            | Error::Open { .. }
            | Error::Corrupt(_)
            | Error::Database(_)
            | Error::Unsupported { .. } => (500, "internal"),
        };
        if status == 500 {
            tracing::error!(error = %e, "jobq: HTTP request failed");
        }
        let reply = Reply::error(status, code, e.to_string());
        if status == 503 {
            reply.with_header("Retry-After", "1")
        } else {
            reply
        }
    }
}

pub(crate) fn unauthorized() -> Reply {
    Reply::error(
        401,
        "unauthorized",
        "send X-Admin-Key: KEY or Authorization: Bearer TOKEN",
    )
    .with_header("WWW-Authenticate", "Bearer")
}

pub(crate) fn method_not_allowed(allowed: &str) -> Reply {
    Reply::error(405, "method_not_allowed", format!("use {allowed}"))
        .with_header("Allow", allowed.to_string())
}

pub(crate) fn too_large() -> Reply {
    Reply::error(
        413,
        "payload_too_large",
        format!("the body is over {MAX_BODY} bytes"),
    )
}

/// A request body as JSON: an empty body is `{}`; anything else must parse (400), with
/// every integer within 64 bits (one past them would turn into an inexact float).
pub(crate) fn json_body(bytes: &[u8]) -> Result<serde_json::Value, Reply> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        crate::json::check_integers("body", text)?;
    }
    serde_json::from_slice(bytes).map_err(|e| {
        Reply::error(
            400,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })
}
