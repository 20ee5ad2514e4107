//! What the server serves now: the engine, triggers and API state of the
//! configuration in force, replaced whole when the host reloads.

pub use super::api::{Reload, ReloadResult};

use super::api::ApiState;
use crate::engine::Engine;
use crate::trigger::Triggers;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

/// One configuration's running parts, as requests see them.
pub struct Current {
    /// Its engine.
    pub engine: Engine,
    /// Its triggers (webhooks by pipeline).
    pub triggers: Arc<Triggers>,
    /// Its admin API tokens and plugins.
    pub api: ApiState,
}

/// The configuration in force, and how to change it.
pub struct Live {
    current: RwLock<Arc<Current>>,
    reload: OnceLock<Arc<dyn Reload>>,
    reloads: AtomicU64,
    failed_reloads: AtomicU64,
    /// One reload at a time; shutdown waits for the one in progress.
    reloading: tokio::sync::Mutex<()>,
}

impl Live {
    /// Serve `current` until it is replaced.
    pub fn new(current: Current) -> Arc<Live> {
        Arc::new(Live {
            current: RwLock::new(Arc::new(current)),
            reload: OnceLock::new(),
            reloads: AtomicU64::new(0),
            failed_reloads: AtomicU64::new(0),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// What is in force now.
    pub fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Put `next` in force; requests already in progress finish on what
    /// they started with.
    pub fn replace(&self, next: Current) -> Arc<Current> {
        std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|e| e.into_inner()),
            Arc::new(next),
        )
    }

    /// How the host reloads (set once, when it starts).
    pub fn set_reload(&self, reload: Arc<dyn Reload>) {
        let _ = self.reload.set(reload);
    }

    /// Reload on behalf of `by`, counting the outcome.
    pub async fn reload(&self, by: &str) -> ReloadResult {
        let Some(r) = self.reload.get() else {
            return Err(
                "this host was started from a configuration in memory; there is no file to reload"
                    .into(),
            );
        };
        let _one = self.reloading.lock().await;
        let result = r.reload(by).await;
        match &result {
            Ok(_) => self.reloads.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed_reloads.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    /// Wait for a reload in progress, and keep others from starting while
    /// the guard lives (for shutdown).
    pub async fn hold_reloads(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.reloading.lock().await
    }

    /// Reloads done, and reloads refused (nothing changed).
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads.load(Ordering::Relaxed),
            self.failed_reloads.load(Ordering::Relaxed),
        )
    }
}

impl Reload for Live {
    fn reload<'a>(
        &'a self,
        by: &'a str,
    ) -> Pin<Box<dyn Future<Output = ReloadResult> + Send + 'a>> {
        Box::pin(Live::reload(self, by))
    }
}
