//! Accepting an event: validate, give it an id and keys, and write it durably
//! (with its dedup record) before anyone is told it was accepted.

use super::handle::Engine;
use super::job::Job;
use crate::store::{
    AfterCommit, Committed, Dedup, EventId, EventRecord, Polled, StoreError, now_ms,
};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// An event as it arrives, before it is accepted.
#[derive(Debug, Clone, Default)]
pub struct Incoming {
    /// The raw body.
    pub body: Vec<u8>,
    /// MIME type of the body.
    pub content_type: String,
    /// The `Idempotency-Key` header, if sent.
    pub idempotency_header: Option<String>,
    /// A correlation id the sender supplied, if any.
    pub correlation_id: Option<String>,
    /// Metadata to carry with the event.
    pub headers: Vec<(String, String)>,
    /// The idempotency key the host chose (a synthetic check's run): it
    /// wins over the pipeline's `idempotency_key`.
    pub key: Option<String>,
}

/// The answer to an accepted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Stored and flushed; it will be delivered.
    New {
        /// The new event id.
        id: EventId,
        /// Its idempotency key.
        key: String,
        /// Its correlation id.
        correlation_id: String,
    },
    /// The key was seen within the dedup window; nothing was stored.
    Duplicate {
        /// The id of the first event with this key.
        id: EventId,
        /// The key.
        key: String,
    },
}

/// Why an event was not accepted. Nothing is stored in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// No pipeline by that name.
    #[error("no pipeline by that name; configured pipelines: {known}")]
    UnknownPipeline {
        /// The name asked for.
        name: String,
        /// The configured names.
        known: String,
    },
    /// The body is not JSON.
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The idempotency key could not be found.
    #[error("{0}")]
    MissingKey(String),
    /// The pipeline is full or its sink is failing; the sender should retry later.
    #[error("{reason}")]
    Backpressure {
        /// Seconds to wait.
        retry_after_s: u64,
        /// Why.
        reason: String,
    },
    /// The store could not take the write; the sender should retry.
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl AcceptError {
    /// The pipeline is behind or full: wait this many seconds, for this reason.
    fn backpressure((retry_after_s, reason): (u64, String)) -> AcceptError {
        AcceptError::Backpressure {
            retry_after_s,
            reason,
        }
    }
}

/// Longest idempotency key, in bytes.
pub const MAX_KEY_LEN: usize = 512;

/// One item a trigger took (a polled item, a queued message), for
/// [`Engine::accept_batch`].
#[derive(Debug, Clone)]
pub struct BatchItem {
    /// Its idempotency key.
    pub key: String,
    /// Its body (JSON).
    pub body: Vec<u8>,
    /// Host headers to keep with it (e.g. the queue subject it came on).
    pub headers: Vec<(String, String)>,
}

/// Deepest nesting of arrays and objects an event may have.
pub const MAX_JSON_DEPTH: usize = 128;

/// What every event body must be, whatever the pipeline does with it: UTF-8
/// text, nested no deeper than [`MAX_JSON_DEPTH`]. (That it is JSON at all
/// is checked by parsing it after this.)
fn check_json(body: &[u8]) -> Result<(), String> {
    if let Err(e) = std::str::from_utf8(body) {
        return Err(format!(
            "the body is not UTF-8 text (invalid byte at offset {})",
            e.valid_up_to()
        ));
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, b) in body.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(format!(
                        "the body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels (at offset {i})"
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The value at a JSON `pointer` of a (valid) JSON `text`, read without
/// building the document: each level on the way is skimmed as raw slices,
/// and only the value found is parsed. A large payload is not copied into a
/// tree to find its key.
fn at_pointer(text: &str, pointer: &str) -> Option<serde_json::Value> {
    use serde_json::value::RawValue;
    use std::borrow::Cow;
    let mut raw: &RawValue = serde_json::from_str(text).ok()?;
    if !pointer.is_empty() {
        for token in pointer.strip_prefix('/')?.split('/') {
            let token = token.replace("~1", "/").replace("~0", "~");
            raw = match raw.get().as_bytes().first()? {
                b'{' => {
                    // The last of duplicate names wins, as when parsed whole.
                    let fields: Vec<(Cow<'_, str>, &RawValue)> =
                        serde_json::from_str::<FieldList<'_>>(raw.get()).ok()?.0;
                    fields.into_iter().rev().find(|(k, _)| *k == token)?.1
                }
                b'[' => {
                    if token.starts_with('+') || (token.len() > 1 && token.starts_with('0')) {
                        return None;
                    }
                    let i: usize = token.parse().ok()?;
                    let items: Vec<&RawValue> = serde_json::from_str(raw.get()).ok()?;
                    *items.get(i)?
                }
                _ => return None,
            };
        }
    }
    serde_json::from_str(raw.get()).ok()
}

/// An object's members in order, values left raw.
struct FieldList<'a>(Vec<(std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for FieldList<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Members<'a> {
            type Value = FieldList<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Self::Value, M::Error> {
                let mut out = Vec::new();
                while let Some(entry) = m.next_entry()? {
                    out.push(entry);
                }
                Ok(FieldList(out))
            }
        }
        d.deserialize_map(Members(std::marker::PhantomData))
    }
}

/// The ordering key at `pointer`: strings as they are, other values as JSON,
/// a missing or null value as empty.
fn order_key_of(text: &str, pointer: &str) -> String {
    match at_pointer(text, pointer) {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

impl Engine {
    /// What to run once a new event is durable: count it and queue its
    /// first attempt.
    pub(super) fn on_accepted(&self, record: Arc<EventRecord>) -> AfterCommit {
        let weight = super::job::Weight::of(&record);
        let job = Job {
            pipeline: record.pipeline.clone(),
            id: record.id,
            attempt: 1,
            due_ms: record.received_at_ms,
            order_key: record.order_key.clone(),
            record: Job::keep(&record),
        };
        let engine = self.clone();
        Box::new(move || {
            // Counted here, on the store's side, where the write became
            // durable: a sender that hung up meanwhile does not change that
            // the event is accepted, queued and will be delivered.
            if let Some(p) = engine.inner.pipelines.get(&job.pipeline) {
                p.stats_for(weight.synthetic)
                    .accepted
                    .fetch_add(1, Ordering::Relaxed);
                p.observe(&record, super::objectives::Seen::Accepted);
                if let Some(check) = record.synthetic() {
                    p.synthetic.sent(check);
                }
            }
            engine.requeued(job, super::pipeline::Entry::Accepted, weight)
        })
    }

    pub(super) fn dedup(&self, pipeline: &str, key: &str) -> Dedup {
        Dedup {
            pipeline: pipeline.to_string(),
            key: key.to_string(),
            window_ms: self.inner.dedup_window_ms,
        }
    }

    /// The pipeline, if it exists and takes new events now.
    fn admit(
        &self,
        pipeline: &str,
        incoming_bytes: u64,
        polled: bool,
    ) -> Result<Arc<super::pipeline::Pipeline>, AcceptError> {
        // A route's pipeline takes its events from its parent only.
        let p = self
            .inner
            .pipelines
            .get(pipeline)
            .filter(|p| p.config.route_of.is_none())
            .ok_or_else(|| AcceptError::UnknownPipeline {
                name: pipeline.to_string(),
                known: self.pipeline_names().join(", "),
            })?
            .clone();
        self.admission(pipeline, incoming_bytes, polled)
            .map_err(AcceptError::backpressure)?;
        Ok(p)
    }

    /// Store what a source poll found and its next cursor in one atomic
    /// write: items whose key was already taken are left out, the rest are
    /// queued. Returns how many were new.
    pub async fn accept_polled(
        &self,
        pipeline: &str,
        items: Vec<(String, Vec<u8>)>,
        next_cursor: Option<&str>,
    ) -> Result<usize, AcceptError> {
        let items = items
            .into_iter()
            .map(|(key, body)| BatchItem {
                key,
                body,
                headers: Vec::new(),
            })
            .collect();
        self.accept_batch(pipeline, "poll", items, next_cursor)
            .await
    }

    /// Store items a trigger (`poll`, `queue`) took, and its next cursor
    /// when it keeps one, in one atomic write: items whose key was already
    /// taken are left out, the rest are queued. Returns how many were new;
    /// on `Ok` every item is durable (or was already).
    pub async fn accept_batch(
        &self,
        pipeline: &str,
        trigger: &'static str,
        items: Vec<BatchItem>,
        next_cursor: Option<&str>,
    ) -> Result<usize, AcceptError> {
        let pass = self.pass().await;
        if !pass.engine.is(self) {
            let next = pass.engine.clone();
            drop(pass);
            return Box::pin(next.accept_batch(pipeline, trigger, items, next_cursor)).await;
        }
        let p = self.admit(
            pipeline,
            items.iter().map(|i| i.body.len() as u64).sum(),
            true,
        )?;
        let now = now_ms();
        let fresh = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut polled = Vec::with_capacity(items.len());
        for BatchItem { key, body, headers } in items {
            if key.is_empty() || key.len() > MAX_KEY_LEN {
                tracing::warn!(
                    pipeline,
                    "a polled item has an empty or overlong key; skipped"
                );
                continue;
            }
            let id = EventId::new();
            let order_key = p.config.order_by.as_ref().map(|pointer| {
                std::str::from_utf8(&body)
                    .map(|text| order_key_of(text, pointer))
                    .unwrap_or_default()
            });
            let record = Arc::new(EventRecord {
                headers: std::iter::once((crate::store::TRIGGER_HEADER.into(), trigger.into()))
                    .chain(headers)
                    .collect(),
                received_at_ms: now,
                order_key,
                ..EventRecord::queued(id, pipeline, &key, body)
            });
            let queue = self.on_accepted(record.clone());
            let counter = fresh.clone();
            polled.push(Polled {
                record,
                dedup: self.dedup(pipeline, &key),
                after: Some(Box::new(move || {
                    counter.fetch_add(1, Ordering::Relaxed);
                    queue();
                })),
            });
        }
        self.inner
            .store
            .accept_polled(pipeline, polled, next_cursor)
            .await?;
        Ok(fresh.load(Ordering::Relaxed))
    }

    /// Accept one event for `pipeline`: on `Ok`, it is durable.
    pub async fn accept(
        &self,
        pipeline: &str,
        incoming: Incoming,
    ) -> Result<Accepted, AcceptError> {
        // Refuse before parsing anything when the pipeline cannot take more;
        // when delivery is behind, wait for room first.
        let p = self.admit(pipeline, incoming.body.len() as u64, false)?;
        let _place = self
            .wait_for_room(&p)
            .await
            .map_err(AcceptError::backpressure)?;
        let pass = self.pass().await;
        if !pass.engine.is(self) {
            // Replaced by a reload since this request came in.
            let next = pass.engine.clone();
            drop((pass, _place));
            return Box::pin(next.accept(pipeline, incoming)).await;
        }
        let id = EventId::new();
        check_json(&incoming.body).map_err(AcceptError::InvalidJson)?;
        // Checked as UTF-8 just above; validated without building a tree.
        let text = std::str::from_utf8(&incoming.body)
            .map_err(|e| AcceptError::InvalidJson(e.to_string()))?;
        serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map_err(|e| AcceptError::InvalidJson(e.to_string()))?;
        let order_key = p
            .config
            .order_by
            .as_ref()
            .map(|pointer| order_key_of(text, pointer));
        let key = match &p.config.idempotency_key {
            _ if incoming.key.is_some() => incoming.key.clone().unwrap_or_default(),
            Some(pointer) => match at_pointer(text, pointer) {
                Some(serde_json::Value::String(s)) if !s.is_empty() => s,
                Some(serde_json::Value::Number(n)) => n.to_string(),
                _ => match &incoming.idempotency_header {
                    Some(h) => h.clone(),
                    None => {
                        return Err(AcceptError::MissingKey(format!(
                            "the idempotency key {pointer} (a non-empty string or a number) is missing from the body, and no Idempotency-Key header was sent"
                        )));
                    }
                },
            },
            _ => incoming
                .idempotency_header
                .clone()
                .unwrap_or_else(|| id.to_string()),
        };
        if key.len() > MAX_KEY_LEN {
            return Err(AcceptError::MissingKey(format!(
                "the idempotency key is {} bytes long; the limit is {MAX_KEY_LEN}",
                key.len()
            )));
        }
        let correlation_id = incoming
            .correlation_id
            .filter(|c| !c.is_empty() && c.len() <= 128)
            .unwrap_or_else(|| id.to_string());
        let record = Arc::new(EventRecord {
            correlation_id: correlation_id.clone(),
            content_type: incoming.content_type,
            headers: incoming.headers,
            order_key,
            ..EventRecord::queued(id, pipeline, &key, incoming.body)
        });
        // The callback runs once durable, even if the sender has gone.
        let after = self.on_accepted(record.clone());
        let ticket =
            self.inner
                .store
                .accept(&record, Some(self.dedup(pipeline, &key)), Some(after));
        match ticket.await? {
            Committed::Written => {
                tracing::debug!(pipeline, event = %id, correlation_id = %correlation_id, key = %key, "accepted");
                Ok(Accepted::New {
                    id,
                    key,
                    correlation_id,
                })
            }
            Committed::Duplicate(first) => {
                p.stats_for(record.synthetic().is_some())
                    .duplicates
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(pipeline, event = %first, key = %key, "duplicate idempotency key; not stored again");
                Ok(Accepted::Duplicate { id: first, key })
            }
            // A new event's write has no precondition to miss.
            Committed::Gone => Err(crate::store::StoreError::Write(
                "the store skipped a new event's write".into(),
            )
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_JSON_DEPTH, at_pointer, check_json};
    use proptest::prelude::*;

    /// A JSON value with strings that hold brackets, quotes and escapes.
    fn leaf() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(serde_json::Value::Null),
            any::<i64>().prop_map(serde_json::Value::from),
            "[\\[\\]{}\"\\\\a-z ]{0,12}".prop_map(serde_json::Value::from),
        ]
    }

    fn depth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// A document of nested objects and arrays, with names that need
    /// escaping in a pointer.
    fn doc() -> impl Strategy<Value = serde_json::Value> {
        leaf().prop_recursive(4, 40, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(
                    prop_oneof![Just("a"), Just("b"), Just("a/b"), Just("m~n"), Just("")]
                        .prop_map(String::from),
                    inner,
                    0..4
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Reading a key without building the document finds exactly what
        /// a full parse finds, for any pointer.
        #[test]
        fn a_pointer_read_raw_agrees_with_a_full_parse(
            v in doc(),
            tokens in proptest::collection::vec(
                prop_oneof![Just("a"), Just("b"), Just("a~1b"), Just("m~0n"), Just(""), Just("0"), Just("1"), Just("01"), Just("+1")],
                0..4,
            ),
        ) {
            let pointer: String = tokens.iter().map(|t| format!("/{t}")).collect();
            let text = v.to_string();
            prop_assert_eq!(at_pointer(&text, &pointer), v.pointer(&pointer).cloned());
        }

        /// The model: a JSON text passes exactly when it nests no deeper
        /// than the limit, however its strings are made.
        #[test]
        fn intake_agrees_with_the_nesting_model(
            inner in leaf(),
            wraps in proptest::collection::vec((any::<bool>(), leaf()), 0..200),
        ) {
            let mut v = inner;
            for (as_array, sibling) in wraps {
                v = if as_array {
                    serde_json::Value::Array(vec![sibling, v])
                } else {
                    serde_json::json!({ "k": v, "s": sibling })
                };
            }
            let text = v.to_string();
            prop_assert_eq!(check_json(text.as_bytes()).is_ok(), depth(&v) <= MAX_JSON_DEPTH);
        }

        /// Bytes that are not UTF-8 never pass; nothing panics.
        #[test]
        fn intake_refuses_what_is_not_utf8(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let verdict = check_json(&bytes);
            if std::str::from_utf8(&bytes).is_err() {
                prop_assert!(verdict.is_err());
            }
        }
    }

    #[test]
    fn bodies_must_be_utf8_and_not_too_deep() {
        assert!(check_json(br#"{"a": [1, {"b": "x]]]\"{{{"}], "c": null}"#).is_ok());
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert!(check_json(deep(MAX_JSON_DEPTH).as_bytes()).is_ok());
        let err = check_json(deep(MAX_JSON_DEPTH + 1).as_bytes()).unwrap_err();
        assert!(err.contains("deeper than 128"), "{err}");
        assert!(check_json(deep(100_000).as_bytes()).is_err());
        // Brackets inside strings do not count.
        let quoted = format!("{{\"a\": \"{}\"}}", "[".repeat(1000));
        assert!(check_json(quoted.as_bytes()).is_ok());
        let err = check_json(b"{\"a\": \"\xff\xfe\"}").unwrap_err();
        assert!(
            err.contains("not UTF-8") && err.contains("offset 7"),
            "{err}"
        );
    }
}
