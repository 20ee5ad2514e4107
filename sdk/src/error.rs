//! The error a plugin returns; the engine acts on its kind.

use std::fmt;

/// Why a plugin call failed. The host retries `Transient` and `RateLimited`
/// with backoff and dead-letters `InvalidInput` and `Fatal` at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Worth retrying with backoff (timeouts, 5xx, connection errors).
    Transient(String),
    /// Retry, but not before `retry_after_ms`.
    RateLimited {
        /// How long the engine waits before the next attempt.
        retry_after_ms: u64,
        /// What the upstream said.
        message: String,
    },
    /// The event breaks the plugin's contract; retrying cannot help.
    InvalidInput(String),
    /// A permanent failure, such as bad configuration or a 4xx refusal.
    Fatal(String),
}

/// `Result` with the plugin error as its default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A retryable failure.
    pub fn transient(msg: impl Into<String>) -> Self {
        Error::Transient(msg.into())
    }
    /// A retryable failure that must wait `retry_after_ms` first.
    pub fn rate_limited(retry_after_ms: u64, msg: impl Into<String>) -> Self {
        Error::RateLimited {
            retry_after_ms,
            message: msg.into(),
        }
    }
    /// The event is unacceptable; it goes to the dead-letter queue.
    pub fn invalid_input(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }
    /// A permanent failure; the event goes to the dead-letter queue.
    pub fn fatal(msg: impl Into<String>) -> Self {
        Error::Fatal(msg.into())
    }
    /// The same kind of error with its message rewritten by `f`.
    pub fn with_message(self, f: impl FnOnce(&str) -> String) -> Self {
        match self {
            Error::Transient(m) => Error::Transient(f(&m)),
            Error::RateLimited {
                retry_after_ms,
                message,
            } => Error::RateLimited {
                retry_after_ms,
                message: f(&message),
            },
            Error::InvalidInput(m) => Error::InvalidInput(f(&m)),
            Error::Fatal(m) => Error::Fatal(f(&m)),
        }
    }
    /// The message without the kind.
    pub fn message(&self) -> &str {
        match self {
            Error::Transient(m) | Error::InvalidInput(m) | Error::Fatal(m) => m,
            Error::RateLimited { message, .. } => message,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Transient(m) => write!(f, "transient: {m}"),
            Error::RateLimited {
                retry_after_ms,
                message,
            } => write!(f, "rate-limited ({retry_after_ms} ms): {message}"),
            Error::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Error::Fatal(m) => write!(f, "fatal: {m}"),
        }
    }
}

impl std::error::Error for Error {}
