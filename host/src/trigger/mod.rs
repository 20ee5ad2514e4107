//! Triggers: how events enter the host.

pub mod webhook;
