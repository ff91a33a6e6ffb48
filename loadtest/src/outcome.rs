//! HTTP outcome classification and the loopback-only HTTP client.
//!
//! Every failed request is reduced to a short, stable error *kind* (`connection_refused`,
//! `connection_reset`, `connection_closed`, `timeout`, `overloaded` for 503, `http_NNN`, ...) so
//! reports can count errors by kind. Only a 2xx is ever treated as success by callers; this module
//! decides nothing about acknowledgement itself.
//!
//! All clients are built with `no_proxy()` so environment proxy settings can never route the
//! load somewhere other than the loopback address it was given.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;

/// Builds an HTTP/1.1 client that ignores proxy settings.
pub fn client(pool: usize, timeout: Option<Duration>) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(pool)
        .pool_idle_timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(3));
    if let Some(t) = timeout {
        b = b.timeout(t);
    }
    Ok(b.build()?)
}

/// The kind of a transport-level failure.
pub fn error_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        return "timeout";
    }
    let mut src: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = src {
        if let Some(kind) = s.downcast_ref::<io::Error>().and_then(io_error_kind) {
            return kind;
        }
        let text = s.to_string();
        if text.contains("connection closed before message completed")
            || text.contains("IncompleteMessage")
        {
            return "connection_closed";
        }
        src = s.source();
    }
    if e.is_connect() {
        "connect_error"
    } else if e.is_body() || e.is_decode() {
        "body_error"
    } else if e.is_request() {
        "request_error"
    } else {
        "other_error"
    }
}

/// The kind of a connection-level I/O failure, when it is one of the named ones.
pub fn io_error_kind(e: &io::Error) -> Option<&'static str> {
    Some(match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection_refused",
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => "connection_reset",
        io::ErrorKind::ConnectionAborted => "connection_aborted",
        io::ErrorKind::UnexpectedEof => "connection_closed",
        io::ErrorKind::TimedOut => "timeout",
        _ => return None,
    })
}

/// The kind of a non-success HTTP status.
pub fn status_kind(status: StatusCode) -> String {
    match status.as_u16() {
        503 => "overloaded".to_string(),
        n => format!("http_{n}"),
    }
}

/// Whether a failed delivery is worth repeating (as Meta would): transport errors, timeouts,
/// 408, 429 and 5xx. Other 4xx mean the request itself is wrong and would fail again.
pub fn retryable_status(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// `Retry-After` in seconds, if present and sane (capped at 30 s).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = v.trim().parse().ok()?;
    if secs.is_finite() && secs >= 0.0 {
        Some(Duration::from_secs_f64(secs.min(30.0)))
    } else {
        None
    }
}

/// Exponential back-off: 200 ms doubling per attempt, capped at 5 s, with ±20 % jitter.
pub fn backoff(attempt: u32) -> Duration {
    let base = 200u64.saturating_mul(1u64 << attempt.min(10)).min(5_000);
    let jitter = rand::random::<f64>() * 0.4 + 0.8;
    Duration::from_millis((base as f64 * jitter) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_connection_is_classified() {
        // Bind then drop to get a port that is (almost certainly) closed.
        let port = match std::net::TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l.local_addr().map(|a| a.port()).unwrap_or(1),
            Err(_) => 1,
        };
        let c = match client(1, Some(Duration::from_secs(2))) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        match c.get(format!("http://127.0.0.1:{port}/")).send().await {
            Ok(r) => panic!("unexpected answer {}", r.status()),
            Err(e) => assert_eq!(error_kind(&e), "connection_refused", "{e:?}"),
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(status_kind(StatusCode::SERVICE_UNAVAILABLE), "overloaded");
        assert_eq!(status_kind(StatusCode::UNAUTHORIZED), "http_401");
        assert!(retryable_status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!retryable_status(StatusCode::BAD_REQUEST));
        assert!(backoff(0) < Duration::from_millis(300));
        assert!(backoff(30) <= Duration::from_secs(6));
    }
}
