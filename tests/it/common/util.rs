//! Small helpers every test uses: unique ids, signatures, waiting for a condition.
//!
//! Ids are unique within the test process (one counter), so tests running in parallel in the
//! one test binary never share a customer, a wamid or an idempotency key.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::config::APP_SECRET;

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

static SEQ: AtomicU64 = AtomicU64::new(1);

/// A fresh, process-unique inbound wamid.
pub fn wamid() -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("wamid.IN{}x{:06}", std::process::id(), n)
}

/// A fresh, process-unique string (customers, idempotency keys, ...).
pub fn uniq(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{:04}", std::process::id() % 1000, n)
}

/// A fresh customer wa_id (digits only, like a phone number).
pub fn customer() -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("4915{:03}{:05}", std::process::id() % 1000, n % 100_000)
}

/// `sha256=<lowercase hex HMAC-SHA256(app_secret, body)>`
pub fn sign(body: &[u8]) -> String {
    sign_with(APP_SECRET, body)
}

pub fn sign_with(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn err_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error.code>")
}

/// Retries `f` every ~20 ms until it returns Ok or `timeout` passes (then panics with the
/// last error).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                if Instant::now() >= deadline {
                    panic!("timed out after {timeout:?} waiting for {what}; last: {e}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub const WAIT: Duration = Duration::from_secs(10);

/// Holds a broker's only admission slot with a request to `addr` whose head (and part of its
/// body) is `head` and whose body never finishes arriving, until `probe` is refused (answers
/// `Some`). If the held request arrived while a probe was in flight, it was the one refused (it
/// has an answer): it is sent again on a new connection. Returns the held connection and what
/// the refused probe saw.
pub async fn hold_until_refused<T, F, Fut>(
    addr: &str,
    head: &[u8],
    mut probe: F,
) -> (tokio::net::TcpStream, T)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    use tokio::io::AsyncWriteExt;
    let deadline = tokio::time::Instant::now() + WAIT;
    'hold: loop {
        let mut held = tokio::net::TcpStream::connect(addr).await.unwrap();
        held.write_all(head).await.unwrap();
        held.flush().await.unwrap();
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no request was refused"
            );
            if let Some(refused) = probe().await {
                return (held, refused);
            }
            let mut answer = [0u8; 1];
            if held.try_read(&mut answer).is_ok() {
                continue 'hold; // the held request got an answer: it was the refused one
            }
            tokio::task::yield_now().await;
        }
    }
}

pub fn parse_time(s: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    let s = s
        .as_str()
        .unwrap_or_else(|| panic!("expected an RFC 3339 string, got {s}"));
    chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("not RFC 3339: {s:?}: {e}"))
}
