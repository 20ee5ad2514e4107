//! The engine: builds pipelines from the config and the loaded plugins,
//! accepts events durably, and moves each one through its steps and sink
//! with retries, backoff and dead letters.
//!
//! Delivery is at-least-once: an event leaves the queue only when its
//! outcome is written. Every delivery carries the event's idempotency key, so
//! a receiver can make the effect exactly-once.

mod accept;
mod build;
mod dlq;
mod janitor;
mod retry;
mod run;

pub use accept::{AcceptError, Accepted, Incoming};
pub use build::{BuildError, Engine, PipelineStats};
pub use dlq::{DeadLetterView, ReplayOutcome, dead_letter_views, replay};
pub use retry::RetryPolicy;
