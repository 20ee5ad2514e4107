//! The engine: builds pipelines from the config and the loaded plugins,
//! accepts events durably, and moves each one through its steps and sink
//! with retries, backoff and dead letters.
//!
//! Delivery is at-least-once: an event leaves the queue only when its
//! outcome is written. Every delivery carries the event's idempotency key, so
//! a receiver can make the effect exactly-once.

mod accept;
mod breaker;
mod build;
mod dlq;
mod janitor;
mod order;
mod retry;
mod run;

pub use accept::{AcceptError, Accepted, Incoming};
pub use breaker::BreakerState;
pub use build::{BuildError, Engine, PipelineStats, PipelineStatus, Rejection};
pub use dlq::{
    DeadLetterView, EventView, ReplayOutcome, RunSummary, Selection, dead_letter_views,
    parse_since, purge, replay, run_history,
};
pub use retry::RetryPolicy;
