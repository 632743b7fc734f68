//! Timestamps: milliseconds since the Unix epoch, printed as RFC 3339.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::error::{Error, Result};

/// A point in time: milliseconds since the Unix epoch, UTC. Serialized as RFC 3339 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The timestamp `ms` milliseconds after the Unix epoch.
    pub fn from_millis(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// As a `time::OffsetDateTime` in UTC. `time` reaches the years -9999 to 9999: a
    /// timestamp beyond them comes back as the nearest it reaches (jobq stores none: it
    /// refuses times more than 100 years ahead).
    pub fn to_datetime(self) -> time::OffsetDateTime {
        use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};
        OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000).unwrap_or_else(|_| {
            let edge = if self.0 < 0 { Date::MIN } else { Date::MAX };
            let time = if self.0 < 0 {
                Time::MIDNIGHT
            } else {
                Time::MAX
            };
            PrimitiveDateTime::new(edge, time).assume_utc()
        })
    }

    /// RFC 3339 text in UTC with milliseconds, e.g. `2026-11-23T13:01:53.123Z`. Any
    /// timestamp prints as itself: a year past 9999 (or before 0) gets its sign and all its
    /// digits, as ISO 8601 writes expanded years (`+292278994-08-17T07:12:55.807Z`).
    pub fn to_rfc3339(self) -> String {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        let year = if (0..=9999).contains(&year) {
            format!("{year:04}")
        } else {
            format!("{year:+05}")
        };
        format!(
            "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            of_day / 3600,
            of_day % 3600 / 60,
            of_day % 60
        )
    }

    /// Parses RFC 3339 text (any offset).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming `field` when `text` is not RFC 3339.
    pub fn parse_rfc3339(field: &'static str, text: &str) -> Result<Timestamp> {
        let dt = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|e| Error::invalid(field, format!("{text:?} is not an RFC 3339 time: {e}")))?;
        Ok(Timestamp((dt.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01), for any day an
/// `i64` of milliseconds can name (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_rfc3339_with_millis() {
        let t = Timestamp::from_millis(1_700_000_000_123);
        assert_eq!(t.to_rfc3339(), "2023-11-14T22:13:20.123Z");
        for (ms, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
            (253_402_300_800_000, "+10000-01-01T00:00:00.000Z"),
            (i64::MAX, "+292278994-08-17T07:12:55.807Z"),
            (i64::MIN, "-292275055-05-16T16:47:04.192Z"),
        ] {
            assert_eq!(Timestamp::from_millis(ms).to_rfc3339(), text, "{ms}");
        }
        assert_eq!(Timestamp::from_millis(i64::MAX).to_datetime().year(), 9999);
        assert_eq!(Timestamp::from_millis(i64::MIN).to_datetime().year(), -9999);
        // Agrees with the time crate wherever it reaches.
        for ms in [
            -62_135_596_800_000i64,
            -1_000_000_000_000,
            1_234_567_890_123,
            4_102_444_800_000,
        ] {
            let dt = Timestamp::from_millis(ms).to_datetime();
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                dt.year(),
                u8::from(dt.month()),
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second(),
                dt.millisecond()
            );
            assert_eq!(Timestamp::from_millis(ms).to_rfc3339(), expected);
        }
        assert_eq!(
            Timestamp::parse_rfc3339("t", "2023-11-14T22:13:20.123Z").unwrap(),
            t
        );
        assert!(Timestamp::parse_rfc3339("t", "yesterday").is_err());
    }
}
