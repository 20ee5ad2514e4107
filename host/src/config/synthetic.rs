//! `[[pipeline.synthetic]]`: a scheduled check event sent through the
//! real pipeline, marked as synthetic, to prove the path works before a
//! customer finds out it does not.

use super::trigger::ScheduleConfig;
use super::values::empty_object;
use serde::Deserialize;

/// One synthetic check of a pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// The check's name (in the history, the status and the metrics).
    pub name: String,
    /// When it runs: `schedule = { cron = "0 */5 * * * *" }` (`tz` as in
    /// a schedule trigger; missed runs are skipped).
    pub schedule: ScheduleConfig,
    /// The event's JSON payload.
    #[serde(default = "empty_object")]
    pub payload: serde_json::Value,
}

impl SyntheticConfig {
    pub(super) fn validate(&self, at: &str) -> Result<(), String> {
        let at = format!("{at}.synthetic {:?}", self.name);
        if !super::values::valid_pipeline_name(&self.name) {
            return Err(format!(
                "{at}: name must be non-empty and use only letters, digits, '-' and '_'"
            ));
        }
        self.schedule
            .schedule()
            .map_err(|e| format!("{at}: schedule: {e}"))?;
        Ok(())
    }
}
