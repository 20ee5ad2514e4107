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
    /// Another process (a running host) holds the store.
    #[error(
        "cannot open the store at {dir}: {reason}; is another weft process using this data directory? Stop it, or use the admin API of the running host"
    )]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// What the database said.
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
