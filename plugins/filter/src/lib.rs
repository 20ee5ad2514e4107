//! filter: keep or drop events by predicates on JSON pointers and on the
//! metadata headers an event came with (such as `x-github-event`).
//!
//! A dropped event is not an error: the step returns no events and the host
//! records the event as filtered, with the reason in the debug log.

pub use weft_predicate as predicate;

use weft_sdk::{Error, Event, Plugin, PluginInfo, Result, Transform, log};

/// The plugin: one compiled keep/drop rule.
pub struct Filter {
    rule: predicate::Rule,
}

impl Plugin for Filter {
    type Config = predicate::Config;

    fn describe() -> PluginInfo {
        PluginInfo::new("filter", env!("CARGO_PKG_VERSION"))
            .config_schema(include_str!("../schema.json"))
    }

    fn new(config: predicate::Config) -> Result<Self> {
        let rule = config
            .compile()
            .map_err(|e| Error::fatal(format!("invalid config for plugin filter: {e}")))?;
        Ok(Filter { rule })
    }
}

impl Transform for Filter {
    fn transform(&mut self, event: Event) -> Result<Vec<Event>> {
        let doc = event.json()?;
        let on = predicate::Subjects {
            doc: &doc,
            headers: &event.headers,
        };
        match self.rule.verdict_on(&on) {
            Ok(()) => Ok(vec![event]),
            Err(reason) => {
                log::write(
                    log::Level::Debug,
                    "event filtered out",
                    &[("reason", &reason)],
                );
                Ok(Vec::new())
            }
        }
    }
}

weft_sdk::export!(transform: Filter);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_or_drops_whole_events() {
        let mut f =
            Filter::new(serde_json::from_value(json!({"require": ["/email"]})).unwrap()).unwrap();
        assert_eq!(
            f.transform(Event::from_json("a", &json!({"email": "x"})))
                .unwrap()
                .len(),
            1
        );
        assert!(
            f.transform(Event::from_json("b", &json!({"name": "x"})))
                .unwrap()
                .is_empty()
        );
        let mut bad = Event::from_json("c", &json!({}));
        bad.payload = b"{".to_vec();
        assert!(matches!(f.transform(bad), Err(Error::InvalidInput(_))));
    }
}
