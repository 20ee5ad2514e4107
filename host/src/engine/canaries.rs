//! The engine's side of canaries: their views for the API and `/metrics`,
//! and promote and rollback by hand.

use super::canary::{CanaryAction, CanaryState, CanaryView};
use super::handle::Engine;
use super::pipeline::Step;
use crate::histogram::Histogram;

impl Engine {
    /// The canaries of `pipeline`, by step.
    pub fn canaries(&self, pipeline: &str) -> Vec<CanaryView> {
        let Some(p) = self.inner.pipelines.get(pipeline) else {
            return Vec::new();
        };
        p.steps
            .iter()
            .chain(&p.sink)
            .filter_map(|s| s.canary.as_ref().map(|c| c.state.view(&s.plugin.name)))
            .collect()
    }

    /// The latency histograms of `pipeline`'s canaries: (step, baseline, candidate).
    pub fn canary_latencies(&self, pipeline: &str) -> Vec<(String, [&Histogram; 2])> {
        let Some(p) = self.inner.pipelines.get(pipeline) else {
            return Vec::new();
        };
        p.steps
            .iter()
            .chain(&p.sink)
            .filter_map(|s| {
                s.canary
                    .as_ref()
                    .map(|c| (c.state.place().to_string(), c.state.latencies()))
            })
            .collect()
    }

    /// Promote or roll back a canary of `pipeline` by hand: the one at
    /// `step` (`1`, `2`, …, `sink`), or its only one. Returns the canary
    /// as it is now.
    pub async fn canary_action(
        &self,
        pipeline: &str,
        step: Option<&str>,
        action: CanaryAction,
        actor: &str,
    ) -> Result<CanaryView, String> {
        let p = self.pipeline(pipeline).map_err(|e| e.to_string())?;
        let with: Vec<&Step> = p
            .steps
            .iter()
            .chain(&p.sink)
            .filter(|s| s.canary.is_some())
            .collect();
        let place = |s: &Step| {
            s.canary
                .as_ref()
                .map(|c| c.state.place().to_string())
                .unwrap_or_default()
        };
        let chosen: Vec<&&Step> = match step {
            None => with.iter().collect(),
            Some(want) => {
                let want = if want == "sink" {
                    "sink".to_string()
                } else {
                    format!("step {want}")
                };
                with.iter().filter(|s| place(s) == want).collect()
            }
        };
        let s = match chosen.as_slice() {
            [one] => **one,
            [] => {
                return Err(format!(
                    "pipeline {pipeline:?} has no canary{}; canaries are set in weft.toml with canary = {{ plugin = \"…\", share = … }}",
                    step.map(|s| format!(" at step {s}")).unwrap_or_default()
                ));
            }
            many => {
                return Err(format!(
                    "pipeline {pipeline:?} has canaries at {}: name one with --step",
                    many.iter().map(|s| place(s)).collect::<Vec<_>>().join(", ")
                ));
            }
        };
        let canary = &s.canary.as_ref().expect("filtered on canary").state;
        let (to, why) = match action {
            CanaryAction::Promote => (CanaryState::Promoted, "promoted by hand"),
            CanaryAction::Rollback => (CanaryState::RolledBack, "rolled back by hand"),
        };
        canary.set(self.store(), to, actor, why).await;
        Ok(canary.view(&s.plugin.name))
    }
}
