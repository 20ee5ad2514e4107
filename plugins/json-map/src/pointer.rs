//! JSON Pointer (RFC 6901) get, set and remove on `serde_json::Value`.

use serde_json::{Map, Value};

/// Check that `p` is a non-empty JSON pointer; the error names the config key.
pub fn validate(key: &str, p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!(
            "{key}: {p:?} is not a JSON pointer; write it like \"/email\" or \"/address/city\""
        ));
    }
    Ok(())
}

fn tokens(p: &str) -> impl Iterator<Item = String> + '_ {
    p.split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
}

/// The value at `p`, treating `null` as absent.
pub fn get<'a>(v: &'a Value, p: &str) -> Option<&'a Value> {
    v.pointer(p).filter(|v| !v.is_null())
}

/// Set the value at `p`, creating objects on the way; fails if a parent is
/// not an object (or an array with that index).
pub fn set(root: &mut Value, p: &str, new: Value) -> Result<(), String> {
    let toks: Vec<String> = tokens(p).collect();
    let (last, parents) = toks
        .split_last()
        .ok_or_else(|| format!("{p}: empty pointer"))?;
    let mut cur = root;
    for t in parents {
        cur = match cur {
            Value::Object(m) => m
                .entry(t.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(a) => {
                let i: usize = t
                    .parse()
                    .map_err(|_| format!("{p}: {t:?} is not an array index"))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("{p}: index {i} is past the end of the array"))?
            }
            other => return Err(format!("{p}: cannot descend into {}", kind(other))),
        };
    }
    match cur {
        Value::Object(m) => {
            m.insert(last.clone(), new);
            Ok(())
        }
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("{p}: {last:?} is not an array index"))?;
            let slot = a
                .get_mut(i)
                .ok_or_else(|| format!("{p}: index {i} is past the end of the array"))?;
            *slot = new;
            Ok(())
        }
        other => Err(format!("{p}: cannot set a field inside {}", kind(other))),
    }
}

/// Remove and return the value at `p`, if any.
pub fn remove(root: &mut Value, p: &str) -> Option<Value> {
    let (parent, last) = p.rsplit_once('/')?;
    let last = last.replace("~1", "/").replace("~0", "~");
    let parent = if parent.is_empty() {
        root
    } else {
        root.pointer_mut(parent)?
    };
    match parent {
        Value::Object(m) => m.remove(&last),
        Value::Array(a) => {
            let i: usize = last.parse().ok()?;
            (i < a.len()).then(|| a.remove(i))
        }
        _ => None,
    }
}

/// A word for the JSON type of `v`, for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_creates_parents_and_remove_returns_value() {
        let mut v = json!({"a": {"b": 1}, "list": [1, 2]});
        set(&mut v, "/x/y", json!("z")).unwrap();
        assert_eq!(v["x"]["y"], "z");
        set(&mut v, "/list/1", json!(5)).unwrap();
        assert_eq!(v["list"], json!([1, 5]));
        assert_eq!(remove(&mut v, "/a/b"), Some(json!(1)));
        assert_eq!(remove(&mut v, "/a/missing"), None);
        assert!(set(&mut v, "/list/9", json!(1)).is_err());
        assert!(
            set(&mut v, "/x/y/z", json!(1))
                .unwrap_err()
                .contains("a string")
        );
    }

    #[test]
    fn escaped_tokens() {
        let mut v = json!({});
        set(&mut v, "/a~1b", json!(1)).unwrap();
        assert_eq!(v["a/b"], 1);
        assert_eq!(get(&v, "/a~1b"), Some(&json!(1)));
        assert_eq!(remove(&mut v, "/a~1b"), Some(json!(1)));
    }
}
