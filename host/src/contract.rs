//! Data contracts: a JSON Schema (draft 2020-12) that a pipeline's webhook
//! payloads, or a step's output, must satisfy.

use std::path::Path;
use std::sync::Arc;

/// One way a document breaks its contract.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// JSON pointer to the offending value (`""` for the whole document).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

/// A compiled schema, named by its file.
#[derive(Clone)]
pub struct Contract {
    /// The schema file, for messages.
    pub file: String,
    validator: Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contract")
            .field("file", &self.file)
            .finish()
    }
}

/// Most violations reported for one document.
pub const MAX_VIOLATIONS: usize = 50;

impl Contract {
    /// Read and compile a schema file; formats (`email`, `date-time`, …) are checked.
    pub fn load(path: &Path) -> Result<Contract, String> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the contract {file}: {e}"))?;
        let schema: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("the contract {file} is not JSON: {e}"))?;
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| {
                format!("the contract {file} is not a valid JSON Schema (2020-12): {e}")
            })?;
        Ok(Contract {
            file,
            validator: Arc::new(validator),
        })
    }

    /// Every violation of `doc`, up to [`MAX_VIOLATIONS`]; empty when it conforms.
    pub fn check(&self, doc: &serde_json::Value) -> Vec<Violation> {
        self.validator
            .iter_errors(doc)
            .take(MAX_VIOLATIONS)
            .map(|e| Violation {
                pointer: e.instance_path().to_string(),
                message: e.to_string(),
            })
            .collect()
    }

    /// [`Contract::check`] on raw bytes; a body that is not JSON is one violation.
    pub fn check_bytes(&self, body: &[u8]) -> Vec<Violation> {
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(doc) => self.check(&doc),
            Err(e) => vec![Violation {
                pointer: String::new(),
                message: format!("not JSON: {e}"),
            }],
        }
    }
}

/// A pipeline's contracts at its webhook: one schema, or versions side by
/// side, the version named by a header or a payload field.
#[derive(Debug, Clone)]
pub enum Contracts {
    /// Every payload against this one.
    One(Contract),
    /// The payload's version picks its schema.
    Versions {
        /// Version → schema.
        by: std::collections::BTreeMap<String, Contract>,
        /// The header that names the version.
        header: Option<String>,
        /// The payload field that names it.
        pointer: Option<String>,
        /// The version of a payload that names none.
        default: Option<String>,
    },
}

impl Contracts {
    /// Load and compile every schema file of `config`.
    pub fn load(config: &crate::config::ContractConfig) -> Result<Contracts, String> {
        use crate::config::ContractConfig;
        Ok(match config {
            ContractConfig::File(f) => Contracts::One(Contract::load(f)?),
            ContractConfig::Versioned(v) => Contracts::Versions {
                by: v
                    .versions
                    .iter()
                    .map(|(k, f)| Contract::load(f).map(|c| (k.clone(), c)))
                    .collect::<Result<_, _>>()?,
                header: v.header.as_ref().map(|h| h.to_ascii_lowercase()),
                pointer: v.pointer.clone(),
                default: v.default.clone(),
            },
        })
    }

    /// The header that names the version, if the version comes from one.
    pub fn version_header(&self) -> Option<&str> {
        match self {
            Contracts::Versions {
                header: Some(h), ..
            } => Some(h),
            _ => None,
        }
    }

    /// The contract of a delivery with this version header (when the
    /// version comes from one) and body, and its version; or why none
    /// applies, naming the accepted versions.
    pub fn pick(
        &self,
        header_value: Option<&str>,
        body: &[u8],
    ) -> Result<(&Contract, Option<&str>), String> {
        let (by, header, pointer, default) = match self {
            Contracts::One(c) => return Ok((c, None)),
            Contracts::Versions {
                by,
                header,
                pointer,
                default,
            } => (by, header, pointer, default),
        };
        let accepted = by.keys().cloned().collect::<Vec<_>>().join(", ");
        let named: Option<String> = match (header, pointer) {
            (Some(_), _) => header_value.map(|v| v.trim().to_string()),
            (None, Some(p)) => serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|doc| {
                    doc.pointer(p).and_then(|v| match v {
                        serde_json::Value::String(s) => Some(s.clone()),
                        serde_json::Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    })
                }),
            (None, None) => None,
        };
        let source = match (header, pointer) {
            (Some(h), _) => format!("the {h} header"),
            (None, Some(p)) => format!("the payload's {p}"),
            (None, None) => "nothing".into(),
        };
        let version = match (named, default) {
            (Some(v), _) => v,
            (None, Some(d)) => d.clone(),
            (None, None) => {
                return Err(format!(
                    "the payload names no schema version ({source} is missing); accepted versions: {accepted}"
                ));
            }
        };
        match by.get_key_value(&version) {
            Some((v, c)) => Ok((c, Some(v.as_str()))),
            None => Err(format!(
                "schema version {version:?} (from {source}) is not accepted here; accepted versions: {accepted}"
            )),
        }
    }
}

/// Violations as one line: `/email: … ; /amount: …`.
pub fn summary(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| {
            let at = if v.pointer.is_empty() {
                "(document)"
            } else {
                &v.pointer
            };
            format!("{at}: {}", v.message)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_carry_pointers_and_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lead.json");
        std::fs::write(
            &path,
            r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                "required": ["id", "email"],
                "properties": {"id": {"type": "string"}, "email": {"type": "string", "format": "email"},
                               "amount_cents": {"type": "integer", "minimum": 0}}}"#,
        )
        .unwrap();
        let c = Contract::load(&path).unwrap();
        assert!(
            c.check(&serde_json::json!({"id": "a", "email": "a@b.example"}))
                .is_empty()
        );
        let v = c.check(&serde_json::json!({"email": "nope", "amount_cents": -5}));
        let pointers: Vec<&str> = v.iter().map(|v| v.pointer.as_str()).collect();
        assert!(pointers.contains(&""), "missing id: {v:?}");
        assert!(pointers.contains(&"/email"), "{v:?}");
        assert!(pointers.contains(&"/amount_cents"), "{v:?}");
        assert_eq!(c.check_bytes(b"{oops").len(), 1);
        std::fs::write(&path, r#"{"type": "nonsense"}"#).unwrap();
        let err = Contract::load(&path).unwrap_err();
        assert!(err.contains("not a valid JSON Schema"), "{err}");
    }
}
