//! The media pipeline (issue 19 item 3): inbound media fetched from the fake Graph API,
//! verified and served with `Range`; retries, 404s, hash mismatches and restarts; who may
//! download; Meta's upload limits; outbound media uploaded once and sent by Meta's id, also
//! across a crash between the upload and the send.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use sha2::Digest;

use crate::common::*;

/// Fast fetch retries, so back-off does not slow the tests.
const FAST_MEDIA: &str = "\n[media]\nretry_base_ms = 20\nretry_max_ms = 100\n";

async fn media_broker() -> TB {
    TB::start_with(|c| c.extra.push_str(FAST_MEDIA)).await
}

/// Deterministic, non-repeating test bytes.
fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 8) as u8))
        .collect()
}

fn sha_b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(b))
}

/// An inbound image message carrying media `id` with the webhook's (base64) `sha256`.
fn image_webhook(from: &str, media_id: &str, sha256: &str) -> Value {
    image_webhook_at(from, media_id, sha256, now())
}

/// [`image_webhook`] with Meta's `timestamp` (seconds).
fn image_webhook_at(from: &str, media_id: &str, sha256: &str, ts: i64) -> Value {
    let msg = json!({
        "from": from,
        "id": wamid(),
        "timestamp": ts.to_string(),
        "type": "image",
        "image": {"caption": "the broken part", "mime_type": "image/jpeg", "sha256": sha256, "id": media_id}
    });
    envelope(vec![entry(vec![change(N1, vec![msg], vec![])])])
}

/// Sends an image from a new customer; answers (conversation id, message id).
async fn inbound_image(tb: &TB, media_id: &str, body: &[u8]) -> (String, String) {
    tb.graph.add_media(media_id, "image/jpeg", body.to_vec());
    let cust = customer();
    assert_eq!(
        tb.webhook(&image_webhook(&cust, media_id, &sha_b64(body)))
            .await,
        200
    );
    let conv = tb.conv_id(N1, &cust).await;
    let msg = tb.messages(&conv).await[0].clone();
    assert_eq!(msg["type"], json!("image"));
    assert_eq!(msg["media"]["id"], json!(media_id));
    (conv, msg["id"].as_str().unwrap().to_owned())
}

/// Waits until the fake Graph's (located, downloaded) counts of media `id` satisfy `done`.
async fn wait_requests(tb: &TB, id: &str, done: impl Fn((usize, usize)) -> bool) {
    eventually("media requests", WAIT, || async {
        let n = tb.graph.media_requests(id);
        if done(n) {
            Ok(())
        } else {
            Err(format!("{n:?}"))
        }
    })
    .await;
}

async fn wait_downloaded(tb: &TB, conv: &str, msg: &str) -> Value {
    eventually("media downloaded", WAIT, || async {
        let m = tb
            .message(conv, msg)
            .await
            .ok_or("no message".to_string())?;
        if m["media"]["downloaded"] == json!(true) {
            Ok(m)
        } else {
            Err(format!("{}", m["media"]))
        }
    })
    .await
}

/// `GET /api/v1/media/{id}` as `token`, with an optional `Range`: (status, headers, body).
async fn get_media(
    tb: &TB,
    token: &str,
    id: &str,
    range: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = http_client(None)
        .get(tb.url(&format!("/api/v1/media/{id}")))
        .bearer_auth(token);
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn error_code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    v["error"]["code"].as_str().unwrap_or("").to_owned()
}

/// `POST /api/v1/media?filename=` with a body of known length.
async fn upload(tb: &TB, token: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = http_client(None)
        .post(tb.url("/api/v1/media?filename=part.bin"))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_image_is_fetched_verified_and_served_with_ranges() {
    let tb = media_broker().await;
    let body = bytes(200_000, 7);
    let id = uniq("9001");
    let (conv, msg) = inbound_image(&tb, &id, &body).await;
    let m = wait_downloaded(&tb, &conv, &msg).await;
    assert_eq!(m["media"]["size"], json!(body.len()));
    assert_eq!(m["media"]["caption"], json!("the broken part"));
    assert_eq!(tb.graph.media_requests(&id), (1, 1));

    let (s, h, got) = get_media(&tb, BOB, &id, None).await;
    assert_eq!(s, 200);
    assert_eq!(header(&h, "content-type"), "image/jpeg");
    assert_eq!(header(&h, "accept-ranges"), "bytes");
    assert!(got == body, "the bytes served are the bytes fetched");

    let (s, h, got) = get_media(&tb, BOB, &id, Some("bytes=10-19")).await;
    assert_eq!(s, 206);
    assert_eq!(
        header(&h, "content-range"),
        format!("bytes 10-19/{}", body.len())
    );
    assert_eq!(got, &body[10..20]);
    let (s, _, got) = get_media(&tb, BOB, &id, Some("bytes=-5")).await;
    assert_eq!(s, 206);
    assert_eq!(got, &body[body.len() - 5..]);
    let (s, _, got) = get_media(&tb, BOB, &id, Some("bytes=199990-")).await;
    assert_eq!(s, 206);
    assert_eq!(got, &body[199_990..]);

    let (s, h, got) = get_media(&tb, BOB, &id, Some(&format!("bytes={}-", body.len()))).await;
    assert_eq!(s, 416);
    assert_eq!(
        header(&h, "content-range"),
        format!("bytes */{}", body.len())
    );
    assert_eq!(error_code(&got), "range_not_satisfiable");
}

/// The nice values of this process's threads named `name` (Linux keeps one per thread).
#[cfg(target_os = "linux")]
fn thread_nices(name: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // After the `(comm)` field: state is field 3, nice field 19.
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        if let Some(n) = after
            .split_whitespace()
            .nth(16)
            .and_then(|n| n.parse().ok())
        {
            out.push(n);
        }
    }
    out
}

/// Downloads yield the cores to ingest: they run on threads of their own at `media.fetch_nice`
/// (brokers of other tests in this process use the default, 10), and still fetch and verify.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_run_on_threads_of_their_own_at_a_lower_priority() {
    let tb = TB::start_with(|c| {
        c.extra
            .push_str("\n[media]\nretry_base_ms = 20\nretry_max_ms = 100\nfetch_nice = 7\n")
    })
    .await;
    let body = bytes(40_000, 9);
    let id = uniq("7070");
    let (conv, msg) = inbound_image(&tb, &id, &body).await;
    wait_downloaded(&tb, &conv, &msg).await;
    let nices = thread_nices("media-fetch");
    assert!(
        nices.contains(&7),
        "a download thread at nice 7 among {nices:?}"
    );
    let (status, _, got) = get_media(&tb, BOB, &id, None).await;
    assert_eq!((status, got), (200, body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_is_retried_after_server_errors_and_not_served_before() {
    let tb = TB::start_with(|c| {
        c.extra
            .push_str("\n[media]\nretry_base_ms = 300\nretry_max_ms = 300\n")
    })
    .await;
    let id = uniq("9002");
    let body = bytes(5_000, 3);
    tb.graph.add_media(&id, "image/jpeg", body.clone());
    tb.graph.media_fault(&id, MediaFault::Status(500));
    tb.graph.media_fault(&id, MediaFault::Status(503));
    let cust = customer();
    assert_eq!(
        tb.webhook(&image_webhook(&cust, &id, &sha_b64(&body)))
            .await,
        200
    );
    let conv = tb.conv_id(N1, &cust).await;
    let msg = tb.messages(&conv).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Not fetched yet (the first try failed, the next is 150-300 ms away): not found.
    wait_requests(&tb, &id, |(located, _)| located >= 1).await;
    let (s, _, got) = get_media(&tb, BOB, &id, None).await;
    assert_eq!((s, error_code(&got).as_str()), (404, "not_found"));

    wait_downloaded(&tb, &conv, &msg).await;
    assert_eq!(
        tb.graph.media_requests(&id),
        (3, 1),
        "two failures, then the fetch"
    );
    let (s, _, got) = get_media(&tb, BOB, &id, None).await;
    assert_eq!(s, 200);
    assert!(got == body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_from_meta_fails_the_fetch_without_retrying() {
    let tb = media_broker().await;
    let id = uniq("9003");
    tb.graph.add_media(&id, "image/jpeg", bytes(100, 1));
    tb.graph.media_fault(&id, MediaFault::NotFound);
    let cust = customer();
    assert_eq!(tb.webhook(&image_webhook(&cust, &id, "x")).await, 200);
    let conv = tb.conv_id(N1, &cust).await;
    wait_requests(&tb, &id, |(located, _)| located >= 1).await;
    // Absence of retries cannot be awaited: with 20-100 ms back-off, a retried fetch would have
    // asked Meta again many times in this second (and, the fault used up, succeeded).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(tb.graph.media_requests(&id), (1, 0));
    let m = &tb.messages(&conv).await[0];
    assert_eq!(m["media"]["downloaded"], json!(false));
    let (s, _, got) = get_media(&tb, ROOT, &id, None).await;
    assert_eq!((s, error_code(&got).as_str()), (404, "not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_is_not_retried_past_the_media_ids_seven_days() {
    let tb = media_broker().await;
    let id = uniq("9008");
    let body = bytes(100, 8);
    tb.graph.add_media(&id, "image/jpeg", body.clone());
    tb.graph.media_fault(&id, MediaFault::Status(500));
    // Sent 7 days and a minute ago (Meta redelivered it late): its id is expired by now, so
    // the first failure is the last try.
    let cust = customer();
    let ts = now() - 7 * SECS_PER_DAY - 60;
    assert_eq!(
        tb.webhook(&image_webhook_at(&cust, &id, &sha_b64(&body), ts))
            .await,
        200
    );
    let conv = tb.conv_id(N1, &cust).await;
    wait_requests(&tb, &id, |(located, _)| located >= 1).await;
    // As for a 404: a retry (the fault used up, it would succeed) would come within 100 ms.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(tb.graph.media_requests(&id), (1, 0));
    assert_eq!(
        tb.messages(&conv).await[0]["media"]["downloaded"],
        json!(false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_do_not_match_their_hash_are_never_marked_downloaded() {
    let tb = media_broker().await;
    // Meta's answer names another hash each time: retried, then failed after 3 mismatches.
    let id = uniq("9004");
    let body = bytes(3_000, 9);
    tb.graph.add_media(&id, "image/jpeg", body.clone());
    for _ in 0..10 {
        tb.graph.media_fault(&id, MediaFault::WrongSha);
    }
    let cust = customer();
    assert_eq!(
        tb.webhook(&image_webhook(&cust, &id, &sha_b64(&body)))
            .await,
        200
    );
    let conv = tb.conv_id(N1, &cust).await;
    wait_requests(&tb, &id, |(_, downloaded)| downloaded >= 3).await;
    // As above: a fourth try would come within 100 ms.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        tb.graph.media_requests(&id),
        (3, 3),
        "failed after 3 mismatches"
    );
    assert_eq!(
        tb.messages(&conv).await[0]["media"]["downloaded"],
        json!(false)
    );
    let (s, _, _) = get_media(&tb, ROOT, &id, None).await;
    assert_eq!(s, 404);

    // The webhook's own hash is checked too (base64 there): a wrong one never verifies.
    let id2 = uniq("9005");
    tb.graph.add_media(&id2, "image/jpeg", body.clone());
    let cust2 = customer();
    let wrong = sha_b64(b"something else");
    assert_eq!(tb.webhook(&image_webhook(&cust2, &id2, &wrong)).await, 200);
    let conv2 = tb.conv_id(N1, &cust2).await;
    wait_requests(&tb, &id2, |(_, downloaded)| downloaded >= 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(tb.graph.media_requests(&id2).1, 3);
    assert_eq!(
        tb.messages(&conv2).await[0]["media"]["downloaded"],
        json!(false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_fetch_survives_a_crash() {
    let mut tb = media_broker().await;
    let id = uniq("9006");
    let body = bytes(50_000, 5);
    tb.graph.add_media(&id, "image/jpeg", body.clone());
    // The fetch is under way (Meta never answers) when the broker dies.
    tb.graph.media_fault(&id, MediaFault::Hang);
    let cust = customer();
    assert_eq!(
        tb.webhook(&image_webhook(&cust, &id, &sha_b64(&body)))
            .await,
        200
    );
    let conv = tb.conv_id(N1, &cust).await;
    let msg = tb.messages(&conv).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_requests(&tb, &id, |(located, _)| located >= 1).await;
    tb.crash_and_restart().await;
    let m = wait_downloaded(&tb, &conv, &msg).await;
    assert_eq!(m["media"]["size"], json!(body.len()));
    assert_eq!(tb.graph.media_requests(&id), (2, 1));
    let (s, _, got) = get_media(&tb, BOB, &id, None).await;
    assert_eq!(s, 200);
    assert!(got == body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_is_visible_to_whoever_sees_its_conversation() {
    let tb = media_broker().await;
    let id = uniq("9007");
    let body = bytes(1_000, 2);
    let (conv, msg) = inbound_image(&tb, &id, &body).await;
    wait_downloaded(&tb, &conv, &msg).await;
    // Queued in support: its agents see it, a sales agent does not, the admin does.
    for (token, want) in [(ALICE, 200), (BOB, 200), (ROOT, 200), (DAVE, 404)] {
        let (s, _, got) = get_media(&tb, token, &id, None).await;
        assert_eq!(s, want, "{token}");
        if want == 404 {
            assert_eq!(error_code(&got), "not_found");
        }
    }
    // Once bob owns it, alice (an agent of the team) no longer sees it.
    tb.must_claim(BOB, &conv).await;
    assert_eq!(get_media(&tb, ALICE, &id, None).await.0, 404);
    assert_eq!(get_media(&tb, BOB, &id, None).await.0, 200);
    assert_eq!(get_media(&tb, BOB, "no-such-media", None).await.0, 404);
    let (s, _, _) = get_media(&tb, "not-a-token", &id, None).await;
    assert_eq!(s, 401);
}

/// Sends only the head of an upload declaring `length` bytes and answers the status: a refusal
/// from `Content-Length` comes before any of the body is sent.
async fn declared_upload(tb: &TB, content_type: &str, length: u64) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = tb.broker.as_ref().unwrap().addr();
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/media HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {BOB}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, sock.read(&mut buf))
        .await
        .expect("an answer before the body")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.contains("payload_too_large") || !text.starts_with("HTTP/1.1 413"),
        "{text}"
    );
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_held_to_metas_limits() {
    let tb = media_broker().await;
    let (s, v) = upload(&tb, BOB, "image/gif", bytes(100, 1)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let (s, v) = upload(&tb, BOB, "", bytes(100, 1)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    // Declared too large: refused from Content-Length, before the body is sent at all.
    assert_eq!(
        declared_upload(&tb, "image/jpeg", 5 * 1024 * 1024 + 1).await,
        413
    );
    assert_eq!(
        declared_upload(&tb, "image/webp", 500 * 1024 + 1).await,
        413
    );
    assert_eq!(
        declared_upload(&tb, "video/mp4", 16 * 1024 * 1024 + 1).await,
        413
    );
    assert_eq!(
        declared_upload(&tb, "application/pdf", 100 * 1024 * 1024 + 1).await,
        413
    );
    // Streamed without a length: refused once the bytes pass the limit (one byte more).
    let mut chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..5).map(|_| Ok(vec![1u8; 1024 * 1024])).collect();
    chunks.push(Ok(vec![1u8]));
    let resp = http_client(None)
        .post(tb.url("/api/v1/media"))
        .bearer_auth(BOB)
        .header("content-type", "image/png")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);

    // Within the limits: a 4 MiB document (above the router's 3 MiB body limit) and an image.
    let doc = bytes(4 * 1024 * 1024, 4);
    let (s, v) = upload(&tb, BOB, "application/pdf", doc.clone()).await;
    assert_eq!(s, 201, "{v}");
    let doc_id = v["id"].as_str().unwrap().to_owned();
    let (s, h, got) = get_media(&tb, BOB, &doc_id, None).await;
    assert_eq!(s, 200);
    assert_eq!(header(&h, "content-type"), "application/pdf");
    assert!(got == doc);
    let (s, v) = upload(&tb, BOB, "audio/ogg; codecs=opus", bytes(10_000, 4)).await;
    assert_eq!(s, 201, "{v}");
    // An upload is its uploader's (and admins') until it is sent somewhere.
    assert_eq!(get_media(&tb, DAVE, &doc_id, None).await.0, 404);
    assert_eq!(get_media(&tb, ROOT, &doc_id, None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_stalls_is_a_request_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tb = TB::start_with(|c| {
        c.extra.push_str(FAST_MEDIA);
        c.server_extra = "body_timeout_ms = 300\nmin_body_rate = 1000".into();
    })
    .await;
    let addr = tb.broker.as_ref().unwrap().addr();
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/media HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {BOB}\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&[0u8; 100]).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, sock.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
}

/// A conversation claimed by bob and an image bob uploaded: (conversation, media id, bytes).
async fn claimed_with_upload(tb: &TB) -> (String, String, String, Vec<u8>) {
    let cust = customer();
    let conv = tb.open_conv(N1, &cust, "send me a photo").await;
    tb.must_claim(BOB, &conv).await;
    let img = bytes(300_000, 6);
    let (s, v) = upload(tb, BOB, "image/jpeg", img.clone()).await;
    assert_eq!(s, 201, "{v}");
    (conv, cust, v["id"].as_str().unwrap().to_owned(), img)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_media_is_uploaded_once_and_sent_by_metas_id() {
    let tb = media_broker().await;
    let (conv, cust, media_id, img) = claimed_with_upload(&tb).await;
    let body = json!({"media": {"id": media_id, "caption": "here it is"}, "idempotency_key": "m1"});
    let (s, m) = tb
        .post(
            BOB,
            &format!("/api/v1/conversations/{conv}/messages"),
            body.clone(),
        )
        .await;
    assert_eq!(s, 202, "{m}");
    assert_eq!(m["type"], json!("image"));
    assert_eq!(m["text"], json!("here it is"));
    assert_eq!(m["media"]["id"], json!(media_id));
    assert_eq!(m["media"]["downloaded"], json!(true));
    let id = m["id"].as_str().unwrap().to_owned();
    tb.wait_status(&conv, &id, "accepted").await;

    let ups = tb.graph.uploads();
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].phone_number_id, N1);
    assert_eq!(ups[0].messaging_product.as_deref(), Some("whatsapp"));
    assert_eq!(ups[0].content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(ups[0].filename.as_deref(), Some("part.bin"));
    assert_eq!(ups[0].auth.as_deref(), Some("Bearer test-access"));
    assert!(ups[0].bytes == img, "the uploaded bytes are the agent's");
    let sends = tb.graph.sends_for(&id);
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].body["type"], json!("image"));
    assert_eq!(sends[0].body["to"], json!(cust));
    assert_eq!(sends[0].body["image"]["id"], json!(ups[0].id));
    assert_eq!(sends[0].body["image"]["caption"], json!("here it is"));

    // The same key again: the same message, nothing uploaded or sent again.
    let (s, again) = tb
        .post(BOB, &format!("/api/v1/conversations/{conv}/messages"), body)
        .await;
    assert_eq!((s, &again["id"]), (202, &json!(id)));
    // Whoever sees the conversation may now download what was sent in it.
    assert_eq!(get_media(&tb, ROOT, &media_id, None).await.0, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tb.graph.uploads().len(), 1);
    assert_eq!(tb.graph.sends_for(&id).len(), 1);

    // Unknown media, or someone else's upload: 400, nothing queued.
    let (s, v) = tb
        .post(
            BOB,
            &format!("/api/v1/conversations/{conv}/messages"),
            json!({"media": {"id": "nope"}}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_failure_is_retried_without_sending_twice() {
    let tb = media_broker().await;
    tb.graph.upload_fault(500);
    tb.graph.upload_fault(503);
    let (conv, _, media_id, _) = claimed_with_upload(&tb).await;
    let (s, m) = tb
        .post(
            BOB,
            &format!("/api/v1/conversations/{conv}/messages"),
            json!({"media": {"id": media_id}, "idempotency_key": "m2"}),
        )
        .await;
    assert_eq!(s, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_owned();
    tb.wait_status(&conv, &id, "accepted").await;
    assert_eq!(tb.graph.uploads().len(), 1, "two refused, one taken");
    assert_eq!(tb.graph.sends_for(&id).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_upload_and_send_uploads_once_and_sends_once() {
    let mut tb = TB::start_with(|c| {
        c.extra.push_str(FAST_MEDIA);
        c.outbox_extra = "ambiguous_hold_ms = 20000".into();
    })
    .await;
    let (conv, cust, media_id, _) = claimed_with_upload(&tb).await;
    // The upload is answered; the send reaches Meta but its answer never comes back.
    tb.graph.push(GraphReply::Hang);
    let (s, m) = tb
        .post(
            BOB,
            &format!("/api/v1/conversations/{conv}/messages"),
            json!({"media": {"id": media_id}, "idempotency_key": "m3"}),
        )
        .await;
    assert_eq!(s, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_owned();
    tb.graph.wait_sends(1, WAIT).await;
    tb.crash_and_restart().await;

    // After the restart the send is in doubt: held for a callback, which Meta sends (echoing
    // the message id), so it is adopted and never sent again; nothing is uploaded again.
    let mut st = status_obj("wamid.MEDIA1", "sent", now(), &cust);
    st["biz_opaque_callback_data"] = json!(id);
    assert_eq!(tb.webhook(&status_webhook(N1, vec![st])).await, 200);
    let m = tb.wait_status(&conv, &id, "sent").await;
    assert_eq!(m["wamid"], json!("wamid.MEDIA1"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(tb.graph.uploads().len(), 1);
    let sends = tb.graph.sends_for(&id);
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert_eq!(
        sends[0].body["image"]["id"],
        json!(tb.graph.uploads()[0].id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_retried_after_a_crash_reuses_the_upload() {
    let mut tb = TB::start_with(|c| {
        c.extra.push_str(FAST_MEDIA);
        c.outbox_extra = "ambiguous_hold_ms = 200".into();
    })
    .await;
    let (conv, _, media_id, _) = claimed_with_upload(&tb).await;
    tb.graph.push(GraphReply::Hang);
    let (s, m) = tb
        .post(
            BOB,
            &format!("/api/v1/conversations/{conv}/messages"),
            json!({"media": {"id": media_id}, "idempotency_key": "m4"}),
        )
        .await;
    assert_eq!(s, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_owned();
    tb.graph.wait_sends(1, WAIT).await;
    tb.crash_and_restart().await;
    // No callback: after the hold it is sent again, by the id Meta gave the first upload.
    tb.wait_status(&conv, &id, "accepted").await;
    let ups = tb.graph.uploads();
    assert_eq!(ups.len(), 1, "uploaded once");
    for s in tb.graph.sends_for(&id) {
        assert_eq!(s.body["image"]["id"], json!(ups[0].id));
    }
}
