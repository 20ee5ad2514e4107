//! A pipeline's objectives at run time: outcomes counted per minute and
//! per hour, the service-level indicators and their error-budget burn
//! rates over the windows of the SRE workbook's multi-window alerts, the
//! freshness of delivery, and the data-quality gate.
//!
//! Every figure is taken at a time the caller passes in, so the maths is
//! tested against hand-worked examples on a clock of the test's own.

use crate::config::{QualityAction, QualityConfig, SloConfig};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;

/// What one minute (or hour) saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    /// Events delivered.
    delivered: u64,
    /// ... of which slower than the latency objective.
    slow: u64,
    /// Events dead-lettered.
    dead: u64,
    /// Events accepted, or refused for breaking the contract.
    seen: u64,
    /// Events refused for breaking the contract, or dead-lettered as
    /// `invalid-input`.
    invalid: u64,
    /// Sink calls that worked, and that failed.
    sink_ok: u64,
    sink_err: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.delivered += o.delivered;
        self.slow += o.slow;
        self.dead += o.dead;
        self.seen += o.seen;
        self.invalid += o.invalid;
        self.sink_ok += o.sink_ok;
        self.sink_err += o.sink_err;
    }
}

/// Counts per unit of time (a minute, an hour), the last `len` units.
#[derive(Debug)]
struct Ring {
    unit_ms: u64,
    /// (unit number since the epoch, its counts).
    slots: Vec<(u64, Counts)>,
}

impl Ring {
    fn new(unit_ms: u64, len: usize) -> Ring {
        Ring {
            unit_ms,
            slots: vec![(u64::MAX, Counts::default()); len],
        }
    }

    fn at(&mut self, now: u64) -> &mut Counts {
        let unit = now / self.unit_ms;
        let len = self.slots.len() as u64;
        let slot = &mut self.slots[(unit % len) as usize];
        if slot.0 != unit {
            *slot = (unit, Counts::default());
        }
        &mut slot.1
    }

    /// The unit `now` falls in and the `units - 1` before it.
    fn sum(&self, now: u64, units: u64) -> Counts {
        let last = now / self.unit_ms;
        let first = (last + 1).saturating_sub(units);
        let mut total = Counts::default();
        for (unit, c) in &self.slots {
            if (first..=last).contains(unit) {
                total.add(c);
            }
        }
        total
    }

    /// Each unit of the window, oldest first (empty ones as zero).
    fn each(&self, now: u64, units: u64) -> Vec<(u64, Counts)> {
        let last = now / self.unit_ms;
        (last + 1 - units.min(last + 1)..=last)
            .map(|u| {
                let slot = self.slots[(u % self.slots.len() as u64) as usize];
                (
                    u,
                    if slot.0 == u {
                        slot.1
                    } else {
                        Counts::default()
                    },
                )
            })
            .collect()
    }
}

/// The windows burn rates are reported over, in minutes, with their names.
pub const WINDOWS: [(&str, u64); 7] = [
    ("5m", 5),
    ("30m", 30),
    ("1h", 60),
    ("2h", 120),
    ("6h", 360),
    ("1d", 1440),
    ("3d", 4320),
];

/// The SRE workbook's multi-window burn-rate alerts (for a 30-day
/// budget): (severity, long window, short window, burn rate). Both windows
/// must burn faster than the rate.
pub const ALERTS: [(&str, &str, &str, f64); 4] = [
    ("page", "1h", "5m", 14.4),
    ("page", "6h", "30m", 6.0),
    ("ticket", "1d", "2h", 3.0),
    ("ticket", "3d", "6h", 1.0),
];

/// One service-level indicator against its objective.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct SliReport {
    /// The objective: the share of good events promised.
    pub objective: f64,
    /// How fast the error budget burns, by window (`5m` … `3d`): the
    /// window's share of bad events over the share the objective allows.
    /// 1 spends the budget exactly over its period.
    pub burn_rates: BTreeMap<String, f64>,
    /// Good and all events over the budget period.
    pub good: u64,
    /// All events over the budget period.
    pub total: u64,
    /// Share of the budget left over its period (below 0: overspent).
    pub budget_remaining: f64,
    /// The multi-window alerts firing now (`page: 1h and 5m above 14.4×`).
    pub alerts: Vec<String>,
}

/// Whether delivery keeps up.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct FreshnessReport {
    /// Longest allowed without a delivery while events wait, in seconds.
    pub limit_s: u64,
    /// How long events have waited with no delivery, in seconds (0 when
    /// none wait).
    pub stale_s: u64,
    /// Whether within the limit.
    pub ok: bool,
    /// The last delivery, ms since the epoch (0: none since start).
    pub last_delivery_ms: u64,
}

/// The quality gate's view.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct QualityReport {
    /// Share of events over the window that broke the contract or were
    /// dead-lettered as `invalid-input`.
    pub invalid_ratio: f64,
    /// Events seen over the window.
    pub window_events: u64,
    /// `max_invalid_ratio`.
    pub max_invalid_ratio: f64,
    /// `pause` or `dead-letter-only`.
    pub action: String,
    /// Share of sink calls that failed over `sink_error_window`.
    pub sink_error_ratio: f64,
    /// Why the gate tripped, while it stands tripped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tripped: Option<String>,
}

/// A pipeline's objectives and quality gate, as they stand.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct ObjectivesReport {
    /// Delivered rather than dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<SliReport>,
    /// Delivered within the latency objective.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<SliReport>,
    /// No long stretch without a delivery while events wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<FreshnessReport>,
    /// The data-quality gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualityReport>,
}

/// An outcome the objectives count.
#[derive(Debug, Clone, Copy)]
pub enum Seen {
    /// Accepted.
    Accepted,
    /// Refused at intake for breaking the contract.
    Refused,
    /// Delivered, this long after it was accepted.
    Delivered {
        /// Accept to delivery, in ms.
        latency_ms: u64,
    },
    /// Dead-lettered; `invalid` for `invalid-input`.
    DeadLettered {
        /// An `invalid-input` failure.
        invalid: bool,
    },
    /// A sink call that worked (`true`) or failed.
    Sink(bool),
}

/// What the gate says to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Pause delivery, for this reason.
    Pause(String),
    /// Say so, deliver on (`dead-letter-only`).
    Warn(String),
}

/// A pipeline's objectives at run time.
#[derive(Debug)]
pub struct Objectives {
    slo: Option<SloConfig>,
    quality: Option<QualityConfig>,
    /// (minutes of the last 6 hours, hours of the budget period).
    rings: Mutex<(Ring, Ring)>,
    last_delivery_ms: AtomicU64,
    /// The gate counts from here (start-up, or the last resume).
    judged_from_ms: AtomicU64,
    /// Set while the gate has acted and no one has resumed.
    tripped: Mutex<Option<String>>,
    /// A pause the gate asked for is under way.
    pausing: AtomicBool,
}

impl Objectives {
    /// Objectives for a pipeline with `slo` or `quality` set (else none).
    pub fn new(
        slo: Option<&SloConfig>,
        quality: Option<&QualityConfig>,
        now: u64,
    ) -> Option<Objectives> {
        if slo.is_none() && quality.is_none() {
            return None;
        }
        let days = slo.map_or(3, |s| s.budget_days.max(3)) as usize;
        Some(Objectives {
            slo: slo.cloned(),
            quality: quality.cloned(),
            rings: Mutex::new((Ring::new(MINUTE, 360), Ring::new(HOUR, days * 24))),
            last_delivery_ms: AtomicU64::new(0),
            judged_from_ms: AtomicU64::new(now),
            tripped: Mutex::new(None),
            pausing: AtomicBool::new(false),
        })
    }

    /// Count one outcome at `now`.
    pub fn record(&self, now: u64, seen: Seen) {
        let mut c = Counts::default();
        match seen {
            Seen::Accepted => c.seen = 1,
            Seen::Refused => {
                c.seen = 1;
                c.invalid = 1;
            }
            Seen::Delivered { latency_ms } => {
                c.delivered = 1;
                let within = self
                    .slo
                    .as_ref()
                    .and_then(|s| s.latency)
                    .map(|l| l.within_ms);
                c.slow = u64::from(within.is_some_and(|w| latency_ms > w));
                self.last_delivery_ms.fetch_max(now, Ordering::Relaxed);
            }
            Seen::DeadLettered { invalid } => {
                c.dead = 1;
                c.invalid = u64::from(invalid);
            }
            Seen::Sink(true) => c.sink_ok = 1,
            Seen::Sink(false) => c.sink_err = 1,
        }
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        rings.0.at(now).add(&c);
        rings.1.at(now).add(&c);
    }

    /// Counts over the last `minutes` (minute ring up to 6 h, hour ring past).
    fn over(&self, now: u64, minutes: u64) -> Counts {
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        if minutes <= 360 {
            rings.0.sum(now, minutes)
        } else {
            rings.1.sum(now, minutes.div_ceil(60))
        }
    }

    /// The report at `now`; `waiting_since` is when the oldest event still
    /// waiting was accepted, if one is.
    pub fn report(&self, now: u64, waiting_since: Option<u64>) -> ObjectivesReport {
        let mut out = ObjectivesReport::default();
        if let Some(slo) = &self.slo {
            let budget_minutes = u64::from(slo.budget_days) * 1440;
            if let Some(objective) = slo.success {
                out.success = Some(self.sli(now, objective, budget_minutes, |c| {
                    (c.dead, c.delivered + c.dead)
                }));
            }
            if let Some(l) = slo.latency {
                out.latency =
                    Some(self.sli(now, l.objective, budget_minutes, |c| (c.slow, c.delivered)));
            }
            if let Some(limit) = slo.freshness {
                let last = self.last_delivery_ms.load(Ordering::Relaxed);
                let stale_ms = waiting_since.map_or(0, |w| now.saturating_sub(w.max(last)));
                out.freshness = Some(FreshnessReport {
                    limit_s: limit.as_secs(),
                    stale_s: stale_ms / 1000,
                    ok: u128::from(stale_ms) <= limit.as_millis(),
                    last_delivery_ms: last,
                });
            }
        }
        if let Some(q) = &self.quality {
            let c = self.over(now, q.window.as_secs() / 60);
            let s = self.over(now, q.sink_error_window.as_secs() / 60);
            out.quality = Some(QualityReport {
                invalid_ratio: ratio(c.invalid, c.seen),
                window_events: c.seen,
                max_invalid_ratio: q.max_invalid_ratio,
                action: match q.action {
                    QualityAction::Pause => "pause",
                    QualityAction::DeadLetterOnly => "dead-letter-only",
                }
                .into(),
                sink_error_ratio: ratio(s.sink_err, s.sink_ok + s.sink_err),
                tripped: self
                    .tripped
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            });
        }
        out
    }

    /// One indicator: `bad_of` gives (bad, total) of some counts.
    fn sli(
        &self,
        now: u64,
        objective: f64,
        budget_minutes: u64,
        bad_of: impl Fn(&Counts) -> (u64, u64),
    ) -> SliReport {
        let allowed = 1.0 - objective;
        let burn = |minutes: u64| {
            let (bad, total) = bad_of(&self.over(now, minutes));
            ratio(bad, total) / allowed
        };
        let burn_rates: BTreeMap<String, f64> = WINDOWS
            .iter()
            .map(|(name, minutes)| (name.to_string(), burn(*minutes)))
            .collect();
        let alerts = ALERTS
            .iter()
            .filter(|(_, long, short, rate)| {
                burn_rates[*long] > *rate && burn_rates[*short] > *rate
            })
            .map(|(severity, long, short, rate)| {
                format!("{severity}: {long} and {short} burn above {rate}×")
            })
            .collect();
        let (bad, total) = bad_of(&self.over(now, budget_minutes));
        SliReport {
            objective,
            burn_rates,
            good: total - bad,
            total,
            budget_remaining: 1.0 - ratio(bad, total) / allowed,
            alerts,
        }
    }

    /// What the quality gate says at `now`, if it trips; `None` while it
    /// has tripped already and no one has resumed.
    pub fn judge(&self, now: u64) -> Option<Verdict> {
        let q = self.quality.as_ref()?;
        let already = self
            .tripped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if already && q.action == QualityAction::Pause {
            return None;
        }
        let from = self.judged_from_ms.load(Ordering::Relaxed);
        let c = self.over(now, q.window.as_secs() / 60);
        let verdict = if c.seen >= q.min_events && ratio(c.invalid, c.seen) > q.max_invalid_ratio {
            let why = format!(
                "quality gate: {} of the last {} events ({:.0}%) broke the contract or were invalid-input, over max_invalid_ratio = {}",
                c.invalid,
                c.seen,
                ratio(c.invalid, c.seen) * 100.0,
                q.max_invalid_ratio
            );
            Some(match q.action {
                QualityAction::Pause => Verdict::Pause(why),
                QualityAction::DeadLetterOnly => Verdict::Warn(why),
            })
        } else {
            None
        };
        let verdict = verdict.or_else(|| self.sink_verdict(q, now, from));
        let mut tripped = self.tripped.lock().unwrap_or_else(|e| e.into_inner());
        match &verdict {
            Some(Verdict::Pause(why) | Verdict::Warn(why)) => *tripped = Some(why.clone()),
            // Under `dead-letter-only` the gate stands down by itself once
            // the share falls back.
            None => *tripped = None,
        }
        // Said once per trip.
        verdict.filter(|_| !already)
    }

    /// Pause when every minute of `sink_error_window` that saw sink calls
    /// (the first one included, and all since the last resume) failed more
    /// than `max_sink_error_ratio` of them, over `min_events` calls.
    fn sink_verdict(&self, q: &QualityConfig, now: u64, from: u64) -> Option<Verdict> {
        let max = q.max_sink_error_ratio?;
        let minutes = q.sink_error_window.as_secs() / 60;
        let each = self
            .rings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .each(now, minutes);
        let (first, _) = each.first()?;
        if first * MINUTE < from {
            return None;
        }
        let high = |c: &Counts| ratio(c.sink_err, c.sink_ok + c.sink_err) > max;
        let calls = |c: &Counts| c.sink_ok + c.sink_err;
        let (mut ok, mut err) = (0, 0);
        for (_, c) in &each {
            if calls(c) > 0 && !high(c) {
                return None;
            }
            ok += c.sink_ok;
            err += c.sink_err;
        }
        if calls(&each[0].1) == 0 || ok + err < q.min_events {
            return None;
        }
        Some(Verdict::Pause(format!(
            "quality gate: the sink failed {err} of {} calls ({:.0}%) over the last {minutes} minutes, above max_sink_error_ratio = {max} all along",
            ok + err,
            ratio(err, ok + err) * 100.0
        )))
    }

    /// Take over `old`'s windows (a reload), when both judge by the same
    /// objectives and gate: burn rates, budgets and the gate's state go on
    /// across the switch instead of starting afresh.
    pub fn carry_from(&self, old: &Objectives) {
        if self.slo != old.slo || self.quality != old.quality {
            return;
        }
        let rings = old.rings.lock().unwrap_or_else(|e| e.into_inner());
        let mut mine = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        mine.0.slots.clone_from(&rings.0.slots);
        mine.1.slots.clone_from(&rings.1.slots);
        drop((rings, mine));
        for (to, from) in [
            (&self.last_delivery_ms, &old.last_delivery_ms),
            (&self.judged_from_ms, &old.judged_from_ms),
        ] {
            to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        *self.tripped.lock().unwrap_or_else(|e| e.into_inner()) = old
            .tripped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.pausing
            .store(old.pausing.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Take the right to pause for the gate (once until the next resume).
    pub fn start_pause(&self) -> bool {
        !self.pausing.swap(true, Ordering::SeqCst)
    }

    /// An operator resumed: the gate judges afresh from `now`, the counts
    /// it judged by forgotten (the objectives keep theirs).
    pub fn resumed(&self, now: u64) {
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let (minutes, hours) = &mut *rings;
        for (_, c) in minutes.slots.iter_mut().chain(hours.slots.iter_mut()) {
            (c.seen, c.invalid, c.sink_ok, c.sink_err) = (0, 0, 0, 0);
        }
        drop(rings);
        self.judged_from_ms.store(now, Ordering::Relaxed);
        *self.tripped.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.pausing.store(false, Ordering::SeqCst);
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LatencyObjective;
    use std::time::Duration;

    // 2026-01-01T00:00:00Z, on a minute boundary.
    const T0: u64 = 1_767_225_600_000;

    fn slo() -> SloConfig {
        SloConfig {
            success: Some(0.99),
            latency: Some(LatencyObjective {
                within_ms: 5000,
                objective: 0.9,
            }),
            freshness: Some(Duration::from_secs(600)),
            budget_days: 28,
        }
    }

    fn quality(action: QualityAction) -> QualityConfig {
        QualityConfig {
            max_invalid_ratio: 0.2,
            window: Duration::from_secs(300),
            min_events: 10,
            action,
            max_sink_error_ratio: Some(0.5),
            sink_error_window: Duration::from_secs(600),
        }
    }

    #[test]
    fn burn_rates_match_hand_worked_examples() {
        let o = Objectives::new(Some(&slo()), None, T0).unwrap();
        // Hour one: 1000 events, 10 dead-lettered: exactly the 1% the
        // objective allows, so the budget burns at 1×.
        for i in 0..990 {
            o.record(T0 + i * 3_000, Seen::Delivered { latency_ms: 100 });
        }
        for i in 0..10 {
            o.record(T0 + i * 60_000, Seen::DeadLettered { invalid: false });
        }
        let now = T0 + HOUR - 1;
        let r = o.report(now, None);
        let s = r.success.unwrap();
        assert!(
            (s.burn_rates["1h"] - 1.0).abs() < 1e-9,
            "{:?}",
            s.burn_rates
        );
        // The last 5 minutes held 5 × 20 = 100 deliveries (one each 3 s)
        // and no dead letter.
        assert_eq!(s.burn_rates["5m"], 0.0);
        assert_eq!((s.good, s.total), (990, 1000));
        assert!(
            (s.budget_remaining - 0.0).abs() < 1e-9,
            "1% bad spends the whole budget"
        );
        assert!(s.alerts.is_empty());
        // Then 5 minutes in which half of 100 events dead-letter: 50%
        // against 1% allowed is 50× in the 5m window; the 1h window holds
        // 60 of 1100 bad: (60/1100)/0.01 = 5.45×, under 14.4: no page.
        let t1 = T0 + HOUR;
        for i in 0..100 {
            let seen = if i % 2 == 0 {
                Seen::DeadLettered { invalid: false }
            } else {
                Seen::Delivered { latency_ms: 100 }
            };
            o.record(t1 + i * 3_000, seen);
        }
        let r = o.report(t1 + 5 * MINUTE - 1, None).success.unwrap();
        assert!(
            (r.burn_rates["5m"] - 50.0).abs() < 1e-9,
            "{:?}",
            r.burn_rates
        );
        // The 1h window now runs from T0 + 5 min: the first 5 minutes'
        // 100 deliveries and 5 dead letters left it, so 890 + 5 + 100
        // events, 5 + 50 bad.
        let expected = (55.0 / 995.0) / 0.01;
        assert!(
            (r.burn_rates["1h"] - expected).abs() < 1e-9,
            "{:?}",
            r.burn_rates
        );
        // No page; but 60 bad of 1100 over 6 h and a day (5.45×) is more
        // than the budget can bear: both tickets.
        assert_eq!(
            r.alerts,
            [
                "ticket: 1d and 2h burn above 3×",
                "ticket: 3d and 6h burn above 1×"
            ]
        );
        // Another 20 minutes all bad: both 1h and 5m above 14.4×: page.
        for i in 0..400 {
            o.record(
                t1 + 5 * MINUTE + i * 3_000,
                Seen::DeadLettered { invalid: false },
            );
        }
        let r = o.report(t1 + 25 * MINUTE - 1, None).success.unwrap();
        assert!(r.burn_rates["5m"] > 99.0);
        assert!(r.burn_rates["1h"] > 14.4, "{:?}", r.burn_rates);
        assert_eq!(
            r.alerts,
            [
                "page: 1h and 5m burn above 14.4×",
                "page: 6h and 30m burn above 6×",
                "ticket: 1d and 2h burn above 3×",
                "ticket: 3d and 6h burn above 1×"
            ]
        );
    }

    #[test]
    fn latency_counts_deliveries_slower_than_the_objective() {
        let o = Objectives::new(Some(&slo()), None, T0).unwrap();
        // 100 deliveries, 20 slower than 5 s: 20% slow against 10% allowed.
        for i in 0..100 {
            let latency_ms = if i < 20 { 5001 } else { 5000 };
            o.record(T0 + i * 1000, Seen::Delivered { latency_ms });
        }
        o.record(T0, Seen::DeadLettered { invalid: false });
        let l = o.report(T0 + 2 * MINUTE, None).latency.unwrap();
        assert!(
            (l.burn_rates["5m"] - 2.0).abs() < 1e-9,
            "{:?}",
            l.burn_rates
        );
        assert_eq!((l.good, l.total), (80, 100), "a dead letter is no delivery");
        assert!((l.budget_remaining - -1.0).abs() < 1e-9);
    }

    #[test]
    fn freshness_fails_after_its_limit_of_a_stuck_sink() {
        let o = Objectives::new(Some(&slo()), None, T0).unwrap();
        o.record(T0, Seen::Delivered { latency_ms: 10 });
        // Nothing waits: fresh however long nothing is delivered.
        assert!(o.report(T0 + HOUR, None).freshness.unwrap().ok);
        // An event waits from T0 + 1 min and the sink is stuck.
        let waiting = Some(T0 + MINUTE);
        let at = |m: u64| o.report(T0 + m * MINUTE, waiting).freshness.unwrap();
        assert!(at(10).ok, "9 minutes stale");
        assert!(at(11).ok, "exactly 10 minutes: at the limit");
        let late = at(12);
        assert!(!late.ok);
        assert_eq!((late.stale_s, late.limit_s), (660, 600));
        // A delivery resets the clock even while older events still wait.
        o.record(T0 + 12 * MINUTE, Seen::Delivered { latency_ms: 10 });
        assert!(at(13).ok);
    }

    #[test]
    fn the_gate_trips_on_a_bad_share_and_judges_afresh_after_a_resume() {
        let o = Objectives::new(None, Some(&quality(QualityAction::Pause)), T0).unwrap();
        // 9 events, 5 invalid: under min_events, no verdict.
        for i in 0..9 {
            o.record(T0 + i, if i < 5 { Seen::Refused } else { Seen::Accepted });
        }
        assert_eq!(o.judge(T0 + 10), None);
        // 30 events, 9 invalid (30%), over 20%: pause, with the figures.
        for i in 0..21 {
            o.record(T0 + 20 + i, Seen::Accepted);
        }
        // Now 30 seen, 5 invalid (17%): still fine.
        assert_eq!(o.judge(T0 + 100), None);
        for _ in 0..4 {
            o.record(T0 + 200, Seen::DeadLettered { invalid: true });
        }
        let Some(Verdict::Pause(why)) = o.judge(T0 + 300) else {
            panic!("the gate trips at 9 of 30");
        };
        assert!(why.contains("9 of the last 30 events (30%)"), "{why}");
        assert_eq!(o.judge(T0 + 400), None, "tripped once until resumed");
        assert!(o.report(T0 + 400, None).quality.unwrap().tripped.is_some());
        // Resumed: the bad minutes before it no longer count.
        o.resumed(T0 + MINUTE);
        assert_eq!(o.judge(T0 + MINUTE + 1), None);
        assert_eq!(
            o.report(T0 + MINUTE + 1, None)
                .quality
                .unwrap()
                .window_events,
            0
        );
        // Five minutes later the old events have left the window anyway.
        let dlo = Objectives::new(None, Some(&quality(QualityAction::DeadLetterOnly)), T0).unwrap();
        for i in 0..10 {
            dlo.record(T0 + i, if i < 3 { Seen::Refused } else { Seen::Accepted });
        }
        assert!(matches!(dlo.judge(T0 + 10), Some(Verdict::Warn(_))));
    }

    #[test]
    fn the_sink_pause_waits_for_the_whole_window_of_high_errors() {
        let o = Objectives::new(None, Some(&quality(QualityAction::Pause)), T0).unwrap();
        // Minute 0 to 9: 3 calls a minute, 2 failing (67% > 50%).
        for m in 0..10 {
            for k in 0..3 {
                o.record(T0 + m * MINUTE + k, Seen::Sink(k == 0));
            }
        }
        // At minute 9 the window (minutes 0–9) is full of high minutes.
        let Some(Verdict::Pause(why)) = o.judge(T0 + 9 * MINUTE + 30_000) else {
            panic!("ten minutes of high sink errors pause");
        };
        assert!(why.contains("failed 20 of 30 calls"), "{why}");
        // A window with one good minute in it does not.
        let o = Objectives::new(None, Some(&quality(QualityAction::Pause)), T0).unwrap();
        for m in 0..10 {
            for k in 0..3 {
                o.record(T0 + m * MINUTE + k, Seen::Sink(k == 0 || m == 4));
            }
        }
        assert_eq!(o.judge(T0 + 9 * MINUTE + 30_000), None);
        // Nor one that began before the errors did (a call-less first minute).
        let o = Objectives::new(None, Some(&quality(QualityAction::Pause)), T0).unwrap();
        for m in 1..10 {
            for k in 0..3 {
                o.record(T0 + m * MINUTE + k, Seen::Sink(false));
            }
        }
        assert_eq!(o.judge(T0 + 9 * MINUTE + 30_000), None);
        assert!(o.judge(T0 + 10 * MINUTE + 30_000).is_some());
    }
}
