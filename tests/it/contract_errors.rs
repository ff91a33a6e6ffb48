//! Every error the HTTP surface gives is the contract's `{"error": {"code", "message"}}` JSON:
//! query-string, path and body rejections, paths and methods nothing serves, odd ids.

use crate::common::*;
use serde_json::{json, Value};

/// Sends `method path` and returns (status, content-type, body as JSON or Null).
async fn raw_call(api: &Api, method: &str, path: &str) -> (u16, String, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let resp = api
        .http
        .request(method, api.url(path))
        .bearer_auth(ROOT)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, ct, body)
}

/// Asserts the contract's error shape with `code` (and a message) on a JSON response.
fn assert_error(what: &str, (status, ct, body): &(u16, String, Value), want: u16, code: &str) {
    assert_eq!(*status, want, "{what}: {body}");
    assert!(
        ct.starts_with("application/json"),
        "{what}: content-type {ct:?}, body {body}"
    );
    assert_eq!(err_code(body), code, "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: no message: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_string_rejections_are_json_invalid_request() {
    let tb = TB::start().await;
    for path in [
        "/api/v1/conversations?limit=-1",
        "/api/v1/conversations?limit=abc",
        "/api/v1/conversations?limit=99999999999999999999999",
        "/api/v1/conversations?status=queued&status=bot",
        "/api/v1/conversations?team=support&team=sales",
        "/api/v1/teams/support/queue?limit=x",
        "/api/v1/events?types=conversation.*&types=message.*",
    ] {
        let r = raw_call(&tb.api, "GET", path).await;
        assert_error(path, &r, 400, "invalid_request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_webhook_handshake_is_a_json_403_whatever_its_query() {
    let tb = TB::start().await;
    let good = format!("hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=42");
    for query in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1".to_string(),
        format!("{good}&hub.mode=subscribe"),
        "hub.challenge=%FF".to_string(),
    ] {
        let path = format!("/webhooks/whatsapp?{query}");
        let r = raw_call(&tb.api, "GET", &path).await;
        assert_error(&path, &r, 403, "forbidden");
    }
    let (s, _, _) = raw_call(&tb.api, "GET", &format!("/webhooks/whatsapp?{good}")).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_zero_is_refused_and_one_gives_one() {
    let tb = TB::start().await;
    for _ in 0..2 {
        tb.open_conv(N1, &customer(), "hi").await;
    }
    let r = raw_call(&tb.api, "GET", "/api/v1/conversations?limit=0").await;
    assert_error("limit=0", &r, 400, "invalid_request");
    let (s, v) = tb.get(ROOT, "/api/v1/conversations?limit=1").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["conversations"].as_array().map(Vec::len), Some(1), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_rejections_are_json() {
    let tb = TB::start().await;
    // Not UTF-8 once percent-decoded.
    for path in [
        "/api/v1/conversations/%FF%FE",
        "/api/v1/conversations/%FF/claim",
        "/api/v1/teams/%C3%28/queue",
    ] {
        let r = raw_call(&tb.api, "GET", path).await;
        let r = if r.0 == 405 {
            raw_call(&tb.api, "POST", path).await
        } else {
            r
        };
        assert_error(path, &r, 400, "invalid_request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_paths_and_methods_are_json() {
    let tb = TB::start().await;
    let r = raw_call(&tb.api, "GET", "/api/v1/nothing-here").await;
    assert_error("unknown path", &r, 404, "not_found");
    let r = raw_call(&tb.api, "GET", "/").await;
    assert_error("root", &r, 404, "not_found");
    let r = raw_call(&tb.api, "DELETE", "/api/v1/conversations/c0").await;
    assert_error("DELETE on a conversation", &r, 405, "method_not_allowed");
    let resp = tb
        .api
        .http
        .put(tb.api.url("/api/v1/conversations/c0/claim"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(
        resp.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("POST"),
        "405 still names what the route takes"
    );
}

/// Writes `request` on a fresh connection and returns the raw answer.
async fn raw_http(api: &Api, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = api.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(WAIT, conn.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "no answer to {:?}",
        String::from_utf8_lossy(request)
    );
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_ids_are_json_not_found() {
    let tb = TB::start().await;
    // A quote, raw and percent-encoded, and a long id (still below the 64 KiB request-target
    // limit of the HTTP parser).
    let long = "x".repeat(60_000);
    for id in ["a\"b", "%22quoted%22", "it's", long.as_str()] {
        for (method, suffix) in [("GET", ""), ("POST", "/notes")] {
            let body = if method == "POST" {
                "{\"text\":\"n\"}"
            } else {
                ""
            };
            let req = format!(
                "{method} /api/v1/conversations/{id}{suffix} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ROOT}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let answer = raw_http(&tb.api, req.as_bytes()).await;
            let shown = &id[..id.len().min(20)];
            assert!(
                answer.starts_with("HTTP/1.1 404"),
                "{method} {shown}: {}",
                &answer[..answer.len().min(300)]
            );
            let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
            let v: Value = serde_json::from_str(body)
                .unwrap_or_else(|_| panic!("{method} {shown}: body is not JSON: {body:?}"));
            assert_eq!(
                v,
                json!({"error": {"code": "not_found", "message": "not found"}})
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_http_parser_refuses_get_json_bodies_too() {
    let tb = TB::start().await;
    let huge = format!("/api/v1/conversations/{}", "x".repeat(100 * 1024));
    for (target, status, code) in [
        ("/api/v1/conversations/a<b", 400, "invalid_request"),
        ("/api/v1/conversations/a b", 400, "invalid_request"),
        (
            "/api/v1/conversations?status=\"queued\"",
            400,
            "invalid_request",
        ),
        (huge.as_str(), 414, "uri_too_long"),
    ] {
        let req =
            format!("GET {target} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ROOT}\r\n\r\n");
        let answer = raw_http(&tb.api, req.as_bytes()).await;
        let shown = &target[..target.len().min(40)];
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{shown}: no head: {answer:?}"));
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{shown}: {head}"
        );
        let lower = head.to_ascii_lowercase();
        assert!(
            lower.contains("content-type: application/json"),
            "{shown}: {head}"
        );
        assert!(
            lower.contains(&format!("content-length: {}", body.len())),
            "{shown}: {head}"
        );
        let v: Value = serde_json::from_str(body)
            .unwrap_or_else(|_| panic!("{shown}: body is not JSON: {body:?}"));
        assert_eq!(err_code(&v), code, "{shown}: {v}");
    }
    // The broker serves on as before.
    assert_eq!(tb.healthz().await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_rejections_are_json_invalid_request() {
    let tb = TB::start().await;
    let (id, _) = claimed(&tb, N1, BOB).await;
    let path = format!("/api/v1/conversations/{id}/notes");
    for (ct, body) in [
        ("application/json", "{not json"),
        ("text/plain", "hello"),
        ("application/json", "{\"text\": 5}"),
    ] {
        let resp = tb
            .api
            .http
            .post(tb.api.url(&path))
            .bearer_auth(BOB)
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 400, "{ct} {body}: {v}");
        assert_eq!(err_code(&v), "invalid_request", "{ct} {body}: {v}");
    }
}
