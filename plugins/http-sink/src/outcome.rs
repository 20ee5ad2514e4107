//! How an HTTP answer becomes a delivery outcome.

use std::time::{Duration, SystemTime};
use weft_sdk::{Error, Receipt};

/// Classify a status code: 2xx delivered; 408, 429 and 5xx retried (429 and
/// 503 wait for `Retry-After` when given); everything else is permanent.
pub fn classify(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Result<Receipt, Error> {
    let snippet = body_snippet(body);
    let what = if snippet.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {snippet}")
    };
    match status {
        200..=299 => Ok(Receipt::new(format!("HTTP {status}"))),
        429 | 503 => match retry_after.and_then(|v| parse_retry_after(v, now)) {
            Some(wait) => Err(Error::rate_limited(wait.as_millis() as u64, what)),
            None => Err(Error::transient(what)),
        },
        408 | 500..=599 => Err(Error::transient(what)),
        300..=399 => Err(Error::fatal(format!(
            "{what} (redirects are not followed; point the sink at the final URL)"
        ))),
        _ => Err(Error::fatal(what)),
    }
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn body_snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        httpdate::parse_http_date("Sun, 22 Nov 2026 10:00:00 GMT").unwrap()
    }

    #[test]
    fn status_classes() {
        assert_eq!(classify(201, None, b"", now()).unwrap().detail, "HTTP 201");
        assert!(
            matches!(classify(500, None, b"boom", now()), Err(Error::Transient(m)) if m == "HTTP 500: boom")
        );
        assert!(matches!(
            classify(408, None, b"", now()),
            Err(Error::Transient(_))
        ));
        assert!(matches!(
            classify(429, None, b"", now()),
            Err(Error::Transient(_))
        ));
        assert!(
            matches!(classify(400, None, b"bad email", now()), Err(Error::Fatal(m)) if m == "HTTP 400: bad email")
        );
        assert!(matches!(
            classify(404, None, b"", now()),
            Err(Error::Fatal(_))
        ));
        assert!(
            matches!(classify(302, None, b"", now()), Err(Error::Fatal(m)) if m.contains("redirects"))
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert!(matches!(
            classify(429, Some("7"), b"", now()),
            Err(Error::RateLimited {
                retry_after_ms: 7000,
                ..
            })
        ));
        assert!(matches!(
            classify(503, Some("Sun, 22 Nov 2026 10:00:30 GMT"), b"", now()),
            Err(Error::RateLimited {
                retry_after_ms: 30000,
                ..
            })
        ));
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 09:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now()), None);
    }

    #[test]
    fn long_bodies_are_cut() {
        let body = "x".repeat(1000);
        let Err(Error::Fatal(m)) = classify(400, None, body.as_bytes(), now()) else {
            panic!("expected fatal")
        };
        assert!(m.len() < 230, "{}", m.len());
    }
}
