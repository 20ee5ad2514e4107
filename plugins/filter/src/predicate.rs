//! Predicates on JSON pointers and the keep/drop rule built from them.

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

/// The `config` table of a filter step. An event is kept when every field in
/// `require` is present (not null), every condition in `all` holds, at least
/// one in `any` holds (when `any` is given), and none in `none` holds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Pointers that must be present and not null.
    #[serde(default)]
    pub require: Vec<String>,
    /// Conditions that must all hold.
    #[serde(default)]
    pub all: Vec<Condition>,
    /// Conditions of which at least one must hold.
    #[serde(default)]
    pub any: Vec<Condition>,
    /// Conditions of which none may hold.
    #[serde(default)]
    pub none: Vec<Condition>,
}

/// One test on the value at `pointer`. Exactly one operator is set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// JSON pointer to the value tested.
    pub pointer: String,
    /// The value is present and not null (`true`) or absent or null (`false`).
    pub exists: Option<bool>,
    /// The value equals this JSON value.
    pub equals: Option<Value>,
    /// The value differs from this JSON value (absent counts as different).
    pub not_equals: Option<Value>,
    /// The value is one of these.
    #[serde(rename = "in")]
    pub one_of: Option<Vec<Value>>,
    /// The value is a string matching this regular expression.
    pub matches: Option<String>,
    /// The value is a number greater than this.
    pub gt: Option<f64>,
    /// The value is a number greater than or equal to this.
    pub gte: Option<f64>,
    /// The value is a number less than this.
    pub lt: Option<f64>,
    /// The value is a number less than or equal to this.
    pub lte: Option<f64>,
}

/// A condition checked and compiled once.
#[derive(Debug)]
enum Test {
    Exists(bool),
    Equals(Value),
    NotEquals(Value),
    OneOf(Vec<Value>),
    Matches(Regex),
    Compare(fn(f64, f64) -> bool, f64),
}

/// A compiled condition.
#[derive(Debug)]
pub struct Compiled {
    pointer: String,
    test: Test,
}

/// The compiled rule.
#[derive(Debug)]
pub struct Rule {
    require: Vec<String>,
    all: Vec<Compiled>,
    any: Vec<Compiled>,
    none: Vec<Compiled>,
}

impl Condition {
    fn compile(self, at: &str) -> Result<Compiled, String> {
        if !self.pointer.starts_with('/') {
            return Err(format!(
                "{at}: pointer {:?} is not a JSON pointer; write it like \"/email\"",
                self.pointer
            ));
        }
        let mut tests = Vec::new();
        if let Some(b) = self.exists {
            tests.push(Test::Exists(b));
        }
        if let Some(v) = self.equals {
            tests.push(Test::Equals(v));
        }
        if let Some(v) = self.not_equals {
            tests.push(Test::NotEquals(v));
        }
        if let Some(v) = self.one_of {
            tests.push(Test::OneOf(v));
        }
        if let Some(re) = self.matches {
            let re = Regex::new(&re).map_err(|e| format!("{at}: bad regex {re:?}: {e}"))?;
            tests.push(Test::Matches(re));
        }
        for (limit, op) in [
            (self.gt, (|a, b| a > b) as fn(f64, f64) -> bool),
            (self.gte, |a, b| a >= b),
            (self.lt, |a, b| a < b),
            (self.lte, |a, b| a <= b),
        ] {
            if let Some(l) = limit {
                tests.push(Test::Compare(op, l));
            }
        }
        match tests.len() {
            1 => Ok(Compiled {
                pointer: self.pointer,
                test: tests.remove(0),
            }),
            0 => Err(format!(
                "{at}: condition on {} has no operator; use one of exists, equals, not_equals, in, matches, gt, gte, lt, lte",
                self.pointer
            )),
            _ => Err(format!(
                "{at}: condition on {} has several operators; split it into one condition per operator",
                self.pointer
            )),
        }
    }
}

impl Compiled {
    fn holds(&self, doc: &Value) -> bool {
        let v = doc.pointer(&self.pointer).filter(|v| !v.is_null());
        match (&self.test, v) {
            (Test::Exists(want), v) => v.is_some() == *want,
            (Test::Equals(want), Some(v)) => json_eq(v, want),
            (Test::NotEquals(want), v) => !v.is_some_and(|v| json_eq(v, want)),
            (Test::OneOf(list), Some(v)) => list.iter().any(|w| json_eq(v, w)),
            (Test::Matches(re), Some(Value::String(s))) => re.is_match(s),
            (Test::Compare(op, limit), Some(Value::Number(n))) => {
                n.as_f64().is_some_and(|n| op(n, *limit))
            }
            _ => false,
        }
    }
}

/// Equality that treats `1` and `1.0` as the same number.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

impl Config {
    /// Check and compile the configuration; the error names the key.
    pub fn compile(self) -> Result<Rule, String> {
        for p in &self.require {
            if !p.starts_with('/') {
                return Err(format!(
                    "require: {p:?} is not a JSON pointer; write it like \"/email\""
                ));
            }
        }
        let list = |key: &str, conds: Vec<Condition>| -> Result<Vec<Compiled>, String> {
            conds
                .into_iter()
                .enumerate()
                .map(|(i, c)| c.compile(&format!("{key}[{i}]")))
                .collect()
        };
        Ok(Rule {
            require: self.require,
            all: list("all", self.all)?,
            any: list("any", self.any)?,
            none: list("none", self.none)?,
        })
    }
}

impl Rule {
    /// Whether to keep the event; `Err` gives the reason it was dropped.
    pub fn verdict(&self, doc: &Value) -> Result<(), String> {
        if let Some(p) = self
            .require
            .iter()
            .find(|p| doc.pointer(p).is_none_or(Value::is_null))
        {
            return Err(format!("required field {p} is missing"));
        }
        if let Some(c) = self.all.iter().find(|c| !c.holds(doc)) {
            return Err(format!("condition on {} does not hold", c.pointer));
        }
        if !self.any.is_empty() && !self.any.iter().any(|c| c.holds(doc)) {
            return Err("no condition in `any` holds".to_string());
        }
        if let Some(c) = self.none.iter().find(|c| c.holds(doc)) {
            return Err(format!("excluding condition on {} holds", c.pointer));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> Rule {
        serde_json::from_value::<Config>(v)
            .unwrap()
            .compile()
            .unwrap()
    }

    fn compile_err(v: Value) -> String {
        match serde_json::from_value::<Config>(v) {
            Ok(c) => c.compile().unwrap_err(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn require_drops_missing_and_null() {
        let r = rule(json!({"require": ["/email"]}));
        assert!(r.verdict(&json!({"email": "a@b"})).is_ok());
        assert_eq!(
            r.verdict(&json!({"email": null})).unwrap_err(),
            "required field /email is missing"
        );
        assert!(r.verdict(&json!({})).is_err());
    }

    #[test]
    fn every_operator() {
        let doc = json!({"country": "US", "age": 30, "email": "ann@example.com", "vip": true});
        let holds = |c: Value| rule(json!({"all": [c]})).verdict(&doc).is_ok();
        assert!(holds(json!({"pointer": "/vip", "exists": true})));
        assert!(holds(json!({"pointer": "/nope", "exists": false})));
        assert!(holds(json!({"pointer": "/country", "equals": "US"})));
        assert!(!holds(json!({"pointer": "/country", "equals": "us"})));
        assert!(holds(json!({"pointer": "/age", "equals": 30.0})));
        assert!(holds(json!({"pointer": "/country", "not_equals": "DE"})));
        assert!(holds(json!({"pointer": "/nope", "not_equals": "DE"})));
        assert!(holds(json!({"pointer": "/country", "in": ["CA", "US"]})));
        assert!(!holds(json!({"pointer": "/country", "in": ["CA"]})));
        assert!(holds(
            json!({"pointer": "/email", "matches": "@example\\.com$"})
        ));
        assert!(!holds(json!({"pointer": "/age", "matches": "3"})));
        assert!(holds(json!({"pointer": "/age", "gte": 30})));
        assert!(!holds(json!({"pointer": "/age", "gt": 30})));
        assert!(holds(json!({"pointer": "/age", "lt": 30.5})));
        assert!(holds(json!({"pointer": "/age", "lte": 30})));
        assert!(!holds(json!({"pointer": "/country", "gt": 1})));
    }

    #[test]
    fn any_and_none() {
        let r = rule(json!({
            "any": [{"pointer": "/a", "exists": true}, {"pointer": "/b", "exists": true}],
            "none": [{"pointer": "/test", "equals": true}],
        }));
        assert!(r.verdict(&json!({"b": 1})).is_ok());
        assert_eq!(
            r.verdict(&json!({"c": 1})).unwrap_err(),
            "no condition in `any` holds"
        );
        assert_eq!(
            r.verdict(&json!({"a": 1, "test": true})).unwrap_err(),
            "excluding condition on /test holds"
        );
    }

    #[test]
    fn bad_config_names_the_key() {
        assert!(compile_err(json!({"require": ["email"]})).starts_with("require: \"email\""));
        assert!(
            compile_err(json!({"all": [{"pointer": "/a"}]}))
                .starts_with("all[0]: condition on /a has no operator")
        );
        assert!(
            compile_err(json!({"any": [{"pointer": "/a", "gt": 1, "lt": 2}]}))
                .contains("several operators")
        );
        assert!(
            compile_err(json!({"none": [{"pointer": "/a", "matches": "("}]}))
                .starts_with("none[0]: bad regex")
        );
        assert!(compile_err(json!({"keep": []})).contains("unknown field `keep`"));
        assert!(
            compile_err(json!({"all": [{"pointer": "/a", "eq": 1}]}))
                .contains("unknown field `eq`")
        );
    }
}
