//! What can go wrong in the store.

use std::path::PathBuf;

/// A store failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The directory could not be opened.
    #[error("cannot open the store at {dir}: {reason}")]
    Open {
        /// The data directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// A write or flush failed; nothing was acknowledged.
    #[error("store write failed: {0}")]
    Write(String),
    /// A read failed.
    #[error("store read failed: {0}")]
    Read(String),
    /// The store is shutting down.
    #[error("the store is shutting down")]
    Closed,
}
