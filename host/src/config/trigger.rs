//! `trigger = { … }`: how events enter a pipeline, and the values of each
//! trigger's config, parsed once: signature presets, cron schedules with
//! their zone and missed-tick policy.

use super::queue::QueueConfig;
use super::values::{empty_object, valid_credential_name};
use serde::Deserialize;
use std::str::FromStr;

/// `trigger = { … }`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// Webhooks at `POST /hooks/{name}` (always on; this adds verification).
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// A tick event on a cron schedule (with `poll`: poll on the ticks instead).
    #[serde(default)]
    pub schedule: Option<ScheduleConfig>,
    /// A source plugin polled for new items.
    #[serde(default)]
    pub poll: Option<PollConfig>,
    /// Messages consumed from a broker's stream, queue or subject.
    #[serde(default)]
    pub queue: Option<QueueConfig>,
}

/// `poll = { plugin = "http-poll", config = { … }, every_ms = 30000 }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// A plugin of the `source` world.
    pub plugin: String,
    /// Its configuration, handed to it as JSON.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// Pause between polls that found nothing more, in ms (default 60000).
    #[serde(default = "default_every_ms")]
    pub every_ms: u64,
    /// Longest back-off after failed polls, in ms (default 300000).
    #[serde(default = "default_poll_backoff_ms")]
    pub max_backoff_ms: u64,
}

fn default_every_ms() -> u64 {
    60_000
}
fn default_poll_backoff_ms() -> u64 {
    300_000
}

/// `schedule = { cron = "0 */5 * * * *", tz = "UTC", on_missed = "skip" }`,
/// parsed once as it is read; a bad value is reported by
/// [`Config::validate`](super::Config::validate) with where it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "ScheduleToml")]
pub struct ScheduleConfig {
    /// Six or seven fields, seconds first.
    pub cron: String,
    /// `UTC` (default), a fixed offset such as `+02:00`, or an IANA zone such
    /// as `Europe/Paris` (daylight saving followed; see [`Schedule::next_after`]).
    pub tz: String,
    /// `skip` (default) or `once`: what happens to ticks missed while down.
    pub on_missed: OnMissed,
    parsed: Result<Schedule, String>,
}

/// `schedule = { … }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleToml {
    cron: String,
    #[serde(default = "default_tz")]
    tz: String,
    #[serde(default)]
    on_missed: OnMissed,
}

fn default_tz() -> String {
    "UTC".into()
}

impl From<ScheduleToml> for ScheduleConfig {
    fn from(t: ScheduleToml) -> Self {
        ScheduleConfig {
            parsed: Schedule::parse(&t.cron, &t.tz, t.on_missed),
            cron: t.cron,
            tz: t.tz,
            on_missed: t.on_missed,
        }
    }
}

impl ScheduleConfig {
    /// The parsed schedule (an error only in a config that did not validate).
    pub fn schedule(&self) -> Result<&Schedule, &str> {
        self.parsed.as_ref().map_err(String::as_str)
    }
}

/// `webhook = { verify = "…", secret = "NAME", tolerance_s = 300, header = "…" }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Signature scheme: `standard-webhooks`, `github`, `stripe`, `slack`, `hmac-sha256`.
    pub verify: Preset,
    /// Credential holding the signing secret.
    pub secret: String,
    /// The secret being rotated out: deliveries signed with it still pass.
    #[serde(default)]
    pub previous_secret: Option<String>,
    /// Largest age of a signed timestamp, in seconds (default 300).
    #[serde(default = "default_tolerance_s")]
    pub tolerance_s: u64,
    /// Header of the `hmac-sha256` scheme (default `x-signature`).
    #[serde(default)]
    pub header: Option<String>,
}

fn default_tolerance_s() -> u64 {
    300
}

impl WebhookConfig {
    /// The credential names it needs.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.secret.as_str()).chain(self.previous_secret.as_deref())
    }
}

/// Which provider's scheme a pipeline's webhooks are signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`
    /// over `id.timestamp.body`; secrets are `whsec_<base64>`.
    StandardWebhooks,
    /// `X-Hub-Signature-256: sha256=<hex>` over the body; `X-GitHub-Delivery` is the id.
    Github,
    /// `Stripe-Signature: t=<ts>,v1=<hex>[,v1=…]` over `t.body`.
    Stripe,
    /// `X-Slack-Signature: v0=<hex>` over `v0:<X-Slack-Request-Timestamp>:body`.
    Slack,
    /// `<header>: sha256=<hex>` (or bare hex) over the body; no timestamp.
    HmacSha256,
}

impl Preset {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::StandardWebhooks => "standard-webhooks",
            Preset::Github => "github",
            Preset::Stripe => "stripe",
            Preset::Slack => "slack",
            Preset::HmacSha256 => "hmac-sha256",
        }
    }

    /// Request headers a verified delivery keeps as event metadata (what
    /// kind of delivery it is, and its retries), in lower case.
    pub fn kept_headers(self) -> &'static [&'static str] {
        match self {
            Preset::Github => &["x-github-event", "x-github-delivery", "x-github-hook-id"],
            Preset::Slack => &["x-slack-retry-num", "x-slack-retry-reason"],
            Preset::StandardWebhooks => &["webhook-id"],
            Preset::Stripe | Preset::HmacSha256 => &[],
        }
    }

    /// Whether it takes form-encoded bodies, and how they become the event:
    /// Slack's fields as one object, GitHub's `payload` field as it is.
    pub fn takes_forms(self) -> bool {
        matches!(self, Preset::Slack | Preset::Github)
    }
}

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
    zone: Zone,
    /// The missed-tick policy.
    pub on_missed: OnMissed,
}

/// The zone a schedule's times are read in.
#[derive(Debug, Clone, Copy)]
enum Zone {
    /// A fixed offset from UTC (`UTC`, `+02:00`).
    Fixed(chrono::FixedOffset),
    /// An IANA zone (`Europe/Paris`), daylight saving included.
    Named(chrono_tz::Tz),
}

/// `tz` as a zone: `UTC`, `Z`, `+HH:MM` / `-HH:MM`, or an IANA name such
/// as `Europe/Paris`.
fn parse_tz(tz: &str) -> Result<Zone, String> {
    if tz.eq_ignore_ascii_case("utc") || tz == "Z" {
        return chrono::FixedOffset::east_opt(0)
            .map(Zone::Fixed)
            .ok_or_else(|| "bad offset".to_string());
    }
    let bad = || {
        format!(
            "tz {tz:?} is not a zone; use an IANA name such as \"Europe/Paris\" or \"America/New_York\", \"UTC\", or a fixed offset such as \"+02:00\""
        )
    };
    let (sign, rest) = match tz.as_bytes().first() {
        Some(b'+') => (1, &tz[1..]),
        Some(b'-') => (-1, &tz[1..]),
        _ => {
            return tz
                .parse::<chrono_tz::Tz>()
                .map(Zone::Named)
                .map_err(|_| bad());
        }
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || m > 59 {
        return Err(bad());
    }
    chrono::FixedOffset::east_opt(sign * (h * 3600 + m * 60))
        .map(Zone::Fixed)
        .ok_or_else(bad)
}

impl Zone {
    /// The wall-clock time in this zone at `ms` since the epoch.
    fn local(&self, ms: u64) -> Option<chrono::NaiveDateTime> {
        let at = chrono::DateTime::from_timestamp_millis(ms as i64)?;
        Some(match self {
            Zone::Fixed(o) => at.with_timezone(o).naive_local(),
            Zone::Named(tz) => at.with_timezone(tz).naive_local(),
        })
    }

    /// The instant (ms since the epoch) a wall-clock time stands for, as
    /// RFC 5545 reads local times: a time that occurs twice (clocks going
    /// back) is its first occurrence; a time that does not occur (clocks
    /// going forward) is read with the offset in force before the gap, so
    /// 02:30 on a night that skips from 02:00 to 03:00 is 03:30.
    fn instant(&self, local: chrono::NaiveDateTime) -> Option<u64> {
        use chrono::{LocalResult, Offset, TimeZone};
        let at = match self {
            Zone::Fixed(o) => (local - *o).and_utc().timestamp_millis(),
            Zone::Named(tz) => match tz.from_local_datetime(&local) {
                LocalResult::Single(t) => t.timestamp_millis(),
                LocalResult::Ambiguous(first, _) => first.timestamp_millis(),
                LocalResult::None => {
                    // The offset a day before: the one in force before the gap.
                    let before = tz
                        .offset_from_utc_datetime(&(local - chrono::Duration::days(1)))
                        .fix();
                    (local - before).and_utc().timestamp_millis()
                }
            },
        };
        u64::try_from(at).ok()
    }
}

/// Each field's name and its range of numbers, seconds first.
const CRON_FIELDS: [(&str, u32, u32); 7] = [
    ("seconds", 0, 59),
    ("minutes", 0, 59),
    ("hours", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 1, 7),
    ("year", 1970, 2099),
];

/// Every number of a cron expression within its field's range, with a
/// message that names the field and its range (names like `MON` and `JAN`
/// are left to the parser).
fn check_ranges(cron: &str) -> Result<(), String> {
    for (field, (name, lo, hi)) in cron.split_whitespace().zip(CRON_FIELDS) {
        for part in field.split(',') {
            let (range, step) = part.split_once('/').unwrap_or((part, ""));
            for n in range
                .split('-')
                .filter(|n| !n.is_empty() && *n != "*" && *n != "?")
            {
                let Ok(v) = n.parse::<u32>() else {
                    continue;
                };
                if v < lo || v > hi {
                    return Err(format!(
                        "cron {cron:?}: {name} run from {lo} to {hi}, so {v} is out of range"
                    ));
                }
            }
            if let Ok(0) = step.parse::<u32>() {
                return Err(format!(
                    "cron {cron:?}: a step of 0 in the {name} field never moves"
                ));
            }
        }
    }
    Ok(())
}

/// Ticks looked at past a starting point before giving up: enough for
/// the local times a clock change repeats in a schedule of every second.
const LOOKAHEAD: usize = 2 * 3600 + 60;

impl Schedule {
    /// Parse `cron` (seconds first: `sec min hour day month weekday [year]`) in `tz`.
    pub fn parse(cron: &str, tz: &str, on_missed: OnMissed) -> Result<Schedule, String> {
        check_ranges(cron)?;
        let cron = cron::Schedule::from_str(cron).map_err(|e| {
            format!(
                "cron {cron:?} is not valid ({e}); write six fields, seconds first, e.g. \"0 */5 * * * *\""
            )
        })?;
        Ok(Schedule {
            cron,
            zone: parse_tz(tz)?,
            on_missed,
        })
    }

    /// The first tick strictly after `ms` (ms since the Unix epoch). Cron
    /// fields are wall-clock times in the schedule's zone; each local time
    /// the expression names fires once (see [`Zone::instant`]).
    pub fn next_after(&self, ms: u64) -> Option<u64> {
        let from = self.zone.local(ms)?.and_utc();
        // Local times after a repeated hour's second pass may stand for
        // instants already past: they fired on the first pass.
        self.cron
            .after(&from)
            .take(LOOKAHEAD)
            .filter_map(|t| self.zone.instant(t.naive_utc()))
            .find(|t| *t > ms)
    }

    /// The latest tick in `(after, upto]`, if any: a few steps back from
    /// `upto`, however long the gap.
    fn latest_in(&self, after: u64, upto: u64) -> Option<u64> {
        // Two hours of slack cover any clock change.
        let end = (self.zone.local(upto)? + chrono::Duration::hours(2)).and_utc();
        self.cron
            .after(&end)
            .rev()
            .take(LOOKAHEAD * 2)
            .filter_map(|t| self.zone.instant(t.naive_utc()))
            .find(|t| *t <= upto)
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

impl TriggerConfig {
    /// Check each trigger's values; `at` names the pipeline in messages.
    pub(super) fn validate(&self, at: &str) -> Result<(), String> {
        let p = self;
        if p.queue.is_some() && (p.poll.is_some() || p.schedule.is_some()) {
            return Err(format!(
                "{at}: trigger.queue cannot go with trigger.poll or trigger.schedule; a pipeline has one source besides its webhook"
            ));
        }
        if let Some(poll) = &p.poll {
            if poll.every_ms == 0 || poll.max_backoff_ms == 0 {
                return Err(format!(
                    "{at}: trigger.poll.every_ms and max_backoff_ms must be at least 1"
                ));
            }
            if !poll.config.is_object() {
                return Err(format!("{at}: trigger.poll.config must be a table"));
            }
        }
        if let Some(s) = &p.schedule {
            s.schedule()
                .map_err(|e| format!("{at}: trigger.schedule: {e}"))?;
        }
        if let Some(w) = &p.webhook {
            for s in w.secret_names() {
                if !valid_credential_name(s) {
                    return Err(format!(
                        "{at}: trigger.webhook secret {s:?} is not a credential name; write the NAME whose value is in WEFT_SECRET_NAME or the secrets file"
                    ));
                }
            }
            if w.header.is_some() && w.verify != Preset::HmacSha256 {
                return Err(format!(
                    "{at}: trigger.webhook.header applies only to verify = \"hmac-sha256\""
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn cron_numbers_out_of_range_are_named_with_their_range() {
        let parse = |c: &str| Schedule::parse(c, "UTC", OnMissed::Skip).map(|_| ());
        assert!(parse("0 0 23 * * *").is_ok(), "23 is an hour");
        assert!(parse("59 59 0-23/2 31 12 7").is_ok());
        let err = parse("0 0 24 * * *").unwrap_err();
        assert!(
            err.contains("hours run from 0 to 23, so 24 is out of range"),
            "{err}"
        );
        let err = parse("0 60 * * * *").unwrap_err();
        assert!(err.contains("minutes run from 0 to 59, so 60"), "{err}");
        let err = parse("0 0 0 0 * *").unwrap_err();
        assert!(err.contains("day of month run from 1 to 31, so 0"), "{err}");
        let err = parse("0 0 0 * 1-13 *").unwrap_err();
        assert!(err.contains("month run from 1 to 12, so 13"), "{err}");
        let err = parse("*/0 * * * * *").unwrap_err();
        assert!(err.contains("step of 0"), "{err}");
        assert!(
            parse("0 0 9 * * MON-FRI").is_ok(),
            "names are left to the parser"
        );
    }
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
        let err = Schedule::parse("0 * * * * *", "Europe/Pariss", OnMissed::Skip).unwrap_err();
        assert!(err.contains("IANA name"), "{err}");
        assert!(Schedule::parse("0 * * * * *", "Europe/Paris", OnMissed::Skip).is_ok());
    }

    /// Every tick in `[from, to)`, as UTC RFC 3339 times.
    fn ticks(s: &Schedule, from: &str, to: &str) -> Vec<String> {
        let ms = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .timestamp_millis() as u64
        };
        let (mut at, end) = (ms(from) - 1, ms(to));
        let mut out = Vec::new();
        while let Some(next) = s.next_after(at).filter(|t| *t < end) {
            out.push(
                chrono::DateTime::from_timestamp_millis(next as i64)
                    .unwrap()
                    .format("%Y-%m-%dT%H:%M")
                    .to_string(),
            );
            at = next;
        }
        out
    }

    #[test]
    fn named_zones_fire_once_per_local_time_across_both_clock_changes() {
        let paris = |cron| Schedule::parse(cron, "Europe/Paris", OnMissed::Skip).unwrap();
        // Spring forward, 2026-03-29: 02:00 CET becomes 03:00 CEST. A daily
        // 02:30 does not exist that night and is read with the offset before
        // the gap (03:30 CEST, 01:30 UTC); the days around keep their offset.
        assert_eq!(
            ticks(
                &paris("0 30 2 * * *"),
                "2026-03-28T00:00:00Z",
                "2026-03-31T00:00:00Z"
            ),
            ["2026-03-28T01:30", "2026-03-29T01:30", "2026-03-30T00:30"]
        );
        // A daily 09:00 moves from 08:00 UTC to 07:00 UTC, once a day.
        assert_eq!(
            ticks(
                &paris("0 0 9 * * *"),
                "2026-03-28T00:00:00Z",
                "2026-03-31T00:00:00Z"
            ),
            ["2026-03-28T08:00", "2026-03-29T07:00", "2026-03-30T07:00"]
        );
        // Fall back, 2026-10-25: 03:00 CEST becomes 02:00 CET, so 02:30
        // happens twice; it fires once, on its first pass (00:30 UTC).
        assert_eq!(
            ticks(
                &paris("0 30 2 * * *"),
                "2026-10-24T00:00:00Z",
                "2026-10-27T00:00:00Z"
            ),
            ["2026-10-24T00:30", "2026-10-25T00:30", "2026-10-26T01:30"]
        );
        // Every 30 minutes through the repeated hour: each local time once.
        assert_eq!(
            ticks(
                &paris("0 */30 * * * *"),
                "2026-10-24T23:45:00Z",
                "2026-10-25T02:15:00Z"
            ),
            [
                "2026-10-25T00:00", // 02:00 CEST
                "2026-10-25T00:30", // 02:30 CEST
                // 02:00 and 02:30 CET (01:00, 01:30 UTC) were already fired
                "2026-10-25T02:00", // 03:00 CET
            ]
        );
        let ny = |cron| Schedule::parse(cron, "America/New_York", OnMissed::Skip).unwrap();
        // 2026-03-08: 02:00 EST becomes 03:00 EDT; 2026-11-01: 02:00 EDT
        // becomes 01:00 EST.
        assert_eq!(
            ticks(
                &ny("0 30 2 * * *"),
                "2026-03-07T00:00:00Z",
                "2026-03-10T00:00:00Z"
            ),
            ["2026-03-07T07:30", "2026-03-08T07:30", "2026-03-09T06:30"]
        );
        assert_eq!(
            ticks(
                &ny("0 30 1 * * *"),
                "2026-10-31T00:00:00Z",
                "2026-11-03T00:00:00Z"
            ),
            ["2026-10-31T05:30", "2026-11-01T05:30", "2026-11-02T06:30"]
        );
        // A restart in the middle of the repeated hour fires nothing again.
        let at_second_pass = chrono::DateTime::parse_from_rfc3339("2026-11-01T06:10:00Z")
            .unwrap()
            .timestamp_millis() as u64;
        let next = ny("0 30 1 * * *").next_after(at_second_pass).unwrap();
        assert_eq!(
            chrono::DateTime::from_timestamp_millis(next as i64)
                .unwrap()
                .to_rfc3339(),
            "2026-11-02T06:30:00+00:00"
        );
        // A tick missed across the change is found by `once`.
        let s = Schedule::parse("0 30 2 * * *", "Europe/Paris", OnMissed::Once).unwrap();
        let ms = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .timestamp_millis() as u64
        };
        let (fire, _) = s.plan(Some(ms("2026-03-28T01:30:00Z")), ms("2026-03-29T12:00:00Z"));
        assert_eq!(fire, Some(ms("2026-03-29T01:30:00Z")));
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
