//! A sandbox over a throw-away store, for commands that load plugins
//! without running a host (`check`, `audit`, `plugin inspect`).

use crate::sandbox::Sandbox;
use crate::secrets::Secrets;
use crate::store::Store;
use anyhow::{Context, Result};
use std::sync::Arc;

/// Fields drop in order: the directory goes last.
pub(super) struct Scratch {
    pub(super) sandbox: Arc<Sandbox>,
    pub(super) store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

impl Scratch {
    /// Room for plugins of up to `max_memory_mib`; with `secrets`, webhook
    /// verifiers and credentials are built from them as the host would.
    pub(super) fn new(max_memory_mib: u32, secrets: Option<Secrets>) -> Result<Scratch> {
        let dir = tempfile::tempdir().context("creating a scratch directory")?;
        let store = crate::store::open(&dir.path().join("store"))?;
        let mut sandbox = Sandbox::new(store.clone(), 16, max_memory_mib)?;
        if let Some(secrets) = secrets {
            sandbox = sandbox.with_secrets(Arc::new(secrets));
        }
        Ok(Scratch {
            sandbox: Arc::new(sandbox),
            store,
            _dir: dir,
        })
    }
}
