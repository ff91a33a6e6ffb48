//! JSON bodies for the answers hyper gives on its own, before any route runs.
//!
//! A request hyper cannot parse (bytes no URL may hold, such as `<` or a space in the target; a
//! target over 64 KiB; headers over its limit) is answered by hyper itself with a bare head —
//! `400`, `414` or `431`, `content-length: 0`, `connection: close` — and no hook to change it.
//! Every other error of the API is `{"error": {"code", "message"}}`; so that these are too, each
//! connection's writes pass through [`ParseErrorBodies`] (wrapped around it by
//! `super::server`), which recognises such a head and writes it out with the JSON body instead.
//!
//! Invariants: only a write that is exactly one response head with a 4xx status,
//! `content-length: 0`, `connection: close` and no `content-type` is rewritten — no route of this
//! broker answers a 4xx without a JSON body, so nothing a handler wrote ever matches; everything
//! else passes through unchanged, vectored writes included. A rewritten answer is reported written
//! only once all of it is, so hyper's flush and close come after it.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::Code;

/// A connection whose bare error heads from hyper are sent with a JSON error body.
pub struct ParseErrorBodies<IO> {
    inner: IO,
    /// A rewritten answer and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<IO> ParseErrorBodies<IO> {
    pub fn new(inner: IO) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

/// The JSON answer for `head`, when it is one of hyper's bare error heads.
fn rewrite(head: &[u8]) -> Option<Vec<u8>> {
    // Cheap checks first: this sees every write. hyper's bare heads are ~100 bytes; a head
    // alone ends where it says the (empty) body starts.
    if head.len() > 512 || !head.starts_with(b"HTTP/1.1 4") || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let status_line = text.strip_suffix("\r\n\r\n")?.split("\r\n").next()?;
    let rest = status_line.strip_prefix("HTTP/1.1 4")?;
    let lower = text.to_ascii_lowercase();
    if text.matches("\r\n\r\n").count() != 1
        || !lower.contains("\r\ncontent-length: 0\r\n")
        || !lower.contains("\r\nconnection: close\r\n")
        || lower.contains("\r\ncontent-type:")
    {
        return None;
    }
    let (code, message) = match rest.get(..2)? {
        "14" => (Code::UriTooLong, "the request target is longer than 65534 bytes"),
        "31" => (Code::HeadersTooLarge, "the request headers are too large"),
        _ => (
            Code::InvalidRequest,
            "the request is not valid HTTP (a request target may not hold spaces, quotes, '<', '>' and the like unless percent-encoded)",
        ),
    };
    let body =
        serde_json::json!({ "error": { "code": code.as_str(), "message": message } }).to_string();
    let head = text.strip_suffix("\r\n\r\n")?.replacen(
        "content-length: 0",
        &format!(
            "content-type: application/json\r\ncontent-length: {}",
            body.len()
        ),
        1,
    );
    Some(format!("{head}\r\n\r\n{body}").into_bytes())
}

impl<IO: AsyncWrite + Unpin> ParseErrorBodies<IO> {
    /// Writes `buf`, or what it was rewritten to; Ready(len) once all of it is written.
    fn write_or_rewrite(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.pending.is_none() {
            match rewrite(buf) {
                Some(answer) => self.pending = Some((answer, 0)),
                None => return Pin::new(&mut self.inner).poll_write(cx, buf),
            }
        }
        while let Some((answer, done)) = self.pending.as_mut() {
            if *done == answer.len() {
                self.pending = None;
                return Poll::Ready(Ok(buf.len()));
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(buf.len()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ParseErrorBodies<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ParseErrorBodies<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_or_rewrite(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // hyper writes a bare head as the only buffer; anything with more is a real response.
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        match (filled.next(), filled.next()) {
            (Some(only), None) if self.pending.is_some() || rewrite(only).is_some() => {
                self.write_or_rewrite(cx, only)
            }
            _ => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARE: &str =
        "HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 07 Dec 2026 12:47:44 GMT\r\n\r\n";

    #[test]
    fn a_bare_error_head_gets_a_json_body() {
        let out = String::from_utf8(rewrite(BARE.as_bytes()).expect("rewritten")).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "uri_too_long");
    }

    #[test]
    fn anything_else_is_left_alone() {
        for other in [
            // A handler's error: it has a type and a body.
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            // Success without a body, and a 4xx that keeps the connection.
            "HTTP/1.1 204 No Content\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            // Two heads in one write.
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\nHTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        ] {
            assert!(rewrite(other.as_bytes()).is_none(), "{other}");
        }
    }
}
