//! Why a webhook delivery was refused.

/// Why a webhook was refused; `as_str` is the label of the count in the
/// pipeline status and `weft_events_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not `application/json` (415).
    UnsupportedMediaType,
    /// Over `max_body_bytes` (413).
    TooLarge,
    /// The body could not be read (400).
    UnreadableBody,
    /// Not valid JSON (400).
    InvalidJson,
    /// No idempotency key where one is required (422).
    MissingKey,
    /// Queue full, breaker open (429).
    Backpressure,
    /// The store failed (503).
    StoreError,
    /// The webhook signature did not verify (401).
    Signature,
    /// The payload breaks the pipeline's contract (422).
    Contract,
    /// The body did not arrive within `body_timeout_ms` (408).
    BodyTimeout,
    /// The sender's address is not in the pipeline's `allow_from` (403).
    AddressNotAllowed,
    /// No verified client certificate, and the pipeline requires one (403).
    ClientCertificate,
}

impl Rejection {
    /// Every reason, in label order.
    pub const ALL: [Rejection; 12] = [
        Rejection::UnsupportedMediaType,
        Rejection::TooLarge,
        Rejection::UnreadableBody,
        Rejection::InvalidJson,
        Rejection::MissingKey,
        Rejection::Backpressure,
        Rejection::StoreError,
        Rejection::Signature,
        Rejection::Contract,
        Rejection::BodyTimeout,
        Rejection::AddressNotAllowed,
        Rejection::ClientCertificate,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::UnsupportedMediaType => "unsupported_media_type",
            Rejection::TooLarge => "too_large",
            Rejection::UnreadableBody => "unreadable_body",
            Rejection::InvalidJson => "invalid_json",
            Rejection::MissingKey => "missing_key",
            Rejection::Backpressure => "backpressure",
            Rejection::StoreError => "store_error",
            Rejection::Signature => "signature",
            Rejection::Contract => "contract",
            Rejection::BodyTimeout => "body_timeout",
            Rejection::AddressNotAllowed => "address_not_allowed",
            Rejection::ClientCertificate => "client_certificate",
        }
    }
}
