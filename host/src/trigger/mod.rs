//! Triggers: how events enter the host.

pub mod verify;
pub mod webhook;
