//! What the store keeps about an event: the event itself, its state and every
//! attempt.

use super::event::*;
use serde::{Deserialize, Serialize};

/// One attempt at an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// Start, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// Duration in microseconds.
    pub duration_us: u64,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Every plugin call of the attempt, in order.
    pub steps: Vec<StepRun>,
}

/// One plugin call within an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRun {
    /// `step 1 (json-map)` or `sink (http-sink)`.
    pub step: String,
    /// Offset from the attempt's start, in microseconds.
    pub offset_us: u64,
    /// Duration in microseconds.
    pub duration_us: u64,
    /// `ok`, `filtered` or the error kind.
    pub outcome: String,
    /// Events it returned (transforms) or delivered (the sink: 1).
    pub events_out: u32,
    /// Fuel used (0 when fuel is not metered).
    pub fuel: u64,
    /// Largest linear memory the call asked for, in bytes.
    pub memory_bytes: u64,
}

/// Everything the store keeps about an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Event id.
    pub id: EventId,
    /// Pipeline it belongs to.
    pub pipeline: String,
    /// Idempotency key.
    pub key: String,
    /// Correlation id.
    pub correlation_id: String,
    /// MIME type of the payload.
    pub content_type: String,
    /// Metadata carried with the event.
    pub headers: Vec<(String, String)>,
    /// The body as accepted.
    pub payload: Vec<u8>,
    /// Accept time, ms since the Unix epoch.
    pub received_at_ms: u64,
    /// Current state.
    pub state: EventState,
    /// Every attempt, oldest first.
    pub attempts: Vec<Attempt>,
    /// When the event was replayed from the dead-letter queue.
    pub replays_at_ms: Vec<u64>,
    /// Attempts made before the latest replay; retry limits count from here.
    pub round_base: u32,
    /// Ordering key, for pipelines with `order_by`.
    pub order_key: Option<String>,
    /// Where it comes from and what it became, for splits (kept after the
    /// rest in the encoding, so records without it still read).
    #[serde(skip)]
    pub lineage: Lineage,
}

/// An event's place in a split.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// The event that was split into this one.
    pub parent: Option<EventId>,
    /// The step its attempts start at: the one after the step that split
    /// its parent (0 for an event from a trigger).
    pub first_step: u32,
    /// The events this one was split into, in order.
    pub children: Vec<EventId>,
}

/// The record header naming the trigger that accepted an event; set by the
/// host only (webhook requests carry no headers into the record).
pub const TRIGGER_HEADER: &str = "x-weft-trigger";

/// The record header marking a synthetic check's event, naming the check;
/// set by the host only.
pub const SYNTHETIC_HEADER: &str = "x-weft-synthetic";

/// The record header holding the SHA-256 (hex) of the client certificate
/// a webhook came with over mTLS; set by the host only.
pub const CLIENT_CERT_HEADER: &str = "x-weft-client-cert-sha256";

/// The record header of an event whose compensation was queued: the
/// compensation's id.
pub const COMPENSATION_HEADER: &str = "x-weft-compensation";

/// The record header of a compensation: the id of the event it undoes.
pub const COMPENSATES_HEADER: &str = "x-weft-compensates";

/// The record header of a compensation: why the event it undoes failed.
pub const FAILURE_HEADER: &str = "x-weft-failure";

/// The record header of an event a queue trigger took: the subject (NATS)
/// or routing key (AMQP) it came on.
pub const QUEUE_SUBJECT_HEADER: &str = "x-weft-queue-subject";

/// The record headers only the host sets: a step's output cannot forge them.
pub const HOST_HEADERS: [&str; 7] = [
    TRIGGER_HEADER,
    SYNTHETIC_HEADER,
    CLIENT_CERT_HEADER,
    COMPENSATION_HEADER,
    COMPENSATES_HEADER,
    FAILURE_HEADER,
    QUEUE_SUBJECT_HEADER,
];

/// Version byte in front of every encoded record. Version 4 leaves the
/// payload out: the store writes it once, under its own key, and rewrites
/// only this record as attempts are added. Version 3 held the payload
/// inline, version 2 also had no lineage and version 1 no per-step runs;
/// all are still read.
const RECORD_VERSION: u8 = 4;

use super::record_v1 as v1;

/// An [`EventRecord`] as encoded from version 4 on: the same fields in the
/// same order, with an empty payload.
#[derive(Serialize)]
struct Meta<'a> {
    id: &'a EventId,
    pipeline: &'a str,
    key: &'a str,
    correlation_id: &'a str,
    content_type: &'a str,
    headers: &'a [(String, String)],
    payload: &'a [u8],
    received_at_ms: u64,
    state: &'a EventState,
    attempts: &'a [Attempt],
    replays_at_ms: &'a [u64],
    round_base: u32,
    order_key: &'a Option<String>,
}

impl EventRecord {
    /// Encode for the store, without the payload (the store keeps it apart).
    pub fn encode(&self) -> Vec<u8> {
        let meta = Meta {
            id: &self.id,
            pipeline: &self.pipeline,
            key: &self.key,
            correlation_id: &self.correlation_id,
            content_type: &self.content_type,
            headers: &self.headers,
            payload: &[],
            received_at_ms: self.received_at_ms,
            state: &self.state,
            attempts: &self.attempts,
            replays_at_ms: &self.replays_at_ms,
            round_base: self.round_base,
            order_key: &self.order_key,
        };
        let mut out = vec![RECORD_VERSION];
        // Serialising plain data into a Vec cannot fail.
        out.extend(postcard::to_stdvec(&meta).unwrap_or_default());
        out.extend(postcard::to_stdvec(&self.lineage).unwrap_or_default());
        out
    }

    /// Whether an encoded record leaves its payload to be read apart
    /// (otherwise [`EventRecord::decode`] gives it whole).
    pub fn payload_apart(bytes: &[u8]) -> bool {
        bytes.first() == Some(&RECORD_VERSION)
    }

    /// Decode from the store; from version 4 on without the payload (see
    /// [`EventRecord::payload_apart`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let corrupt = |e: postcard::Error| format!("corrupt event record: {e}");
        match bytes.split_first() {
            Some((&RECORD_VERSION | 3, rest)) => {
                let (mut record, tail) =
                    postcard::take_from_bytes::<EventRecord>(rest).map_err(corrupt)?;
                record.lineage = postcard::from_bytes(tail).map_err(corrupt)?;
                Ok(record)
            }
            Some((2, rest)) => postcard::from_bytes(rest).map_err(corrupt),
            Some((1, rest)) => postcard::from_bytes::<v1::EventRecord>(rest)
                .map(Into::into)
                .map_err(corrupt),
            Some((v, _)) => Err(format!(
                "event record version {v} is not known to this weft; upgrade weft"
            )),
            None => Err("empty event record".into()),
        }
    }

    /// The synthetic check that sent this event, if one did.
    pub fn synthetic(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == SYNTHETIC_HEADER)
            .map(|(_, v)| v.as_str())
    }

    /// When the current round of attempts began: the latest replay, or the accept.
    pub fn round_started_ms(&self) -> u64 {
        self.replays_at_ms
            .last()
            .copied()
            .unwrap_or(self.received_at_ms)
    }

    /// A new event, queued for its first attempt now: JSON, its id as its
    /// correlation id, no headers, no ordering key (set what differs with
    /// `..EventRecord::queued(…)`).
    pub fn queued(id: EventId, pipeline: &str, key: &str, payload: Vec<u8>) -> EventRecord {
        EventRecord {
            id,
            pipeline: pipeline.to_string(),
            key: key.to_string(),
            correlation_id: id.to_string(),
            content_type: "application/json".into(),
            headers: Vec::new(),
            payload,
            received_at_ms: now_ms(),
            state: EventState::Queued,
            attempts: Vec::new(),
            replays_at_ms: Vec::new(),
            round_base: 0,
            order_key: None,
            lineage: Lineage::default(),
        }
    }

    /// The kind of trigger that accepted the event (`webhook`, `schedule`,
    /// `poll`), from the header the host itself sets on the record.
    pub fn trigger(&self) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == TRIGGER_HEADER)
            .map_or("webhook", |(_, v)| v.as_str())
    }

    /// The event's source as plugins see it: `trigger:pipeline`.
    pub fn source(&self) -> String {
        format!("{}:{}", self.trigger(), self.pipeline)
    }

    /// The last failure, if the last attempt failed.
    pub fn last_error(&self) -> Option<(&str, ErrorKind, &str)> {
        match self.attempts.last().map(|a| &a.outcome) {
            Some(AttemptOutcome::Failed {
                step,
                kind,
                message,
                ..
            }) => Some((step, *kind, message)),
            _ => None,
        }
    }
}

impl From<v1::EventRecord> for EventRecord {
    fn from(r: v1::EventRecord) -> Self {
        EventRecord {
            id: r.id,
            pipeline: r.pipeline,
            key: r.key,
            correlation_id: r.correlation_id,
            content_type: r.content_type,
            headers: r.headers,
            payload: r.payload,
            received_at_ms: r.received_at_ms,
            state: r.state,
            attempts: r
                .attempts
                .into_iter()
                .map(|a| Attempt {
                    number: a.number,
                    started_at_ms: a.started_at_ms,
                    duration_us: a.duration_us,
                    outcome: a.outcome,
                    steps: Vec::new(),
                })
                .collect(),
            replays_at_ms: r.replays_at_ms,
            round_base: r.round_base,
            order_key: r.order_key,
            lineage: Lineage::default(),
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reject_unknown_versions() {
        let r = EventRecord {
            id: EventId::new(),
            pipeline: "p".into(),
            key: "k".into(),
            correlation_id: "c".into(),
            content_type: "application/json".into(),
            headers: vec![],
            payload: b"{}".to_vec(),
            received_at_ms: 1,
            state: EventState::Queued,
            attempts: vec![Attempt {
                number: 1,
                started_at_ms: 2,
                duration_us: 3,
                outcome: AttemptOutcome::Failed {
                    step: "sink (x)".into(),
                    kind: ErrorKind::Transient,
                    message: "m".into(),
                    retry_at_ms: Some(4),
                },
                steps: vec![StepRun {
                    step: "sink (x)".into(),
                    offset_us: 5,
                    duration_us: 6,
                    outcome: "transient".into(),
                    events_out: 0,
                    fuel: 7,
                    memory_bytes: 8,
                }],
            }],
            replays_at_ms: vec![],
            round_base: 0,
            order_key: None,
            lineage: Lineage {
                parent: Some(EventId::new()),
                first_step: 2,
                children: vec![EventId::new(), EventId::new()],
            },
        };
        let bytes = r.encode();
        assert!(EventRecord::payload_apart(&bytes));
        assert!(
            !bytes.windows(2).any(|w| w == b"{}"),
            "the payload is not in the record"
        );
        let read = EventRecord::decode(&bytes).unwrap();
        assert_eq!(
            read,
            EventRecord {
                payload: Vec::new(),
                ..r.clone()
            }
        );
        // Version 3 (the payload inline) still reads, whole.
        let mut v3 = vec![3];
        v3.extend(postcard::to_stdvec(&r).unwrap());
        v3.extend(postcard::to_stdvec(&r.lineage).unwrap());
        assert!(!EventRecord::payload_apart(&v3));
        assert_eq!(EventRecord::decode(&v3).unwrap(), r);
        // Version 2 (no lineage) still reads, as an event from a trigger.
        let mut v2 = vec![2];
        v2.extend(postcard::to_stdvec(&r).unwrap());
        let old = EventRecord::decode(&v2).unwrap();
        assert_eq!(old.lineage, Lineage::default());
        assert_eq!(old.attempts, r.attempts);
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(EventRecord::decode(&bad).unwrap_err().contains("version 9"));
        let id = r.id.to_string();
        assert_eq!(id.parse::<EventId>().unwrap(), r.id);
        assert!("nope".parse::<EventId>().is_err());
        assert!(r.id.created_ms().abs_diff(now_ms()) < 60_000);
        assert_eq!(r.source(), "webhook:p");
        let polled = EventRecord {
            headers: vec![(TRIGGER_HEADER.into(), "poll".into())],
            ..r.clone()
        };
        assert_eq!(polled.source(), "poll:p");
    }

    #[test]
    fn version_1_records_still_read_without_step_runs() {
        let old = v1::EventRecord {
            id: EventId::new(),
            pipeline: "p".into(),
            key: "k".into(),
            correlation_id: "c".into(),
            content_type: "application/json".into(),
            headers: vec![],
            payload: b"{}".to_vec(),
            received_at_ms: 1,
            state: EventState::Delivered,
            attempts: vec![v1::Attempt {
                number: 1,
                started_at_ms: 2,
                duration_us: 3,
                outcome: AttemptOutcome::Delivered {
                    receipt: "HTTP 200".into(),
                },
            }],
            replays_at_ms: vec![],
            round_base: 0,
            order_key: None,
        };
        let mut bytes = vec![1];
        bytes.extend(postcard::to_stdvec(&old).unwrap());
        let r = EventRecord::decode(&bytes).unwrap();
        assert_eq!(r.attempts[0].duration_us, 3);
        assert!(r.attempts[0].steps.is_empty());
        assert_eq!(
            r.encode()[0],
            RECORD_VERSION,
            "written back as the current version"
        );
    }
}
