//! When a schedule's slots fall: a cron expression in a time zone, or a fixed interval
//! from the schedule's creation; and which missed slots a firing takes.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::error::{Error, Result};

use super::{CatchUp, MAX_CATCH_UP, MAX_CRON_LEN, MAX_TIMEZONE_LEN, ON_TIME};

/// A rule ready to compute slots with.
pub(super) enum Slots {
    Cron(Box<Cron>, Tz),
    Every(i64),
}

fn parse_cron(expression: &str) -> std::result::Result<Cron, croner::errors::CronError> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
}

/// The fields of a cron expression: name, and what it takes.
const CRON_FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT, 0 and 7 both Sunday"),
];

const CRON_ALIASES: &str = "@yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly";

/// Why `expression` is not a cron expression, in words: which field is wrong and what it
/// takes.
fn explain_cron(expression: &str, error: &croner::errors::CronError) -> String {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    if fields.is_empty() {
        return "the expression is empty: give 5 fields (minute hour day-of-month month \
                day-of-week), e.g. \"0 2 * * *\" for 02:00 every day, or an alias such as @daily"
            .to_string();
    }
    if fields[0].starts_with('@') {
        return format!(
            "{:?} is not an alias this accepts ({CRON_ALIASES})",
            fields[0]
        );
    }
    if fields.len() != 5 {
        let seconds = if fields.len() == 6 {
            " (seconds are not supported: drop the first field)"
        } else {
            ""
        };
        return format!(
            "it has {} field{}, and a cron expression has 5: minute hour day-of-month month \
             day-of-week{seconds}",
            fields.len(),
            if fields.len() == 1 { "" } else { "s" }
        );
    }
    for (i, (name, range)) in CRON_FIELDS.iter().enumerate() {
        let mut alone = ["*"; 5];
        alone[i] = fields[i];
        if let Err(e) = parse_cron(&alone.join(" ")) {
            let why = match &e {
                croner::errors::CronError::ComponentError(m)
                | croner::errors::CronError::IllegalCharacters(m)
                | croner::errors::CronError::InvalidPattern(m) => {
                    m.trim_end_matches('.').to_string()
                }
                other => other.to_string(),
            };
            return format!(
                "the {name} field {:?} is not valid ({}): it takes {range}, as numbers, ranges \
                 (a-b), lists (a,b), steps (*/n) or *",
                fields[i],
                why.to_lowercase()
            );
        }
    }
    error.to_string()
}

impl Slots {
    pub(super) fn of(cron: Option<&str>, every_ms: Option<i64>, timezone: &str) -> Result<Slots> {
        if timezone.len() > MAX_TIMEZONE_LEN {
            return Err(Error::invalid(
                "timezone",
                format!("a time zone name is at most {MAX_TIMEZONE_LEN} characters"),
            ));
        }
        let tz: Tz = timezone.parse().map_err(|_| {
            Error::invalid(
                "timezone",
                format!("unknown time zone {timezone:?} (an IANA name such as Europe/Paris)"),
            )
        })?;
        match (cron, every_ms) {
            (Some(expression), _) => {
                if expression.len() > MAX_CRON_LEN {
                    return Err(Error::invalid(
                        "cron",
                        format!("a cron expression is at most {MAX_CRON_LEN} characters"),
                    ));
                }
                let parsed = parse_cron(expression).map_err(|e| {
                    Error::invalid(
                        "cron",
                        format!(
                            "{expression:?} is not a cron expression: {}",
                            explain_cron(expression, &e)
                        ),
                    )
                })?;
                Ok(Slots::Cron(Box::new(parsed), tz))
            }
            (None, Some(ms)) if ms > 0 => Ok(Slots::Every(ms)),
            _ => Err(Error::invalid(
                "rule",
                "a schedule needs a cron expression or a period",
            )),
        }
    }

    fn at(ms: i64, tz: Tz) -> Option<DateTime<Tz>> {
        Utc.timestamp_millis_opt(ms)
            .single()
            .map(|t| t.with_timezone(&tz))
    }

    /// The first slot after `ms` (or at it, when `inclusive`); for an interval, counted
    /// from `anchor`.
    pub(super) fn next(&self, ms: i64, inclusive: bool, anchor: i64) -> Option<i64> {
        match self {
            Slots::Cron(cron, tz) => cron
                .find_next_occurrence(&Slots::at(ms, *tz)?, inclusive)
                .ok()
                .map(|t| t.timestamp_millis()),
            Slots::Every(period) => {
                let steps = (ms - anchor).div_euclid(*period);
                let slot = anchor + steps * period;
                Some(if inclusive && slot == ms {
                    slot
                } else {
                    slot + period
                })
            }
        }
    }

    /// The last slot at `ms` or before.
    pub(super) fn previous(&self, ms: i64, anchor: i64) -> Option<i64> {
        match self {
            Slots::Cron(cron, tz) => cron
                .find_previous_occurrence(&Slots::at(ms, *tz)?, true)
                .ok()
                .map(|t| t.timestamp_millis()),
            Slots::Every(period) => Some(anchor + (ms - anchor).div_euclid(*period) * period),
        }
    }
}

/// The slots due at `now` of a schedule whose next slot is `next` that the catch-up rule
/// fires (oldest first), and its next slot after them.
pub(super) fn due(
    slots: &Slots,
    next: i64,
    now: i64,
    anchor: i64,
    catch_up: CatchUp,
) -> (Vec<i64>, i64) {
    let Some(last) = slots.previous(now, anchor).filter(|l| *l >= next) else {
        return (Vec::new(), next);
    };
    let following = slots.next(now, false, anchor).unwrap_or(i64::MAX);
    let fired = match catch_up {
        CatchUp::One => vec![last],
        CatchUp::None => {
            let period = slots
                .next(last, false, anchor)
                .map_or(ON_TIME, |n| n - last);
            if now - last <= ON_TIME.min(period / 2).max(1000) {
                vec![last]
            } else {
                Vec::new()
            }
        }
        CatchUp::All => {
            let mut all = vec![last];
            let mut at = last;
            while all.len() < MAX_CATCH_UP {
                match slots.previous(at - 1, anchor) {
                    Some(p) if p >= next => {
                        all.push(p);
                        at = p;
                    }
                    _ => break,
                }
            }
            all.reverse();
            all
        }
    };
    (fired, following)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn catch_up_rules_pick_the_missed_slots() {
        let every = Slots::Every(MIN);
        // Next slot at minute 10; now at minute 15 and a half: slots 10..=15 are due.
        let (one, next) = due(&every, 10 * MIN, 15 * MIN + MIN / 2, 0, CatchUp::One);
        assert_eq!((one, next), (vec![15 * MIN], 16 * MIN));
        let (all, _) = due(&every, 10 * MIN, 15 * MIN + MIN / 2, 0, CatchUp::All);
        assert_eq!(all, (10..=15).map(|m| m * MIN).collect::<Vec<_>>());
        // `none`: the current slot fires when on time, a missed one does not.
        let (none, next) = due(&every, 10 * MIN, 15 * MIN + 1000, 0, CatchUp::None);
        assert_eq!((none, next), (vec![15 * MIN], 16 * MIN));
        let (none, _) = due(&every, 10 * MIN, 15 * MIN + MIN / 2 + 1, 0, CatchUp::None);
        assert!(none.is_empty());
        // Not due yet.
        let (nothing, next) = due(&every, 10 * MIN, 9 * MIN, 0, CatchUp::All);
        assert_eq!((nothing, next), (vec![], 10 * MIN));
        // `all` is bounded.
        let (all, _) = due(&every, 0, 5000 * MIN, 0, CatchUp::All);
        assert_eq!(all.len(), MAX_CATCH_UP);
        assert_eq!(all.last(), Some(&(5000 * MIN)));
    }

    #[test]
    fn cron_slots_follow_the_time_zone() {
        let daily = Slots::of(Some("0 2 * * *"), None, "Europe/Paris").unwrap();
        // 2026-01-10T00:00:00Z: 02:00 in Paris (UTC+1) is 01:00Z.
        let t0 = 1_768_003_200_000;
        assert_eq!(daily.next(t0, false, 0), Some(t0 + 3_600_000));
        let hourly = Slots::of(Some("@hourly"), None, "UTC").unwrap();
        assert_eq!(hourly.next(t0 + 1, false, 0), Some(t0 + 3_600_000));
        assert_eq!(hourly.previous(t0 + 1, 0), Some(t0));
        assert!(Slots::of(Some("61 * * * *"), None, "UTC").is_err());
        assert!(
            Slots::of(Some("0 0 * * * *"), None, "UTC").is_err(),
            "5 fields"
        );
        assert!(Slots::of(Some("* * * * *"), None, "Mars/Olympus").is_err());
    }
}
