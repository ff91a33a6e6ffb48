//! The webhook sender's HTTP/1.1 client: a small pool of keep-alive connections to one address.
//!
//! Why not reqwest here: the generator shares the machine's cores with the broker it measures,
//! so every microsecond it spends per request is taken from the broker and shows up as latency
//! of its own scheduling. Profiled at 10,000 webhooks/s, reqwest's per-request work (URL and
//! header handling, its pool's checkout, timeout plumbing) was about a fifth of the generator's
//! CPU. This client parses the URL once and keeps hyper's bare `http1` connections: a request
//! takes an idle connection (or opens one), sends, drains the answer and puts the connection
//! back. Only plain `http://` targets use it (the load generator drives loopback brokers);
//! anything else falls back to reqwest.
//!
//! Bounds: at most `max_idle` connections are kept; the number in use is bounded by the caller
//! (the open loop's semaphore, the closed loop's worker count). Each request has a deadline.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::outcome::{io_error_kind, retry_after};
use crate::stats::lock;

/// What came back: the status and a `Retry-After` hint, or a transport failure by kind.
pub type Answer = Result<(StatusCode, Option<Duration>), &'static str>;

pub struct Http1Pool {
    addr: SocketAddr,
    host: HeaderValue,
    path: String,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    max_idle: usize,
    timeout: Duration,
}

impl Http1Pool {
    /// A pool for `url` when it is a plain `http://` URL with an IP address, else None.
    pub fn for_url(url: &str, max_idle: usize, timeout: Duration) -> Option<Self> {
        let u = url::Url::parse(url).ok()?;
        if u.scheme() != "http" {
            return None;
        }
        let ip: std::net::IpAddr = u.host_str()?.trim_matches(['[', ']']).parse().ok()?;
        let port = u.port_or_known_default()?;
        let host = HeaderValue::from_str(&format!("{}:{port}", u.host_str()?)).ok()?;
        let mut path = u.path().to_string();
        if let Some(q) = u.query() {
            path.push('?');
            path.push_str(q);
        }
        Some(Http1Pool {
            addr: SocketAddr::new(ip, port),
            host,
            path,
            idle: Mutex::new(Vec::with_capacity(max_idle)),
            max_idle: max_idle.max(1),
            timeout,
        })
    }

    /// POSTs a JSON `body` with one extra header; the answer's body is read and dropped so the
    /// connection can carry the next request.
    pub async fn post_json(&self, header: (&'static str, &str), body: Bytes) -> Answer {
        match tokio::time::timeout(self.timeout, self.exchange(header, body)).await {
            Ok(a) => a,
            Err(_) => Err("timeout"),
        }
    }

    async fn exchange(&self, header: (&'static str, &str), body: Bytes) -> Answer {
        let mut conn = self.checkout().await?;
        let value = HeaderValue::from_str(header.1).map_err(|_| "request_error")?;
        let req = Request::post(self.path.as_str())
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(header.0, value)
            .body(Full::new(body))
            .map_err(|_| "request_error")?;
        let resp = conn.send_request(req).await.map_err(hyper_kind)?;
        let status = resp.status();
        let hint = retry_after(resp.headers());
        resp.into_body().collect().await.map_err(hyper_kind)?;
        self.checkin(conn);
        Ok((status, hint))
    }

    /// An idle connection that is still open, or a new one.
    async fn checkout(&self) -> Result<SendRequest<Full<Bytes>>, &'static str> {
        loop {
            let Some(mut c) = lock(&self.idle).pop() else {
                break;
            };
            if c.ready().await.is_ok() {
                return Ok(c);
            }
        }
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| io_error_kind(&e).unwrap_or("connect_error"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(hyper_kind)?;
        // The connection task ends when the sender is dropped or the peer closes.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn checkin(&self, conn: SendRequest<Full<Bytes>>) {
        if conn.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }
}

fn hyper_kind(e: hyper::Error) -> &'static str {
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        return "connection_closed";
    }
    if e.is_timeout() {
        return "timeout";
    }
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        if let Some(kind) = s.downcast_ref::<std::io::Error>().and_then(io_error_kind) {
            return kind;
        }
        src = s.source();
    }
    "request_error"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_with_an_address() {
        let d = Duration::from_secs(1);
        let p = Http1Pool::for_url("http://127.0.0.1:8080/webhooks/whatsapp", 4, d);
        let p = p.map(|p| (p.addr.to_string(), p.path));
        assert_eq!(
            p,
            Some(("127.0.0.1:8080".to_string(), "/webhooks/whatsapp".into()))
        );
        assert!(Http1Pool::for_url("https://127.0.0.1/x", 4, d).is_none());
        assert!(Http1Pool::for_url("http://localhost/x", 4, d).is_none());
    }

    #[tokio::test]
    async fn posts_reuse_one_connection_and_report_refusals() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.ok();
        let Some(listener) = listener else {
            panic!("cannot bind loopback");
        };
        let addr = listener.local_addr().ok();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(|h: axum::http::HeaderMap, b: Bytes| async move {
                let sig = h.get("x-sig").and_then(|v| v.to_str().ok()).unwrap_or("");
                if sig == "ok" && b.as_ref() == b"{}" {
                    StatusCode::OK
                } else {
                    StatusCode::BAD_REQUEST
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let url = format!(
            "http://{}/hook",
            addr.map(|a| a.to_string()).unwrap_or_default()
        );
        let pool = Http1Pool::for_url(&url, 2, Duration::from_secs(5));
        let Some(pool) = pool else {
            panic!("pool for {url}");
        };
        for _ in 0..5 {
            let a = pool
                .post_json(("x-sig", "ok"), Bytes::from_static(b"{}"))
                .await;
            assert_eq!(a.map(|(s, _)| s), Ok(StatusCode::OK));
        }
        assert_eq!(
            lock(&pool.idle).len(),
            1,
            "sequential requests share one connection"
        );
        let a = pool
            .post_json(("x-sig", "bad"), Bytes::from_static(b"{}"))
            .await;
        assert_eq!(a.map(|(s, _)| s), Ok(StatusCode::BAD_REQUEST));

        // Nothing listens here: a refused connection is a transport failure by kind.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.ok();
        let dead = closed.and_then(|l| l.local_addr().ok());
        let url = format!(
            "http://{}/hook",
            dead.map(|a| a.to_string()).unwrap_or_default()
        );
        let Some(pool) = Http1Pool::for_url(&url, 2, Duration::from_secs(5)) else {
            panic!("pool for {url}");
        };
        assert_eq!(
            pool.post_json(("x-sig", "ok"), Bytes::new()).await,
            Err("connection_refused")
        );
    }
}
