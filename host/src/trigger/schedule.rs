//! The schedule trigger: a cron expression emits a tick event into its
//! pipeline. The last fire time is durable, and each tick's idempotency key
//! is its scheduled time, so a restart neither fires a tick twice nor (under
//! `on_missed = "once"`) silently loses the ticks it slept through.

use crate::engine::{AcceptError, Engine, Incoming};
use serde::Deserialize;
use std::str::FromStr;
use std::time::Duration;

/// What to do about ticks missed while the host was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMissed {
    /// Drop them; the next tick is the first after start-up.
    #[default]
    Skip,
    /// Fire one tick, for the latest missed time, then carry on.
    Once,
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: cron::Schedule,
    offset: chrono::FixedOffset,
    /// The missed-tick policy.
    pub on_missed: OnMissed,
}

/// `tz` as a fixed offset: `UTC`, `Z`, or `+HH:MM` / `-HH:MM`.
fn parse_tz(tz: &str) -> Result<chrono::FixedOffset, String> {
    if tz.eq_ignore_ascii_case("utc") || tz == "Z" {
        return chrono::FixedOffset::east_opt(0).ok_or_else(|| "bad offset".to_string());
    }
    let bad = || {
        format!(
            "tz {tz:?} is not supported; use \"UTC\" or a fixed offset such as \"+02:00\" (named zones with daylight saving are not supported)"
        )
    };
    let (sign, rest) = match tz.as_bytes().first() {
        Some(b'+') => (1, &tz[1..]),
        Some(b'-') => (-1, &tz[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || m > 59 {
        return Err(bad());
    }
    chrono::FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(bad)
}

impl Schedule {
    /// Parse `cron` (seconds first: `sec min hour day month weekday [year]`) in `tz`.
    pub fn parse(cron: &str, tz: &str, on_missed: OnMissed) -> Result<Schedule, String> {
        let cron = cron::Schedule::from_str(cron).map_err(|e| {
            format!(
                "cron {cron:?} is not valid ({e}); write six fields, seconds first, e.g. \"0 */5 * * * *\""
            )
        })?;
        Ok(Schedule {
            cron,
            offset: parse_tz(tz)?,
            on_missed,
        })
    }

    /// The first tick strictly after `ms` (ms since the Unix epoch).
    pub fn next_after(&self, ms: u64) -> Option<u64> {
        let at = chrono::DateTime::from_timestamp_millis(ms as i64)?.with_timezone(&self.offset);
        self.cron
            .after(&at)
            .next()
            .map(|t| t.timestamp_millis() as u64)
    }

    /// The latest tick in `(after, upto]`, if any: one step back from
    /// `upto`, however long the gap.
    fn latest_in(&self, after: u64, upto: u64) -> Option<u64> {
        let end =
            chrono::DateTime::from_timestamp_millis(upto as i64 + 1)?.with_timezone(&self.offset);
        self.cron
            .after(&end)
            .next_back()
            .map(|t| t.timestamp_millis() as u64)
            .filter(|t| *t > after)
    }

    /// What to do at start-up, given the last fire time and now: the tick to
    /// fire at once (a missed one, under `once`), and the time from which the
    /// next regular tick is counted.
    pub fn plan(&self, last_fire: Option<u64>, now: u64) -> (Option<u64>, u64) {
        let Some(last) = last_fire else {
            // First start: nothing was missed.
            return (None, now);
        };
        match (self.on_missed, self.latest_in(last, now)) {
            (OnMissed::Once, Some(missed)) => (Some(missed), missed.max(now)),
            _ => (None, now.max(last)),
        }
    }
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Accept the tick scheduled at `at`; retried each second while the pipeline
/// refuses (queue full, breaker open, store failing).
async fn fire(engine: &Engine, pipeline: &str, at: u64, late: bool) {
    let key = format!("schedule:{pipeline}:{at}");
    let body = serde_json::json!({
        "id": key,
        "pipeline": pipeline,
        "scheduled_at": rfc3339(at),
        "scheduled_at_ms": at,
        "missed": late,
    });
    loop {
        let incoming = Incoming {
            body: body.to_string().into_bytes(),
            content_type: "application/json".into(),
            idempotency_header: Some(key.clone()),
            correlation_id: None,
            headers: vec![(crate::store::TRIGGER_HEADER.into(), "schedule".into())],
        };
        match engine.accept(pipeline, incoming).await {
            Ok(_) => break,
            Err(e @ (AcceptError::Backpressure { .. } | AcceptError::Store(_))) => {
                tracing::warn!(
                    pipeline,
                    "schedule tick {} not accepted yet: {e}",
                    rfc3339(at)
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                tracing::error!(pipeline, "schedule tick {} refused: {e}", rfc3339(at));
                break;
            }
        }
    }
    if let Err(e) = engine.store().set_schedule_last(pipeline, at).await {
        tracing::error!(
            pipeline,
            "could not record the schedule's last fire time: {e}"
        );
    }
}

/// Run one pipeline's schedule until the engine stops.
pub async fn run(engine: Engine, pipeline: String, schedule: Schedule) {
    let mut stop = engine.stopping();
    let last = engine.store().schedule_last(&pipeline);
    let (missed, mut from) = schedule.plan(last, crate::store::now_ms());
    if last.is_none() {
        let _ = engine.store().set_schedule_last(&pipeline, from).await;
    }
    if let Some(at) = missed {
        tracing::info!(
            pipeline,
            "firing the tick missed at {} (on_missed = once)",
            rfc3339(at)
        );
        fire(&engine, &pipeline, at, true).await;
    }
    loop {
        let Some(next) = schedule.next_after(from) else {
            tracing::info!(pipeline, "the schedule has no more ticks");
            return;
        };
        let wait = Duration::from_millis(next.saturating_sub(crate::store::now_ms()));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        fire(&engine, &pipeline, next, false).await;
        from = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;
    // 2023-11-14T22:13:20Z
    const T0: u64 = 1_700_000_000_000;

    fn every_5_min(on_missed: OnMissed) -> Schedule {
        Schedule::parse("0 */5 * * * *", "UTC", on_missed).unwrap()
    }

    #[test]
    fn ticks_follow_the_cron_in_its_zone() {
        let s = every_5_min(OnMissed::Skip);
        assert_eq!(s.next_after(T0), Some(T0 + 100_000), "22:15:00");
        assert_eq!(s.next_after(T0 + 100_000), Some(T0 + 100_000 + 5 * MIN));
        let daily = Schedule::parse("0 0 9 * * *", "+02:00", OnMissed::Skip).unwrap();
        let next = daily.next_after(T0).unwrap();
        assert_eq!(
            next % (24 * 60 * MIN),
            7 * 60 * MIN,
            "09:00 at +02:00 is 07:00 UTC"
        );
        assert!(Schedule::parse("0 */5 * * *", "UTC", OnMissed::Skip).is_err());
        let err = Schedule::parse("0 * * * * *", "Europe/Paris", OnMissed::Skip).unwrap_err();
        assert!(err.contains("fixed offset"), "{err}");
    }

    #[test]
    fn downtime_is_skipped_or_caught_up_once() {
        let last = T0 + 100_000; // fired at 22:15:00
        let back = last + 32 * MIN; // down until 22:47:00: missed 20, 25, 30, 35, 40, 45
        let (fire, from) = every_5_min(OnMissed::Skip).plan(Some(last), back);
        assert_eq!(
            (fire, from),
            (None, back),
            "skip: nothing now, next at 22:50"
        );
        let (fire, from) = every_5_min(OnMissed::Once).plan(Some(last), back);
        assert_eq!(fire, Some(last + 30 * MIN), "once: the 22:45 tick, once");
        assert_eq!(
            every_5_min(OnMissed::Once).next_after(from),
            Some(last + 35 * MIN)
        );
        // Back before the next tick was due: nothing was missed either way.
        let (fire, _) = every_5_min(OnMissed::Once).plan(Some(last), last + 2 * MIN);
        assert_eq!(fire, None);
        // A restart right after a fire does not fire it again.
        let (fire, from) = every_5_min(OnMissed::Once).plan(Some(last), last);
        assert_eq!(fire, None);
        assert_eq!(
            every_5_min(OnMissed::Once).next_after(from),
            Some(last + 5 * MIN)
        );
        // First start: nothing counts as missed.
        assert_eq!(every_5_min(OnMissed::Once).plan(None, back), (None, back));
    }
}
