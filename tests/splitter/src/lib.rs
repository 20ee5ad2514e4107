//! A transform that splits one event into `n` events (the payload's `/n`),
//! each `{"parent": <the parent's id field>, "i": <1-based position>}`:
//! what the tests of splits use.

use weft_sdk::{Error, Event, Plugin, PluginInfo, Result, Transform};

/// The plugin; it has no settings.
pub struct Splitter;

impl Plugin for Splitter {
    type Config = serde_json::Value;

    fn describe() -> PluginInfo {
        PluginInfo::new("splitter", env!("CARGO_PKG_VERSION"))
    }

    fn new(_config: serde_json::Value) -> Result<Self> {
        Ok(Splitter)
    }
}

impl Transform for Splitter {
    fn transform(&mut self, event: Event) -> Result<Vec<Event>> {
        let doc = event.json()?;
        let n = doc["n"]
            .as_u64()
            .ok_or_else(|| Error::invalid_input("the payload has no number /n"))?;
        let parent = doc["id"].clone();
        Ok((1..=n)
            .map(|i| {
                let mut child = event.clone();
                child.payload = serde_json::json!({ "parent": parent, "i": i })
                    .to_string()
                    .into_bytes();
                child
            })
            .collect())
    }
}

weft_sdk::export!(transform: Splitter);
