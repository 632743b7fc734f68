//! Job ids: UUID v7 text, and the 64-bit row key at their start.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The id of a job: a UUID v7 in its hyphenated text form, so ids sort by creation time.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// Parses a job id, accepting any UUID spelling and normalizing it to lowercase
    /// hyphenated text.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] with field `"id"` when `text` is not a UUID.
    pub fn parse(text: &str) -> Result<JobId> {
        uuid::Uuid::parse_str(text.trim())
            .map(|u| JobId(u.hyphenated().to_string()))
            .map_err(|_| Error::invalid("id", format!("{text:?} is not a job id (a UUID)")))
    }

    /// The smallest id a job created at `ms` (milliseconds since the epoch) can have: ids
    /// (UUID v7) sort by creation time, so every job created at or after `ms` sorts at or
    /// after it, and every one created before, before it.
    pub(crate) fn first_at(ms: i64) -> JobId {
        let ms = ms.clamp(0, (1 << 48) - 1);
        JobId::from_db(format!(
            "{:08x}-{:04x}-7000-8000-000000000000",
            ms >> 16,
            ms & 0xffff
        ))
    }

    pub(crate) fn from_db(text: String) -> JobId {
        JobId(text)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The job's row key: the first 64 bits of the UUID (its 48-bit millisecond timestamp,
    /// version and 12-bit counter), which jobq keeps unique. Ordering keys orders ids.
    pub(crate) fn key(&self) -> i64 {
        key_of(&self.0)
    }
}

/// The row key of a UUID in text: its first 64 bits as a big-endian integer. Text that is
/// not a UUID (which no job has) gets -1, a key no job has either (a UUID v7's first bit is
/// the top of its millisecond timestamp, 0 until the year 10889).
pub(crate) fn key_of(text: &str) -> i64 {
    uuid::Uuid::try_parse(text).map_or(-1, |id| id.as_u64_pair().0 as i64)
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({})", self.0)
    }
}

impl FromStr for JobId {
    type Err = Error;
    fn from_str(s: &str) -> Result<JobId> {
        JobId::parse(s)
    }
}

impl AsRef<str> for JobId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_normalize_and_refuse_garbage() {
        let id = JobId::parse("0192F4A5-8B3C-7D2E-9F10-1234567890AB").unwrap();
        assert_eq!(id.as_str(), "0192f4a5-8b3c-7d2e-9f10-1234567890ab");
        assert!(JobId::parse("not-a-uuid").is_err());
    }
}
