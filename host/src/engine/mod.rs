//! The engine: builds pipelines from the config and the loaded plugins,
//! accepts events durably, and moves each one through its steps and sink
//! with retries, backoff and dead letters.
//!
//! Delivery is at-least-once: an event leaves the queue only when its
//! outcome is written. Every delivery carries the event's idempotency key, so
//! a receiver can make the effect exactly-once. The engine does not know how
//! events arrive: triggers call [`Engine::accept`] and friends.

mod accept;
mod admin;
mod attempt;
mod batch;
mod batches;
mod breaker;
mod build;
mod canaries;
mod canary;
mod compensate;
mod dead_letters;
mod dispatch;
mod erasure;
mod error;
mod guard;
mod handle;
mod handover;
mod history;
mod inflight;
mod janitor;
mod job;
mod lease;
mod objectives;
mod order;
mod pipeline;
mod queue;
mod retry;
mod sequence;
mod split;
mod start;
mod stats;
mod synthetic;

pub use accept::{AcceptError, Accepted, BatchItem, Incoming, MAX_KEY_LEN};
pub use breaker::BreakerState;
pub use canary::{CanaryAction, CanaryState, CanaryView, VersionView, in_share};
pub use dead_letters::{
    DeadLetterView, ReplayOutcome, Selection, dead_letter_views, purge, purge_queued, replay,
};
pub use erasure::{EraseRequest, Erasure, erase};
pub use error::EngineError;
pub use handle::Engine;
pub use handover::{HandedOver, Switch};
pub use history::{EventView, RunSummary, parse_since, rfc3339, run_history};
pub use inflight::{Held, Inflight};
pub use lease::{LEASE_TTL, while_leased};
pub use objectives::{
    ALERTS, FreshnessReport, Objectives, ObjectivesReport, QualityReport, Seen, SliReport, Verdict,
    WINDOWS,
};
pub use retry::RetryPolicy;
pub use stats::{PipelineStats, PipelineStatus, Usage};
pub use synthetic::SyntheticView;
