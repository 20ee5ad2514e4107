//! Triggers: how events enter the host.

pub mod poll;
pub mod schedule;
pub mod verify;
pub mod webhook;
