//! json-map: config-driven normalisation of JSON events.
//!
//! Renames and drops fields, sets defaults, trims and re-cases strings,
//! reformats dates, turns integer cents into decimal strings and maps codes
//! through tables. A payload that does not fit is `invalid-input`, with the
//! field named.

pub mod mapping;
pub mod pointer;

use weft_sdk::{Error, Event, Plugin, PluginInfo, Result, Transform};

/// The plugin: one validated mapping.
pub struct JsonMap {
    mapping: mapping::Config,
}

impl Plugin for JsonMap {
    type Config = mapping::Config;

    fn describe() -> PluginInfo {
        PluginInfo::new("json-map", env!("CARGO_PKG_VERSION"))
            .config_schema(include_str!("../schema.json"))
    }

    fn new(config: mapping::Config) -> Result<Self> {
        config
            .validate()
            .map_err(|e| Error::fatal(format!("invalid config for plugin json-map: {e}")))?;
        Ok(JsonMap { mapping: config })
    }
}

impl Transform for JsonMap {
    fn transform(&mut self, mut event: Event) -> Result<Vec<Event>> {
        let mut doc = event.json()?;
        self.mapping.apply(&mut doc).map_err(Error::invalid_input)?;
        event.set_json(&doc)?;
        Ok(vec![event])
    }
}

weft_sdk::export!(transform: JsonMap);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn transform_maps_the_payload_and_keeps_the_envelope() {
        let mut p =
            JsonMap::new(serde_json::from_value(json!({"lowercase": ["/e"]})).unwrap()).unwrap();
        let out = p
            .transform(Event::from_json("k1", &json!({"e": "A@B.C"})))
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key, "k1");
        assert_eq!(out[0].json().unwrap(), json!({"e": "a@b.c"}));
    }

    #[test]
    fn bad_payloads_are_invalid_input_and_bad_config_is_fatal() {
        let mut p =
            JsonMap::new(serde_json::from_value(json!({"lowercase": ["/e"]})).unwrap()).unwrap();
        let mut ev = Event::from_json("k", &json!({}));
        ev.payload = b"not json".to_vec();
        assert!(matches!(p.transform(ev), Err(Error::InvalidInput(_))));
        let err = JsonMap::new(serde_json::from_value(json!({"drop": ["x"]})).unwrap())
            .err()
            .unwrap();
        assert!(matches!(err, Error::Fatal(m) if m.contains("drop: \"x\" is not a JSON pointer")));
    }
}
