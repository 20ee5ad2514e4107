//! One attempt at an event: every step, then the sink, with contracts
//! checked between them, and the outcome written with where the event goes
//! next (retry, finished, dead letter).

use super::breaker::BreakerState;
use super::handle::Engine;
use super::job::Job;
use super::objectives::Seen;
use super::pipeline::{Pipeline, Step};
use super::queue::Left;
use crate::sandbox::bindings::WitEvent;
use crate::sandbox::{CallContext, CallCost, CallError};
use crate::store::{
    AfterAttempt, AfterCommit, Attempt, AttemptOutcome, ErrorKind, EventRecord, EventState,
    StepRun, Ticket, now_ms,
};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tracing::Instrument;

/// How one attempt ended, before it is written down.
enum Outcome {
    Delivered(String),
    Filtered(String),
    /// Failed in a step (index) or the sink (`None`).
    Failed(Option<usize>, CallError),
    /// A step (index) returned several events: each becomes a child event
    /// that carries on from the next step.
    Split(usize, Vec<WitEvent>),
    /// The event goes on in the pipelines of these routes (indices), one
    /// child event each.
    Routed(Vec<usize>, WitEvent),
}

impl Outcome {
    /// The outcome with the event's redacted field values masked in its
    /// receipt or error message, before either is logged or stored.
    fn masked(self, mask: &crate::redact::FieldMask) -> Outcome {
        if mask.is_empty() {
            return self;
        }
        match self {
            Outcome::Delivered(r) => Outcome::Delivered(mask.apply(&r).into_owned()),
            Outcome::Failed(at, mut e) => {
                e.message = mask.apply(&e.message).into_owned();
                Outcome::Failed(at, e)
            }
            other => other,
        }
    }
}

/// Attempt `job`; the ticket of its outcome's write, when one was made
/// (it is durable when the ticket resolves).
pub(super) async fn attempt(
    engine: &Engine,
    pipeline: &Pipeline,
    mut job: Job,
    probe: bool,
) -> Option<Ticket> {
    let store = &engine.inner.store;
    let record = match job.record.take() {
        Some(r) => r,
        None => match store.event(&job.id) {
            Ok(Some(r)) => Arc::new(r),
            Ok(None) => {
                tracing::warn!(event = %job.id, "queued event has no record; dropping the queue entry");
                drop(store.drop_queue_entry(job.entry()));
                if probe {
                    pipeline.breaker.cancel_probe();
                }
                return None;
            }
            Err(e) => {
                tracing::error!(event = %job.id, "cannot read queued event: {e}; retrying in 1 s");
                if probe {
                    pipeline.breaker.cancel_probe();
                }
                engine.schedule(Job {
                    due_ms: now_ms() + 1000,
                    record: None,
                    ..job
                });
                return None;
            }
        },
    };
    if record.state != EventState::Queued || record.attempts.len() as u32 + 1 != job.attempt {
        // A stale timer or an entry already handled: nothing to do.
        if probe {
            pipeline.breaker.cancel_probe();
        }
        return None;
    }
    // Its payload is in memory until the attempt ends: intake sees that.
    let _held = engine.inflight().hold(record.payload.len() as u64);
    let span = tracing::info_span!("event", pipeline = %pipeline.name, event = %record.id,
        correlation_id = %record.correlation_id, attempt = job.attempt);
    let started_at_ms = now_ms();
    let clock = Instant::now();
    let redact = Arc::new(crate::redact::FieldMask::of(
        &record.payload,
        &pipeline.config.redact,
    ));
    let mut runs = Vec::with_capacity(pipeline.steps.len() + 1);
    let mut on_candidate = None;
    let outcome = run_steps(
        engine,
        pipeline,
        &record,
        job.attempt,
        &redact,
        &mut runs,
        &mut on_candidate,
    )
    .instrument(span.clone())
    .await;
    let outcome = outcome.masked(&redact);
    let duration_us = clock.elapsed().as_micros() as u64;
    let _enter = span.enter();
    let sink_result = match &outcome {
        Outcome::Delivered(_) => Some(true),
        // A candidate's failure says nothing of the sink's own health.
        Outcome::Failed(None, _) if on_candidate.is_some() => None,
        Outcome::Failed(None, e) => Some(!e.kind.retryable()),
        _ => None,
    };
    if let Some(ok) = sink_result {
        pipeline.observe(&record, Seen::Sink(ok));
        if !ok {
            super::guard::act(engine, pipeline);
        }
    }
    match sink_result {
        Some(ok) => {
            if let Some(state) = pipeline.breaker.record(ok, probe) {
                match state {
                    BreakerState::Open(until) => {
                        tracing::warn!(
                            "circuit breaker of the sink opened: events wait in the queue without using attempts"
                        );
                        // Hosts sharing the store hold their calls too.
                        if engine.inner.store.shared() {
                            let left = until.saturating_duration_since(tokio::time::Instant::now());
                            let until_ms = crate::store::now_ms() + left.as_millis() as u64;
                            drop(
                                engine
                                    .inner
                                    .store
                                    .set_breaker_open_until(&pipeline.name, until_ms),
                            );
                        }
                    }
                    BreakerState::Closed => tracing::info!("circuit breaker of the sink closed"),
                    BreakerState::HalfOpen => {}
                }
            }
        }
        None if probe => pipeline.breaker.cancel_probe(),
        None => {}
    }
    Some(record_outcome(
        engine,
        pipeline,
        record,
        &job,
        outcome,
        Ran {
            started_at_ms,
            duration_us,
            steps: runs,
            on_candidate,
        },
    ))
}

/// When an attempt ran, how long, and each plugin call in it.
struct Ran {
    started_at_ms: u64,
    duration_us: u64,
    steps: Vec<StepRun>,
    /// The canary, when the step that failed ran on its candidate.
    on_candidate: Option<Arc<super::canary::Canary>>,
}

/// Count a call in its step's canary, and roll the candidate back when
/// the call shows it must be.
fn observe(
    engine: &Engine,
    canary: Option<(&Arc<super::canary::Canary>, bool)>,
    result: Result<(), ErrorKind>,
    took: std::time::Duration,
) {
    if let Some((c, on_candidate)) = canary
        && let Some(why) = c.observe(on_candidate, result.err(), took)
    {
        c.roll_back_now(engine.store(), why);
    }
}

fn context(
    pipeline: &Pipeline,
    step: &Step,
    record: &EventRecord,
    redact: &Arc<crate::redact::FieldMask>,
) -> CallContext {
    CallContext {
        pipeline: pipeline.name.clone(),
        plugin: step.plugin.name.as_str().into(),
        event_id: record.id.to_string(),
        correlation_id: record.correlation_id.clone(),
        redact: redact.clone(),
    }
}

async fn run_steps(
    engine: &Engine,
    pipeline: &Pipeline,
    record: &EventRecord,
    attempt: u32,
    redact: &Arc<crate::redact::FieldMask>,
    runs: &mut Vec<StepRun>,
    on_candidate: &mut Option<Arc<super::canary::Canary>>,
) -> Outcome {
    let sandbox = &engine.inner.sandbox;
    let began = Instant::now();
    let mut note =
        |step: &Step, offset: std::time::Duration, cost: CallCost, outcome: &str, out: usize| {
            runs.push(StepRun {
                step: step.label.clone(),
                offset_us: offset.as_micros() as u64,
                duration_us: cost.duration_us,
                outcome: outcome.to_string(),
                events_out: out as u32,
                fuel: cost.fuel,
                memory_bytes: cost.memory_bytes,
            });
        };
    let mut event = WitEvent {
        id: record.id.to_string(),
        key: record.key.clone(),
        source: record.source(),
        content_type: record.content_type.clone(),
        headers: record.headers.clone(),
        payload: record.payload.clone(),
        attempt,
        correlation_id: record.correlation_id.clone(),
        received_at_ms: record.received_at_ms,
    };
    // A child of a split starts after the step that made it.
    let first = record.lineage.first_step as usize;
    for (i, step) in pipeline.steps.iter().enumerate().skip(first) {
        let started = Instant::now();
        let offset = started - began;
        // The candidate's, when the step has a canary that takes this event.
        let (step, canary) = step.pick(&record.key);
        let (result, cost) = sandbox
            .transform(
                &step.plugin,
                &step.config_json,
                context(pipeline, step, record, redact),
                &event,
            )
            .instrument(tracing::debug_span!("step", step = %step.label))
            .await;
        pipeline.step_latency[i].observe(started.elapsed());
        let result = result
            .and_then(|out| match &step.contract {
                Some(c) => check_contract(c, step, "output", &out).map(|()| out),
                None => Ok(out),
            })
            .and_then(|out| within_max_split(pipeline, step, out));
        observe(
            engine,
            canary,
            result.as_ref().map(|_| ()).map_err(|e| e.kind),
            started.elapsed(),
        );
        let mut out = match result {
            Ok(out) => out,
            Err(e) => {
                note(step, offset, cost, e.kind.as_str(), 0);
                *on_candidate = canary.filter(|(_, cand)| *cand).map(|(c, _)| c.clone());
                return Outcome::Failed(Some(i), e);
            }
        };
        match out.len() {
            0 => {
                note(step, offset, cost, "filtered", 0);
                return Outcome::Filtered(step.label.clone());
            }
            1 => {
                note(step, offset, cost, "ok", 1);
                event = out.remove(0);
            }
            n => {
                note(step, offset, cost, "split", n);
                return Outcome::Split(i, out);
            }
        }
    }
    let Some(sink) = &pipeline.sink else {
        return route(pipeline, event, began, runs);
    };
    let (sink, canary) = sink.pick(&record.key);
    if let Some(c) = &sink.contract {
        // The sink's contract is what it may be handed: a violation is the
        // event's fault, found before the sink is called.
        if let Err(e) = check_contract(c, sink, "input", std::slice::from_ref(&event)) {
            note(
                sink,
                began.elapsed(),
                CallCost::default(),
                e.kind.as_str(),
                0,
            );
            return Outcome::Failed(None, e);
        }
    }
    let started = Instant::now();
    let offset = started - began;
    let (result, cost) = match &pipeline.batcher {
        // The batch's call is timed, rate-limited and logged by the batcher.
        Some(batcher) => batcher.deliver(event, redact.clone()).await,
        None => {
            if let Some(limiter) = &pipeline.limiter {
                limiter.acquire().await;
            }
            let called = sandbox
                .deliver(
                    &sink.plugin,
                    &sink.config_json,
                    context(pipeline, sink, record, redact),
                    &event,
                )
                .instrument(tracing::debug_span!("step", step = %sink.label))
                .await;
            if let Some(h) = pipeline.step_latency.last() {
                h.observe(started.elapsed());
            }
            called
        }
    };
    observe(
        engine,
        canary,
        result.as_ref().map(|_| ()).map_err(|e| e.kind),
        started.elapsed(),
    );
    match result {
        Ok(receipt) => {
            note(sink, offset, cost, "ok", 1);
            Outcome::Delivered(receipt)
        }
        Err(e) => {
            note(sink, offset, cost, e.kind.as_str(), 0);
            *on_candidate = canary.filter(|(_, cand)| *cand).map(|(c, _)| c.clone());
            Outcome::Failed(None, e)
        }
    }
}

/// The routes an event takes, by their `when` on its payload (JSON, or
/// nothing to point into) and headers; filtered when it takes none.
fn route(pipeline: &Pipeline, event: WitEvent, began: Instant, runs: &mut Vec<StepRun>) -> Outcome {
    let started = Instant::now();
    let doc = serde_json::from_slice(&event.payload).unwrap_or(serde_json::Value::Null);
    let chosen: Vec<usize> = (0..pipeline.routes.len())
        .filter(|&i| pipeline.routes[i].takes(&doc, &event.headers))
        .collect();
    let label = "routes".to_string();
    runs.push(StepRun {
        step: label.clone(),
        offset_us: (started - began).as_micros() as u64,
        duration_us: started.elapsed().as_micros() as u64,
        outcome: if chosen.is_empty() { "filtered" } else { "ok" }.to_string(),
        events_out: chosen.len() as u32,
        fuel: 0,
        memory_bytes: 0,
    });
    if chosen.is_empty() {
        return Outcome::Filtered(format!("{label} (no route's `when` holds)"));
    }
    Outcome::Routed(chosen, event)
}

/// A step's output within the pipeline's `max_split`.
fn within_max_split(
    pipeline: &Pipeline,
    step: &Step,
    out: Vec<WitEvent>,
) -> Result<Vec<WitEvent>, CallError> {
    if out.len() <= pipeline.config.max_split {
        return Ok(out);
    }
    Err(CallError {
        kind: crate::store::ErrorKind::InvalidInput,
        message: format!(
            "{} split the event into {} events, more than the pipeline's max_split = {}; raise max_split if the split is meant",
            step.label,
            out.len(),
            pipeline.config.max_split
        ),
        retry_after_ms: None,
    })
}

/// Events against a step's contract (a transform's output, the sink's
/// input): every event must conform, or the attempt fails as
/// `invalid-input` naming each violation.
fn check_contract(
    contract: &crate::contract::Contract,
    step: &Step,
    what: &str,
    out: &[WitEvent],
) -> Result<(), CallError> {
    for (i, e) in out.iter().enumerate() {
        let violations = contract.check_bytes(&e.payload);
        if !violations.is_empty() {
            return Err(CallError {
                kind: crate::store::ErrorKind::InvalidInput,
                message: format!(
                    "{what} {} of {} breaks the contract {}: {}",
                    i + 1,
                    step.label,
                    contract.file,
                    crate::contract::summary(&violations)
                ),
                retry_after_ms: None,
            });
        }
    }
    Ok(())
}

/// Whether to try again, and when.
fn next_attempt(
    pipeline: &Pipeline,
    step: &Step,
    record: &EventRecord,
    attempt: u32,
    error: &CallError,
    now: u64,
) -> Option<u64> {
    if !error.kind.retryable() {
        return None;
    }
    let policy = step.retry.as_ref().unwrap_or(&pipeline.retry);
    let round_attempt = attempt.saturating_sub(record.round_base);
    if !policy.may_retry(round_attempt) {
        return None;
    }
    let due = now + policy.delay_ms(round_attempt, error.retry_after_ms, &mut rand::rng());
    match policy.max_elapsed_ms() {
        Some(limit) if due.saturating_sub(record.round_started_ms()) > limit => None,
        _ => Some(due),
    }
}

fn record_outcome(
    engine: &Engine,
    pipeline: &Pipeline,
    record: Arc<EventRecord>,
    job: &Job,
    outcome: Outcome,
    ran: Ran,
) -> Ticket {
    let Ran {
        started_at_ms,
        duration_us,
        steps,
        on_candidate,
    } = ran;
    let store = &engine.inner.store;
    let synthetic = record.synthetic().map(str::to_string);
    let stats = pipeline.stats_for(synthetic.is_some());
    // The attempt holds the only handle as a rule: the record is updated
    // in place, its payload not copied.
    let mut next = Arc::try_unwrap(record).unwrap_or_else(|shared| (*shared).clone());
    let now = now_ms();
    let mut then = AfterAttempt::Finished { at_ms: now };
    // How it leaves the queue, counted once that is durable (a retry
    // leaves nothing).
    let mut left = Left::Delivered;
    let mut children = Vec::new();
    let attempt_outcome = match outcome {
        Outcome::Split(i, out) => {
            let step = &pipeline.steps[i];
            children = super::split::children(&next, i, out);
            tracing::debug!(step = %step.label, children = children.len(), "split");
            left = Left::Split;
            next.state = EventState::Split;
            next.lineage.children = children.iter().map(|c| c.id).collect();
            AttemptOutcome::Split {
                step: step.label.clone(),
                children: children.len() as u32,
            }
        }
        Outcome::Routed(chosen, event) => {
            let names: Vec<&str> = chosen
                .iter()
                .map(|&i| pipeline.routes[i].name.as_str())
                .collect();
            let step = format!("routes ({})", names.join(", "));
            let targets: Vec<&str> = chosen
                .iter()
                .map(|&i| pipeline.routes[i].pipeline.as_str())
                .collect();
            children = super::split::routed(&next, &targets, event);
            tracing::debug!(routes = %names.join(","), "routed");
            left = Left::Split;
            next.state = EventState::Split;
            next.lineage.children = children.iter().map(|c| c.id).collect();
            AttemptOutcome::Split {
                step,
                children: children.len() as u32,
            }
        }
        Outcome::Delivered(receipt) => {
            tracing::debug!(receipt = %receipt, duration_us, "delivered");
            left = Left::Delivered;
            let latency_ms = now.saturating_sub(next.received_at_ms);
            match &synthetic {
                Some(check) => engine.synthetic_result(pipeline, check, Ok(latency_ms)),
                None => {
                    pipeline
                        .latency
                        .observe(std::time::Duration::from_millis(latency_ms));
                    pipeline.observe(&next, Seen::Delivered { latency_ms });
                }
            }
            next.state = EventState::Delivered;
            AttemptOutcome::Delivered { receipt }
        }
        Outcome::Filtered(step) => {
            tracing::debug!(step = %step, "filtered out");
            left = Left::Filtered;
            if let Some(check) = &synthetic {
                engine.synthetic_result(pipeline, check, Err(format!("filtered out by {step}")));
            }
            next.state = EventState::Filtered;
            AttemptOutcome::Filtered { step }
        }
        Outcome::Failed(at, error) => {
            let step = match at {
                Some(i) => &pipeline.steps[i],
                None => pipeline
                    .sink
                    .as_ref()
                    .expect("only a pipeline with a sink has a sink failure"),
            };
            // The version that failed, for the history and the log.
            let ran_on = step
                .canary
                .as_ref()
                .filter(|_| on_candidate.is_some())
                .map_or(step, |c| &*c.candidate);
            let round_attempt = job.attempt.saturating_sub(next.round_base);
            let mut retry_at_ms = next_attempt(pipeline, step, &next, job.attempt, &error, now);
            if retry_at_ms.is_none()
                && let Some(c) = on_candidate
                    .as_ref()
                    .filter(|c| c.state() != super::canary::CanaryState::Promoted)
            {
                // The candidate would dead-letter an event the baseline may
                // deliver: the candidate goes, the event is tried again on
                // the baseline at once, with a fresh round of retries.
                c.roll_back_now(
                    engine.store(),
                    format!(
                        "it {} event {} ({}: {})",
                        if error.kind.retryable() {
                            "ran out of attempts on"
                        } else {
                            "would dead-letter"
                        },
                        next.id,
                        error.kind.as_str(),
                        error.message
                    ),
                );
                next.round_base = job.attempt;
                retry_at_ms = Some(now);
            }
            if let Some(due) = retry_at_ms {
                tracing::warn!(step = %ran_on.label, kind = error.kind.as_str(), retry_in_ms = due - now,
                    "attempt {round_attempt} failed: {}", error.message);
                stats.retried.fetch_add(1, Ordering::Relaxed);
                then = AfterAttempt::Retry {
                    due_ms: due,
                    attempt: job.attempt + 1,
                };
            } else {
                let why = if !error.kind.retryable() {
                    format!("{} errors are not retried", error.kind.as_str())
                } else {
                    format!("gave up after {round_attempt} attempts")
                };
                tracing::error!(step = %ran_on.label, kind = error.kind.as_str(),
                    "dead-lettered ({why}): {}", error.message);
                left = Left::DeadLettered;
                match &synthetic {
                    Some(check) => engine.synthetic_result(
                        pipeline,
                        check,
                        Err(format!(
                            "dead-lettered at {}: {}",
                            ran_on.label, error.message
                        )),
                    ),
                    None => {
                        let invalid = error.kind == ErrorKind::InvalidInput;
                        pipeline.observe(&next, Seen::DeadLettered { invalid });
                        super::guard::act(engine, pipeline);
                    }
                }
                next.state = EventState::DeadLettered;
                then = AfterAttempt::DeadLettered { at_ms: now };
            }
            AttemptOutcome::Failed {
                step: ran_on.label.clone(),
                kind: error.kind,
                message: error.message,
                retry_at_ms,
            }
        }
    };
    next.attempts.push(Attempt {
        number: job.attempt,
        started_at_ms,
        duration_us,
        outcome: attempt_outcome,
        steps,
    });
    if !children.is_empty() {
        let after = super::split::after_split(engine, job, &children, synthetic.is_some());
        return store.split(&next, job.entry(), &children, Some(after));
    }
    // A dead letter whose sink may have applied part of it is compensated,
    // queued in the same write.
    let compensation = match then {
        AfterAttempt::DeadLettered { .. } if synthetic.is_none() => {
            super::compensate::plan(engine, pipeline, &mut next)
        }
        _ => None,
    };
    let next = Arc::new(next);
    let engine2 = engine.clone();
    let after: AfterCommit = if let AfterAttempt::Retry { due_ms, attempt } = then {
        let job2 = Job {
            pipeline: job.pipeline.clone(),
            id: job.id,
            attempt,
            due_ms,
            order_key: job.order_key.clone(),
            record: Job::keep(&next),
        };
        Box::new(move || engine2.schedule(job2))
    } else {
        // Finished, once durable: it leaves the queue's count, and the next
        // event of the same key may go.
        let (id, key, name) = (job.id, job.order_key.clone(), job.pipeline.clone());
        let synthetic = synthetic.is_some();
        Box::new(move || engine2.finished(&name, key.as_deref(), id, left, synthetic))
    };
    match (then, compensation) {
        (AfterAttempt::DeadLettered { at_ms }, Some(c)) => {
            store.dead_letter_compensated(&next, job.entry(), at_ms, c, Some(after))
        }
        _ => store.record_attempt(&next, job.entry(), then, Some(after)),
    }
}
