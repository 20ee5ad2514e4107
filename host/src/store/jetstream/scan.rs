//! Reading a whole bucket (or the keys under a prefix) at once: the latest
//! value of every key, through an ordered consumer that ends at the
//! stream's end as it was when the scan began, or once more at its end as
//! it is when the scan gets there, so writes that never pause cannot hold
//! a scan open. A key written again after that second end is the next
//! scan's.

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, ReplayPolicy, push::OrderedConfig},
};
use futures_util::StreamExt;
use std::time::Duration;

/// How long a scan past the stream's end waits for what is still pending.
const QUIET: Duration = Duration::from_millis(300);

/// One key's latest value.
pub(super) struct Found {
    pub key: String,
    pub value: bytes::Bytes,
    pub revision: u64,
}

/// The latest value of every key of `bucket` matching `filter` (`>` for
/// all), deleted keys left out.
pub(super) async fn scan(
    js: &jetstream::Context,
    bucket: &str,
    filter: &str,
    wait: Duration,
) -> Result<Vec<Found>, String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("scanning {bucket} ({what}): {e}");
    let mut stream = js
        .get_stream(format!("KV_{bucket}"))
        .await
        .map_err(|e| fail("stream", &e))?;
    let last = stream.cached_info().state.last_sequence;
    let prefix = format!("$KV.{bucket}.");
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_subject: js.client().new_inbox(),
            filter_subject: format!("{prefix}{filter}"),
            deliver_policy: DeliverPolicy::LastPerSubject,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|e| fail("consumer", &e))?;
    // By key: a key written again while the scan runs is delivered again,
    // and the later value (or its deletion) wins.
    let mut out = std::collections::HashMap::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(Vec::new());
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| fail("messages", &e))?;
    // Past the stream's end as it was, what is still pending may be a
    // message replaced meanwhile, which never comes: a short quiet ends it.
    // The scan ends at the stream's end as it was when it began; when
    // writes came meanwhile (they may have moved keys it had not reached
    // to beyond that end), it reads on once, to the end as it is then.
    // The server's count of what is pending can stay above zero for a
    // message replaced meanwhile, so it ends the scan only when it is zero:
    // past the end, a short quiet ends it too.
    let mut target = last;
    let mut extended = false;
    let mut caught_up = false;
    loop {
        let quiet = if caught_up { QUIET } else { wait };
        let next = match tokio::time::timeout(quiet, messages.next()).await {
            Ok(next) => next,
            Err(_) if caught_up => break,
            Err(_) => return Err(fail("read", &"timed out")),
        };
        let Some(m) = next else { break };
        let m = m.map_err(|e| fail("read", &e))?;
        let info = m.info().map_err(|e| fail("metadata", &e))?;
        let (revision, pending) = (info.stream_sequence, info.pending);
        let deleted = m
            .headers
            .as_ref()
            .and_then(|h| h.get("KV-Operation"))
            .is_some_and(|v| v.as_str() == "DEL" || v.as_str() == "PURGE");
        if let Some(key) = m.subject.strip_prefix(prefix.as_str()) {
            if deleted {
                out.remove(key);
            } else {
                out.insert(
                    key.to_string(),
                    Found {
                        key: key.to_string(),
                        value: m.payload.clone(),
                        revision,
                    },
                );
            }
        }
        if pending == 0 {
            break;
        }
        if revision >= target {
            caught_up = true;
            if extended {
                break;
            }
            extended = true;
            let now = stream
                .info()
                .await
                .map_err(|e| fail("stream", &e))?
                .state
                .last_sequence;
            if now <= revision {
                break;
            }
            target = now;
        }
    }
    Ok(out.into_values().collect())
}
