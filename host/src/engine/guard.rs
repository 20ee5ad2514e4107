//! Acting on what the objectives and the synthetic checks see: the
//! quality gate pausing a pipeline (durably, audited) or warning, a
//! contract refusal counted at the gate, and a synthetic run's result
//! counted in the checks of the pipeline that sent it.

use super::objectives::{Seen, Verdict};

impl super::handle::Engine {
    /// A webhook of `pipeline` was refused for breaking its contract: the
    /// quality gate counts it.
    pub fn refused_by_contract(&self, pipeline: &str) {
        if let Some(p) = self.inner.pipelines.get(pipeline)
            && let Some(o) = &p.objectives
        {
            o.record(crate::store::now_ms(), Seen::Refused);
            act(self, p);
        }
    }
}

/// Let the pipeline's gate judge now, and act on what it says: pause
/// (once, durably, audited) or warn.
pub(super) fn act(engine: &super::handle::Engine, p: &super::pipeline::Pipeline) {
    let Some(o) = &p.objectives else {
        return;
    };
    match o.judge(crate::store::now_ms()) {
        Some(Verdict::Pause(why)) if o.start_pause() => {
            let (engine, name) = (engine.clone(), p.name.to_string());
            tracing::error!(pipeline = %name, "{why}; pausing delivery (events are still accepted and kept); resume with `weft pipeline resume {name}` once the cause is fixed");
            tokio::spawn(async move {
                let detail = match engine.pause_for(&name, &why).await {
                    Ok(()) => why,
                    Err(e) => format!("{why}; the pause failed: {e}"),
                };
                let store = engine.store();
                if let Err(e) = store.audit().append(crate::store::AuditEntry {
                    kind: "quality",
                    actor: "weft".into(),
                    pipeline: name,
                    action: "pause".into(),
                    detail,
                }) {
                    tracing::error!(
                        "could not write the quality gate's pause to the audit log: {e}"
                    );
                }
                let _ = store.flush().await;
            });
        }
        Some(Verdict::Warn(why)) => tracing::warn!(
            pipeline = %p.name,
            "{why}; dead-lettering the invalid events and delivering the rest (action = \"dead-letter-only\")"
        ),
        _ => {}
    }
}

impl super::handle::Engine {
    /// A synthetic run of `pipeline`'s `check` was not accepted.
    pub fn synthetic_refused(&self, pipeline: &str, check: &str, why: String) {
        if let Some(p) = self.inner.pipelines.get(pipeline) {
            p.synthetic.sent(check);
            tracing::warn!(pipeline, check, "synthetic check failed: {why}");
            p.synthetic.failed(check, why);
        }
    }

    /// A synthetic run's outcome in `pipeline` (a route's pipeline counts it
    /// in its parent's checks): `Ok` with its latency, or why it failed.
    pub(super) fn synthetic_result(
        &self,
        pipeline: &super::pipeline::Pipeline,
        check: &str,
        result: Result<u64, String>,
    ) {
        let root = pipeline
            .config
            .route_of
            .as_ref()
            .and_then(|r| self.inner.pipelines.get(&r.parent))
            .map_or(pipeline, |p| p.as_ref());
        match result {
            Ok(latency_ms) => root.synthetic.ok(check, crate::store::now_ms(), latency_ms),
            Err(why) => {
                tracing::warn!(pipeline = %pipeline.name, check, "synthetic check failed: {why}");
                root.synthetic.failed(check, why);
            }
        }
    }
}
