//! What can go wrong in the engine.

use crate::store::StoreError;

/// Why the engine could not be built, or could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A pipeline's config, plugins or contracts do not fit together.
    #[error("{0}")]
    Build(String),
    /// No pipeline by that name.
    #[error("no pipeline by that name; configured pipelines: {known}")]
    UnknownPipeline {
        /// The name asked for.
        name: String,
        /// The configured names.
        known: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
