//! What the boundary says about durable steps, sleeps, waits and events.

use serde::Serialize;

/// What a stored step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// A step the handler ran: its output is stored.
    Step,
    /// A sleep until a time.
    Sleep,
    /// A wait for an event, until a time at the latest.
    Wait,
}

impl StepKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StepKind::Step => "step",
            StepKind::Sleep => "sleep",
            StepKind::Wait => "wait",
        }
    }

    pub(crate) fn parse(s: &str) -> StepKind {
        match s {
            "sleep" => StepKind::Sleep,
            "wait" => StepKind::Wait,
            _ => StepKind::Step,
        }
    }
}

/// One stored step of a job, as `show` and `GET /api/jobs/{id}` list them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Step {
    /// The step's name; a sleep or a wait is named by its place in the run (`@sleep 1`,
    /// `@wait 2`).
    pub name: String,
    /// Its place in the handler's run (0 for the first step, sleep or wait).
    pub position: u32,
    /// A step, a sleep or a wait.
    pub kind: StepKind,
    /// A step's output, or a wait's payload (JSON text; `None` at a wait's timeout). A
    /// JSON document in JSON.
    #[serde(serialize_with = "json_text")]
    pub output: Option<String>,
    /// The event a wait waits for.
    pub event: Option<String>,
    /// The event that ended a wait.
    pub event_id: Option<i64>,
    /// When a sleep or a wait ends at the latest (ms; RFC 3339 in JSON, as every time).
    #[serde(serialize_with = "opt_time")]
    pub wake_at: Option<i64>,
    /// When it began (ms).
    #[serde(serialize_with = "time")]
    pub started_at: i64,
    /// When it ended (ms); `None` while a sleep or a wait goes on.
    #[serde(serialize_with = "opt_time")]
    pub ended_at: Option<i64>,
}

fn json_text<S: serde::Serializer>(text: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    text.as_deref()
        .map(|t| serde_json::from_str::<serde_json::Value>(t).unwrap_or(serde_json::Value::Null))
        .serialize(s)
}

fn time<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    crate::job::Timestamp::from_millis(*ms).serialize(s)
}

fn opt_time<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    ms.map(crate::job::Timestamp::from_millis).serialize(s)
}

impl Step {
    /// The size of its output, in bytes.
    pub fn output_size(&self) -> usize {
        self.output.as_ref().map_or(0, String::len)
    }
}

/// A stored event, as a wait finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventRow {
    pub id: i64,
    /// JSON text, or `None` for an event without a payload.
    pub payload: Option<String>,
}

/// What an emitted event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Emitted {
    /// The stored event's id.
    pub id: i64,
    /// How many waiting jobs it woke.
    pub woken: usize,
}

impl Emitted {
    /// The stored event `id` and the jobs it woke, as an engine answers an emit.
    pub(crate) fn with(
        id: i64,
        woken: Vec<crate::job::JobId>,
    ) -> (Emitted, Vec<crate::job::JobId>) {
        (
            Emitted {
                id,
                woken: woken.len(),
            },
            woken,
        )
    }
}

/// Which stored event a wait takes: the first of `name` for the job's owner emitted no
/// earlier than the job was created, after the event its previous wait for the same name
/// took.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventQuery<'a> {
    pub owner: Option<&'a str>,
    pub name: &'a str,
    pub after_id: i64,
    pub created_from: i64,
}
