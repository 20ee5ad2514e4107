//! weft's condition language: predicates on JSON pointers (and on the
//! metadata headers an event came with) and the keep/drop rule built from
//! them. The filter plugin keeps or drops events by a rule; the host routes
//! events to sinks by one.

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

/// The `config` table of a filter step. An event is kept when every field in
/// `require` is present (not null), every condition in `all` holds, at least
/// one in `any` holds (when `any` is given), and none in `none` holds.
#[derive(Debug, Clone, Default, Deserialize)]
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

/// One test on the value at `pointer`, or of the event's metadata
/// `header` (a provider header the host kept, such as `x-github-event`, as
/// a string). Exactly one of the two, and exactly one operator, is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// JSON pointer to the value tested.
    pub pointer: Option<String>,
    /// Name of the metadata header tested (any case).
    pub header: Option<String>,
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

/// What a condition looks at.
#[derive(Debug)]
enum Subject {
    Pointer(String),
    /// A header name, lower-cased.
    Header(String),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Pointer(p) => f.write_str(p),
            Subject::Header(h) => write!(f, "header {h}"),
        }
    }
}

/// A compiled condition.
#[derive(Debug)]
pub struct Compiled {
    subject: Subject,
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
        let subject = match (self.pointer, self.header) {
            (Some(p), None) if p.starts_with('/') => Subject::Pointer(p),
            (Some(p), None) => {
                return Err(format!(
                    "{at}: pointer {p:?} is not a JSON pointer; write it like \"/email\""
                ));
            }
            (None, Some(h)) if !h.is_empty() => Subject::Header(h.to_ascii_lowercase()),
            (None, Some(_)) => return Err(format!("{at}: header is empty")),
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{at}: a condition tests a pointer or a header, not both; split it in two"
                ));
            }
            (None, None) => {
                return Err(format!(
                    "{at}: a condition needs a pointer (\"/email\") or a header (\"x-github-event\")"
                ));
            }
        };
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
                subject,
                test: tests.remove(0),
            }),
            0 => Err(format!(
                "{at}: condition on {subject} has no operator; use one of exists, equals, not_equals, in, matches, gt, gte, lt, lte"
            )),
            _ => Err(format!(
                "{at}: condition on {subject} has several operators; split it into one condition per operator"
            )),
        }
    }
}

/// What a rule is checked against: the event's JSON body and its
/// metadata headers.
pub struct Subjects<'a> {
    /// The body.
    pub doc: &'a Value,
    /// Metadata headers, as the host hands them over.
    pub headers: &'a [(String, String)],
}

impl Compiled {
    fn holds(&self, on: &Subjects<'_>) -> bool {
        let header;
        let v = match &self.subject {
            Subject::Pointer(p) => on.doc.pointer(p).filter(|v| !v.is_null()),
            Subject::Header(name) => {
                header = on
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| Value::String(v.clone()));
                header.as_ref()
            }
        };
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
    /// Whether to keep an event with no metadata headers; `Err` gives the
    /// reason it was dropped.
    pub fn verdict(&self, doc: &Value) -> Result<(), String> {
        self.verdict_on(&Subjects { doc, headers: &[] })
    }

    /// Whether to keep the event; `Err` gives the reason it was dropped.
    pub fn verdict_on(&self, on: &Subjects<'_>) -> Result<(), String> {
        let doc = on.doc;
        if let Some(p) = self
            .require
            .iter()
            .find(|p| doc.pointer(p).is_none_or(Value::is_null))
        {
            return Err(format!("required field {p} is missing"));
        }
        if let Some(c) = self.all.iter().find(|c| !c.holds(on)) {
            return Err(format!("condition on {} does not hold", c.subject));
        }
        if !self.any.is_empty() && !self.any.iter().any(|c| c.holds(on)) {
            return Err("no condition in `any` holds".to_string());
        }
        if let Some(c) = self.none.iter().find(|c| c.holds(on)) {
            return Err(format!("excluding condition on {} holds", c.subject));
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
    fn conditions_on_metadata_headers() {
        let r = rule(json!({"all": [{"header": "X-GitHub-Event", "in": ["push", "release"]}]}));
        let doc = json!({"ref": "main"});
        let with = |kind: &str| {
            let headers = vec![("x-github-event".to_string(), kind.to_string())];
            r.verdict_on(&Subjects {
                doc: &doc,
                headers: &headers,
            })
        };
        assert!(with("push").is_ok());
        assert_eq!(
            with("issues").unwrap_err(),
            "condition on header x-github-event does not hold"
        );
        assert!(r.verdict(&doc).is_err(), "no header: the test fails");
        let absent = rule(json!({"none": [{"header": "x-slack-retry-num", "exists": true}]}));
        assert!(absent.verdict(&doc).is_ok());
        assert!(
            compile_err(json!({"all": [{"pointer": "/a", "header": "h", "exists": true}]}))
                .contains("not both")
        );
        assert!(compile_err(json!({"all": [{"exists": true}]})).contains("needs a pointer"));
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
