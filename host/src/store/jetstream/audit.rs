//! The audit log on JetStream: one stream, one record per message, in
//! order. An append names the stream's last sequence it built on, so two
//! hosts appending at once cannot fork the chain: the loser reads the new
//! head and tries again. The MAC key is a credential every host shares.

use crate::store::{AuditBreak, AuditEntry, AuditLog, AuditRecord, GENESIS, StoreError};
use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use futures_util::StreamExt;
use std::sync::Arc;

/// The shared audit log of a JetStream store.
pub(super) struct JsAuditLog {
    pub(super) js: jetstream::Context,
    pub(super) stream: String,
    pub(super) subject: String,
    pub(super) key: [u8; 32],
    pub(super) call: Arc<super::Caller>,
}

impl JsAuditLog {
    /// The last record and its stream sequence, or none.
    async fn head(
        js: &jetstream::Context,
        stream: &str,
    ) -> Result<Option<(u64, AuditRecord)>, StoreError> {
        let s = js
            .get_stream(stream)
            .await
            .map_err(|e| StoreError::Read(format!("audit stream {stream}: {e}")))?;
        let last = s.cached_info().state.last_sequence;
        if s.cached_info().state.messages == 0 {
            return Ok(None);
        }
        let m = s
            .get_raw_message(last)
            .await
            .map_err(|e| StoreError::Read(format!("audit record at {last}: {e}")))?;
        let rec = serde_json::from_slice(&m.payload)
            .map_err(|e| StoreError::Read(format!("audit record at {last}: {e}")))?;
        Ok(Some((last, rec)))
    }

    async fn all(js: jetstream::Context, stream: String) -> Result<Vec<AuditRecord>, StoreError> {
        let read = |e: &dyn std::fmt::Display| StoreError::Read(format!("audit log: {e}"));
        let s = js.get_stream(&stream).await.map_err(|e| read(&e))?;
        // The log as it was when the read began: entries appended
        // meanwhile are the next read's.
        let last = s.cached_info().state.last_sequence;
        let consumer = s
            .create_consumer(jetstream::consumer::push::OrderedConfig {
                deliver_subject: js.client().new_inbox(),
                ..Default::default()
            })
            .await
            .map_err(|e| read(&e))?;
        let mut out = Vec::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer.messages().await.map_err(|e| read(&e))?;
        while let Some(m) =
            tokio::time::timeout(std::time::Duration::from_secs(10), messages.next())
                .await
                .map_err(|_| read(&"timed out"))?
        {
            let m = m.map_err(|e| read(&e))?;
            let info = m.info().map_err(|e| read(&e))?;
            let (pending, seq) = (info.pending, info.stream_sequence);
            out.push(serde_json::from_slice(&m.payload).map_err(|e| read(&e))?);
            if pending == 0 || seq >= last {
                break;
            }
        }
        Ok(out)
    }
}

impl AuditLog for JsAuditLog {
    fn append(&self, entry: AuditEntry) -> Result<AuditRecord, StoreError> {
        let (js, stream, subject, key) = (
            self.js.clone(),
            self.stream.clone(),
            self.subject.clone(),
            self.key,
        );
        self.call.wait(async move {
            loop {
                let head = JsAuditLog::head(&js, &stream).await?;
                let (last_seq, index, prev) = match &head {
                    Some((seq, r)) => (*seq, r.index + 1, r.hash.clone()),
                    None => (0, 0, GENESIS.to_string()),
                };
                let mut rec = AuditRecord {
                    index,
                    at_ms: crate::store::now_ms(),
                    kind: entry.kind.to_string(),
                    actor: entry.actor.clone(),
                    pipeline: entry.pipeline.clone(),
                    action: entry.action.clone(),
                    detail: crate::redact::mask(&entry.detail).into_owned(),
                    prev,
                    hash: String::new(),
                };
                rec.hash = rec.mac(&key);
                let value =
                    serde_json::to_vec(&rec).map_err(|e| StoreError::Write(e.to_string()))?;
                let sent = js
                    .send_publish(
                        subject.clone(),
                        PublishMessage::build()
                            .payload(value.into())
                            .expected_last_sequence(last_seq),
                    )
                    .await;
                let acked = match sent {
                    Ok(ack) => ack.await,
                    Err(e) => Err(e),
                };
                match acked {
                    Ok(_) => return Ok(rec),
                    // Another host appended first: build on its record.
                    Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => continue,
                    Err(e) => return Err(StoreError::Write(format!("audit log: {e}"))),
                }
            }
        })
    }

    fn records(&self, from: u64) -> Result<Vec<AuditRecord>, StoreError> {
        let all = self
            .call
            .wait(JsAuditLog::all(self.js.clone(), self.stream.clone()))?;
        Ok(all.into_iter().filter(|r| r.index >= from).collect())
    }

    fn verify(&self) -> Result<u64, AuditBreak> {
        let all = self
            .call
            .wait(JsAuditLog::all(self.js.clone(), self.stream.clone()))
            .map_err(|e| AuditBreak {
                index: 0,
                reason: e.to_string(),
            })?;
        let mut prev = GENESIS.to_string();
        for (i, r) in all.iter().enumerate() {
            let i = i as u64;
            let broken = |reason: &str| AuditBreak {
                index: i,
                reason: reason.to_string(),
            };
            if r.index != i {
                return Err(broken("a record is missing or out of order"));
            }
            if r.prev != prev {
                return Err(broken("it does not follow the record before it"));
            }
            if r.mac(&self.key) != r.hash {
                return Err(broken(
                    "its MAC does not match: it was changed, or written without the audit key",
                ));
            }
            prev = r.hash.clone();
        }
        Ok(all.len() as u64)
    }
}
