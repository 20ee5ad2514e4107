//! The store's own runtime, where its NATS connection lives: synchronous
//! reads wait on it from any thread (a runtime worker included), and
//! writes run on it in lanes, one lane per event, in the order given.

use crate::store::StoreError;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::mpsc;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Lanes of writes: writes to one event go through one lane, in order.
pub(super) const LANES: usize = 32;

/// Runs the store's futures.
pub(super) struct Caller {
    runtime: Option<tokio::runtime::Runtime>,
    lanes: Vec<mpsc::UnboundedSender<Job>>,
}

impl Caller {
    pub(super) fn new() -> std::io::Result<Caller> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weft-jetstream")
            .enable_all()
            .build()?;
        let lanes = (0..LANES)
            .map(|_| {
                let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
                runtime.spawn(async move {
                    while let Some(job) = rx.recv().await {
                        job.await;
                    }
                });
                tx
            })
            .collect();
        Ok(Caller {
            runtime: Some(runtime),
            lanes,
        })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .unwrap_or_else(|| unreachable!("the runtime lives as long as the caller"))
            .handle()
    }

    /// Run `fut` on the store's runtime and wait for it here.
    pub(super) fn wait<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle().spawn(async move {
            let _ = tx.send(fut.await);
        });
        let recv = move || rx.recv();
        let got = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(recv)
            }
            _ => recv(),
        };
        got.unwrap_or_else(|_| unreachable!("the store's runtime runs every job to the end"))
    }

    /// Run `fut` on the store's runtime; what it returns resolves with its
    /// result where it is awaited.
    pub(super) fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.handle().spawn(async move {
            let _ = tx.send(fut.await);
        });
        async move { rx.await.unwrap_or(Err(StoreError::Closed)) }
    }

    /// Run `fut` on the store's runtime, without waiting.
    pub(super) fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.handle().spawn(fut);
    }

    /// Queue `fut` on lane `lane` (taken modulo the lane count).
    pub(super) fn queue(&self, lane: usize, fut: impl Future<Output = ()> + Send + 'static) {
        let _ = self.lanes[lane % LANES].send(Box::pin(fut));
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
