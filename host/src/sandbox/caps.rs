//! What each imported interface lets a plugin do, which grant it needs, and
//! the comparison of a plugin's imports with its grant (used at load time and
//! by `weft audit`).

use crate::config::Grant;

/// A capability a plugin can ask for by importing an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Outbound HTTP (`wasi:http/outgoing-handler`): needs `http`.
    Http,
    /// Plugin state (`weft:plugin/kv`): needs `kv`.
    Kv,
    /// Host-held secrets (`weft:plugin/credentials`): needs `credentials` or `reveal`.
    Credentials,
    /// Publishing to message brokers (`weft:plugin/messaging`): needs `messaging`.
    Messaging,
    /// Raw sockets or the file system: never granted.
    Never,
    /// Always available and harmless (logs, clocks, random, stdio, types).
    Baseline,
    /// Not provided by the host at all.
    Unknown,
}

/// The capability behind an interface and what the host lets it do.
pub fn classify(interface: &str) -> (Capability, &'static str) {
    let name = interface.split('@').next().unwrap_or(interface);
    use Capability::*;
    match name {
        "wasi:http/outgoing-handler" => (Http, "outbound HTTP, only to the origins of its grant"),
        "weft:plugin/kv" => (Kv, "durable key-value state of its own, within its quota"),
        "weft:plugin/credentials" => (
            Credentials,
            "host-held secrets attached to its requests (raw values only if revealed)",
        ),
        "weft:plugin/messaging" => (
            Messaging,
            "publishing to message brokers, only to the subjects of its grant",
        ),
        "wasi:filesystem/preopens" | "wasi:filesystem/types" => {
            (Never, "file system: never granted to plugins")
        }
        n if n.starts_with("wasi:sockets/") => (Never, "raw sockets: never granted to plugins"),
        "weft:plugin/log" => (
            Baseline,
            "structured logs into the host log, capped per call",
        ),
        "wasi:http/types" => (Baseline, "HTTP request and response types"),
        "wasi:cli/environment" => (Baseline, "environment interface (empty for plugins)"),
        "wasi:cli/stdout" | "wasi:cli/stderr" => (
            Baseline,
            "output stream, sent to the host log, capped per call",
        ),
        "wasi:clocks/wall-clock" | "wasi:clocks/monotonic-clock" => (Baseline, "clocks"),
        "wasi:random/random" | "wasi:random/insecure" | "wasi:random/insecure-seed" => {
            (Baseline, "random numbers")
        }
        "weft:plugin/types" => (Baseline, "shared types (no functions)"),
        "wasi:io/poll" | "wasi:io/streams" | "wasi:io/error" => {
            (Baseline, "streams and polling (HTTP bodies, stdio)")
        }
        "wasi:cli/stdin" => (Baseline, "input stream (always empty)"),
        "wasi:cli/exit" => (Baseline, "exit (ends only the plugin's own call)"),
        n if n.starts_with("wasi:cli/terminal-") => {
            (Baseline, "terminal queries (never a terminal)")
        }
        _ => (
            Unknown,
            "not provided by weft: the plugin is refused at load",
        ),
    }
}

/// One difference between what a plugin imports and what its grant says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mismatch {
    /// `requested-not-granted` (the load is refused), `requested-none-granted`
    /// (credentials: loads, every request is denied) or `granted-not-used`.
    pub kind: &'static str,
    /// The interface or grant key concerned.
    pub subject: String,
    /// What it means and what to do.
    pub message: String,
}

/// Compare a plugin's imports with its grant.
pub fn compare(plugin: &str, imports: &[String], grant: &Grant) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let uses = |cap: Capability| imports.iter().any(|i| classify(i).0 == cap);
    let refuse = |i: &str, message: String| Mismatch {
        kind: "requested-not-granted",
        subject: i.to_string(),
        message,
    };
    for i in imports {
        match classify(i).0 {
            Capability::Http if grant.http.is_empty() => out.push(refuse(
                i,
                format!(
                    "it imports {i} (outbound HTTP) but grants.{plugin}.http is empty; add the origins it may call, e.g. http = [\"https://api.example.com\"]"
                ),
            )),
            Capability::Kv if grant.kv.is_none() => out.push(refuse(
                i,
                format!(
                    "it imports {i} (durable state) but grants.{plugin}.kv is not set; add kv = {{ quota_kib = 1024 }}"
                ),
            )),
            Capability::Messaging if grant.messaging.is_empty() => out.push(refuse(
                i,
                format!(
                    "it imports {i} (publishing to message brokers) but grants.{plugin}.messaging is empty; add the broker and subjects it may publish to, e.g. messaging = [{{ broker = \"orders\", publish = [\"orders.>\"] }}]"
                ),
            )),
            // Not a refusal: the interface only hands out what the grant
            // names, one credential at a time, so with none every request is
            // denied and audited. Plugins that support optional auth load.
            Capability::Credentials if grant.credential_names().is_empty() => out.push(Mismatch {
                kind: "requested-none-granted",
                subject: i.to_string(),
                message: format!(
                    "it imports {i} (host-held secrets) but grants.{plugin} lists no credentials, so every request for one is denied; add credentials = [\"NAME\"] if it needs one"
                ),
            }),
            Capability::Never => out.push(refuse(
                i,
                format!("it imports {i}; weft never grants raw sockets or file system access to plugins (use outbound HTTP through weft-sdk)"),
            )),
            _ => {}
        }
    }
    let unused = |subject: &str, message: String| Mismatch {
        kind: "granted-not-used",
        subject: subject.to_string(),
        message,
    };
    if !grant.http.is_empty() && !uses(Capability::Http) {
        out.push(unused(
            "http",
            format!(
                "grants.{plugin}.http lists origins but the plugin makes no HTTP calls; remove them"
            ),
        ));
    }
    if grant.kv.is_some() && !uses(Capability::Kv) {
        out.push(unused(
            "kv",
            format!("grants.{plugin}.kv is set but the plugin keeps no state; remove it"),
        ));
    }
    if !grant.messaging.is_empty() && !uses(Capability::Messaging) {
        out.push(unused(
            "messaging",
            format!(
                "grants.{plugin}.messaging names brokers but the plugin publishes nothing; remove it"
            ),
        ));
    }
    if !grant.credential_names().is_empty() && !uses(Capability::Credentials) {
        out.push(unused(
            "credentials",
            format!(
                "grants.{plugin} lists credentials but the plugin never asks for one; remove them"
            ),
        ));
    }
    out
}

/// What the grant lets the plugin do, one line per permission.
pub fn effective(imports: &[String], grant: &Grant) -> Vec<String> {
    let uses = |cap: Capability| imports.iter().any(|i| classify(i).0 == cap);
    let mut out = Vec::new();
    if uses(Capability::Http) && !grant.http.is_empty() {
        for o in &grant.http {
            out.push(format!("http: {o}"));
        }
    } else {
        out.push("http: none".into());
    }
    if uses(Capability::Credentials) && !grant.credential_names().is_empty() {
        for c in grant.credential_names() {
            let how = if grant.reveal.iter().any(|r| r == c) {
                "attach and reveal"
            } else {
                "attach only (value never enters the plugin)"
            };
            out.push(format!("credential {c}: {how}"));
        }
    } else {
        out.push("credentials: none".into());
    }
    if uses(Capability::Messaging) && !grant.messaging.is_empty() {
        for m in &grant.messaging {
            out.push(format!(
                "messaging: publish to broker {}: {}",
                m.broker,
                m.publish.join(", ")
            ));
        }
    } else {
        out.push("messaging: none".into());
    }
    match (&grant.kv, uses(Capability::Kv)) {
        (Some(kv), true) => out.push(format!("kv: own namespace, quota {} KiB", kv.quota_kib)),
        _ => out.push("kv: none".into()),
    }
    out.push(format!(
        "limits: memory {} MiB, time {} ms per call, fuel {}, output {} KiB, logs {} KiB, responses {} KiB",
        grant.memory_mib,
        grant.timeout_ms,
        grant.fuel.map_or("unlimited".to_string(), |f| f.to_string()),
        grant.output_kib,
        grant.log_kib,
        grant.response_kib,
    ));
    out.push("file system, sockets, environment: none".into());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_without_a_grant_are_named_with_the_fix() {
        let imports = vec![
            "wasi:http/outgoing-handler@0.2.12".to_string(),
            "weft:plugin/kv@0.1.0".to_string(),
            "weft:plugin/log@0.1.0".to_string(),
        ];
        let m = compare("crm", &imports, &Grant::default());
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m.iter().all(|m| m.kind == "requested-not-granted"));
        assert!(m[0].message.contains("grants.crm.http is empty"));
        assert!(m[1].message.contains("kv = { quota_kib = 1024 }"));
        let grant = Grant {
            http: vec!["https://api.example.com".into()],
            credentials: vec!["TOKEN".into()],
            ..Grant::default()
        };
        let m = compare("crm", &imports[..1], &grant);
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].kind, m[0].subject.as_str()),
            ("granted-not-used", "credentials")
        );
        let m = compare(
            "q",
            &["weft:plugin/messaging@0.1.0".to_string()],
            &Grant::default(),
        );
        assert_eq!(m[0].kind, "requested-not-granted");
        assert!(
            m[0].message.contains("grants.q.messaging is empty"),
            "{m:?}"
        );
        let m = compare(
            "x",
            &["wasi:sockets/tcp@0.2.12".to_string()],
            &Grant::default(),
        );
        assert!(m[0].message.contains("never grants raw sockets"));
    }
}
