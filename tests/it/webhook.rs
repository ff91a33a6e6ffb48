//! WhatsApp webhook: handshake, signatures, batching, redelivery, limits, unknown content,
//! outbound status updates.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

const FIXTURE_TEXT: &str = r#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"Sheena Nelson"},"wa_id":"16505551234"}],"messages":[{"from":"16505551234","id":"wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=","timestamp":"1749416383","type":"text","text":{"body":"Does it come in another color?"}}]},"field":"messages"}]}]}"#;

const FIXTURE_IMAGE: &str = r#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"Sheena Nelson"},"wa_id":"16505551234"}],"messages":[{"from":"16505551234","id":"wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgB=","timestamp":"1744344496","type":"image","image":{"caption":"Taj Mahal","mime_type":"image/jpeg","sha256":"SfInY0gGKTsJlUWbwxC1k+FAD0FZHvzwfpvO0zX0GUI=","id":"1003383421387256","url":"https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=133"}}]},"field":"messages"}]}]}"#;

const FIXTURE_STATUS_FAILED: &str = r#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"statuses":[{"id":"WAMID_PLACEHOLDER","status":"failed","timestamp":"1751142888","recipient_id":"RECIPIENT_PLACEHOLDER","errors":[{"code":131049,"title":"This message was not delivered to maintain healthy ecosystem engagement.","message":"This message was not delivered to maintain healthy ecosystem engagement.","error_data":{"details":"In order to maintain a healthy ecosystem engagement, the message failed to be delivered."},"href":"/documentation/business-messaging/whatsapp/support/error-codes"}]}]},"field":"messages"}]}]}"#;

const FIXTURE_TEMPLATE_STATUS: &str = r#"{"entry":[{"id":"102290129340398","time":1751247548,"changes":[{"value":{"event":"APPROVED","message_template_id":1689556908129832,"message_template_name":"order_confirmation","message_template_language":"en-US","reason":"NONE","message_template_category":"UTILITY"},"field":"message_template_status_update"}]}],"object":"whatsapp_business_account"}"#;

fn texts(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .map(|m| m["text"].as_str().unwrap_or("<null>").to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Verification handshake
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_handshake_echoes_challenge_as_text_plain() {
    let tb = TB::start().await;
    let resp = tb
        .http
        .get(tb.url(&format!(
            "/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(ct.starts_with("text/plain"), "content-type {ct:?}");
    assert_eq!(resp.text().await.unwrap(), "1158201444");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_handshake_wrong_or_missing_token_is_403() {
    let tb = TB::start().await;
    for q in [
        "hub.mode=subscribe&hub.verify_token=not-the-token&hub.challenge=42",
        "hub.mode=subscribe&hub.challenge=42",
        "hub.mode=subscribe&hub.verify_token=test-verifyX&hub.challenge=42",
        "hub.mode=subscribe&hub.verify_token=&hub.challenge=42",
    ] {
        let resp = tb
            .http
            .get(tb.url(&format!("/webhooks/whatsapp?{q}")))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert_eq!(status, 403, "query {q}");
        assert_ne!(body, "42", "challenge echoed for {q}");
    }
}

// ---------------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_signature_is_401_and_nothing_is_stored() {
    let tb = TB::start().await;
    let cust = customer();
    let w = wamid();
    let body = serde_json::to_vec(&text_webhook(N1, &cust, &w, now(), "sneaky")).unwrap();
    let other_body = serde_json::to_vec(&text_webhook(N1, &cust, &w, now(), "other")).unwrap();
    let good = sign(&body);
    let upper_prefix = good.replacen("sha256=", "SHA1=", 1);
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing header", None),
        ("wrong secret", Some(sign_with("not-the-secret", &body))),
        ("signature of another body", Some(sign(&other_body))),
        ("empty", Some(String::new())),
        ("prefix only", Some("sha256=".into())),
        ("not hex", Some("sha256=zzzz".into())),
        (
            "bare hex without prefix",
            Some(good.trim_start_matches("sha256=").to_owned()),
        ),
        ("wrong algorithm prefix", Some(upper_prefix)),
        ("truncated", Some(good[..good.len() - 2].to_owned())),
    ];
    for (name, sig) in cases {
        let (status, v) = tb.webhook_raw(body.clone(), sig.as_deref()).await;
        assert_eq!(status, 401, "{name}: {v}");
        assert_eq!(err_code(&v), "invalid_signature", "{name}: {v}");
    }
    assert!(
        tb.conv_of(N1, &cust).await.is_none(),
        "a conversation was created by unsigned traffic"
    );

    // The same body, correctly signed, is then accepted and stored (the rejected attempts
    // must not have marked the wamid as seen).
    let (status, _) = tb.webhook_raw(body.clone(), Some(&good)).await;
    assert_eq!(status, 200);
    let id = tb.conv_id(N1, &cust).await;
    let msgs = tb.messages(&id).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["wamid"], json!(w));
    assert_eq!(msgs[0]["text"], json!("sneaky"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_escaped_body_verifies_over_raw_bytes_and_is_stored_decoded() {
    let tb = TB::start().await;
    let cust = customer();
    let w = wamid();
    let ts = now();
    // Hand-written raw body: non-ASCII as \uXXXX escapes (incl. a surrogate pair), keys in an
    // unusual order, extra whitespace. The signature is over exactly these bytes.
    let raw = format!(
        "{{ \"entry\": [ {{\"changes\":[{{\"field\":\"messages\",\"value\":{{\"metadata\":{{\"phone_number_id\":\"{N1}\",\"display_phone_number\":\"{N1_DISPLAY}\"}},\"messaging_product\":\"whatsapp\",\"contacts\":[{{\"wa_id\":\"{cust}\",\"profile\":{{\"name\":\"Jos\\u00e9 M\\u00fcller\"}}}}],\"messages\":[{{\"text\":{{\"body\":\"Ol\\u00e1, \\u00bfc\\u00f3mo est\\u00e1s? \\ud83d\\ude00 \\u4f60\\u597d\"}},\"type\":\"text\",\"timestamp\":\"{ts}\",\"id\":\"{w}\",\"from\":\"{cust}\"}}]}}}}],\"id\":\"{WABA_ID}\"}} ], \"object\":\"whatsapp_business_account\" }}"
    );
    assert!(raw.is_ascii());
    let (status, v) = tb.webhook_bytes(raw.into_bytes()).await;
    assert_eq!(status, 200, "{v}");
    let id = tb.conv_id(N1, &cust).await;
    let conv = tb.conversation(&id).await;
    assert_eq!(conv["customer_name"], json!("José Müller"));
    let msgs = conv["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["text"], json!("Olá, ¿cómo estás? 😀 你好"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_utf8_body_is_accepted_too() {
    let tb = TB::start().await;
    let cust = customer();
    let body = text_webhook(N1, &cust, &wamid(), now(), "Grüße aus Köln ☕");
    assert_eq!(tb.webhook(&body).await, 200);
    let id = tb.conv_id(N1, &cust).await;
    assert_eq!(
        tb.messages(&id).await[0]["text"],
        json!("Grüße aus Köln ☕")
    );
}

// ---------------------------------------------------------------------------------------------
// Meta's fixtures
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_text_and_image_messages_are_stored() {
    let tb = TB::start().await;
    let (s, v) = tb.webhook_bytes(FIXTURE_TEXT.as_bytes().to_vec()).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = tb.webhook_bytes(FIXTURE_IMAGE.as_bytes().to_vec()).await;
    assert_eq!(s, 200, "{v}");

    let conv = tb
        .conv_of(N1, "16505551234")
        .await
        .expect("conversation for the fixture customer");
    assert_eq!(conv["number"], json!(N1));
    assert_eq!(conv["customer"], json!("16505551234"));
    assert_eq!(conv["customer_name"], json!("Sheena Nelson"));
    assert_eq!(conv["status"], json!("queued"));
    assert_eq!(conv["team"], json!("support"));
    assert!(conv["assignee"].is_null(), "{conv}");
    parse_time(&conv["last_message_at"]);

    let msgs = tb.messages(conv["id"].as_str().unwrap()).await;
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    let text = msgs
        .iter()
        .find(|m| {
            m["wamid"] == json!("wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=")
        })
        .expect("text message");
    assert_eq!(text["direction"], json!("inbound"));
    assert_eq!(text["type"], json!("text"));
    assert_eq!(text["text"], json!("Does it come in another color?"));
    assert_eq!(text["status"], json!("received"));
    assert_eq!(text["author"], json!("16505551234"));
    assert_eq!(parse_time(&text["at"]).timestamp(), 1749416383);
    assert!(text["id"].is_string());
    assert!(text.get("error").is_none_or(Value::is_null));

    let image = msgs
        .iter()
        .find(|m| {
            m["wamid"] == json!("wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgB=")
        })
        .expect("image message");
    assert_eq!(image["type"], json!("image"));
    assert_eq!(image["text"], json!("Taj Mahal"));
    assert_eq!(image["direction"], json!("inbound"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_status_update_webhook_is_accepted() {
    let tb = TB::start().await;
    let (s, v) = tb
        .webhook_bytes(FIXTURE_TEMPLATE_STATUS.as_bytes().to_vec())
        .await;
    assert_eq!(s, 200, "{v}");
    // and the broker keeps working
    let cust = customer();
    tb.open_conv(N1, &cust, "after template update").await;
}

// ---------------------------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_change_message_and_status_in_one_post_is_processed() {
    let tb = TB::start().await;
    // Two outbound messages first, to have wamids for statuses.
    let a = customer();
    let conv_a = tb.open_conv(N1, &a, "hello").await;
    tb.must_claim(BOB, &conv_a).await;
    let r1 = tb.must_reply(BOB, &conv_a, "reply one").await;
    let r2 = tb.must_reply(BOB, &conv_a, "reply two").await;
    let r1_id = r1["id"].as_str().unwrap().to_owned();
    let r2_id = r2["id"].as_str().unwrap().to_owned();
    let m1 = tb.wait_status(&conv_a, &r1_id, "accepted").await;
    let m2 = tb.wait_status(&conv_a, &r2_id, "accepted").await;
    let w1 = m1["wamid"].as_str().unwrap().to_owned();
    let w2 = m2["wamid"].as_str().unwrap().to_owned();

    let (x, y, z) = (customer(), customer(), customer());
    let t = now();
    let (wx1, wx2, wy1, wz1, wa1) = (wamid(), wamid(), wamid(), wamid(), wamid());
    let body = envelope(vec![
        entry(vec![
            change(
                N1,
                vec![
                    text_msg(&wx1, &x, t - 5, "x first"),
                    text_msg(&wx2, &x, t - 4, "x second"),
                ],
                vec![status_obj(&w1, "delivered", t - 3, &a)],
            ),
            change(
                N2,
                vec![text_msg(&wy1, &y, t - 3, "y on number two")],
                vec![],
            ),
        ]),
        entry(vec![change(
            N1,
            vec![
                text_msg(&wz1, &z, t - 2, "z hello"),
                text_msg(&wa1, &a, t - 1, "a again"),
            ],
            vec![status_obj(&w2, "read", t - 1, &a)],
        )]),
    ]);
    assert_eq!(tb.webhook(&body).await, 200);

    let cx = tb.conv_id(N1, &x).await;
    let mx = tb.messages(&cx).await;
    assert_eq!(
        texts(&mx),
        vec!["x first", "x second"],
        "both messages of one change, oldest first"
    );

    let cy = tb
        .conv_of(N2, &y)
        .await
        .expect("message on the second change (number 2)");
    assert_eq!(cy["team"], json!("sales"), "number 2's default team");
    assert_eq!(cy["number"], json!(N2));
    assert!(
        tb.conv_of(N1, &y).await.is_none(),
        "y wrote to number 2 only"
    );

    let cz = tb.conv_id(N1, &z).await;
    assert_eq!(
        texts(&tb.messages(&cz).await),
        vec!["z hello"],
        "message in the second entry"
    );

    let ma = tb.messages(&conv_a).await;
    assert!(
        ma.iter().any(|m| m["wamid"] == json!(wa1)),
        "second message of second entry: {ma:?}"
    );
    let s1 = ma.iter().find(|m| m["id"] == json!(r1_id)).unwrap();
    let s2 = ma.iter().find(|m| m["id"] == json!(r2_id)).unwrap();
    assert_eq!(
        s1["status"],
        json!("delivered"),
        "status in the first change"
    );
    assert_eq!(s2["status"], json!("read"), "status in the second entry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_of_200_messages_is_fully_processed() {
    let tb = TB::start().await;
    let custs: Vec<String> = (0..20).map(|_| customer()).collect();
    let t = now() - 600;
    let mut changes = Vec::new();
    for (i, c) in custs.iter().enumerate() {
        let msgs = (0..10)
            .map(|j| text_msg(&wamid(), c, t + j, &format!("c{i} m{j}")))
            .collect();
        changes.push(change(if i % 2 == 0 { N1 } else { N2 }, msgs, vec![]));
    }
    let entries = changes.chunks(5).map(|c| entry(c.to_vec())).collect();
    assert_eq!(tb.webhook(&envelope(entries)).await, 200);
    for (i, c) in custs.iter().enumerate() {
        let id = tb.conv_id(if i % 2 == 0 { N1 } else { N2 }, c).await;
        let got = texts(&tb.messages(&id).await);
        let want: Vec<String> = (0..10).map(|j| format!("c{i} m{j}")).collect();
        assert_eq!(got, want, "customer {i}");
    }
}

// ---------------------------------------------------------------------------------------------
// Redelivery
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_message_is_acknowledged_and_stored_once() {
    let tb = TB::start().await;
    let cust = customer();
    let w = wamid();
    let t = now();
    let body = text_webhook(N1, &cust, &w, t, "only once please");
    assert_eq!(tb.webhook(&body).await, 200);
    assert_eq!(
        tb.webhook(&body).await,
        200,
        "redelivery must be acknowledged"
    );
    // Redelivered inside a different batch, alongside a new message.
    let w2 = wamid();
    let batch = envelope(vec![entry(vec![change(
        N1,
        vec![
            text_msg(&w, &cust, t, "only once please"),
            text_msg(&w2, &cust, t + 1, "new one"),
        ],
        vec![],
    )])]);
    assert_eq!(tb.webhook(&batch).await, 200);
    // Concurrent redeliveries.
    let mut handles = Vec::new();
    for _ in 0..8 {
        let api = tb.api.clone();
        let b = batch.clone();
        handles.push(tokio::spawn(async move { api.webhook(&b).await }));
    }
    for h in handles {
        assert_eq!(h.await.unwrap(), 200);
    }
    let id = tb.conv_id(N1, &cust).await;
    let msgs = tb.messages(&id).await;
    assert_eq!(
        texts(&msgs),
        vec!["only once please", "new one"],
        "{msgs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_messages_of_one_customer_make_one_conversation() {
    let tb = TB::start().await;
    let cust = customer();
    let t = now();
    let mut handles = Vec::new();
    for i in 0..10 {
        let api = tb.api.clone();
        let c = cust.clone();
        handles.push(tokio::spawn(async move {
            api.webhook(&text_webhook(
                N1,
                &c,
                &wamid(),
                t + i,
                &format!("burst {i}"),
            ))
            .await
        }));
    }
    for h in handles {
        assert_eq!(h.await.unwrap(), 200);
    }
    let convs = tb.list(ROOT, &format!("customer={cust}")).await;
    assert_eq!(convs.len(), 1, "{convs:?}");
    let msgs = tb.messages(convs[0]["id"].as_str().unwrap()).await;
    assert_eq!(msgs.len(), 10);
}

// ---------------------------------------------------------------------------------------------
// Size limits and malformed bodies
// ---------------------------------------------------------------------------------------------

const MIB: usize = 1024 * 1024;

/// A signed-able webhook body of exactly `size` bytes carrying one text message; padded with
/// an unknown field.
fn padded_body(cust: &str, w: &str, size: usize) -> Vec<u8> {
    let mut v = text_webhook(N1, cust, w, now(), "padded");
    v["entry"][0]["changes"][0]["value"]["x_padding"] = json!("");
    let base = serde_json::to_vec(&v).unwrap().len();
    assert!(size > base);
    v["entry"][0]["changes"][0]["value"]["x_padding"] = json!("a".repeat(size - base));
    let out = serde_json::to_vec(&v).unwrap();
    assert_eq!(out.len(), size);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_of_exactly_3_mib_is_accepted() {
    let tb = TB::start().await;
    let cust = customer();
    let w = wamid();
    let (s, v) = tb.webhook_bytes(padded_body(&cust, &w, 3 * MIB)).await;
    assert_eq!(s, 200, "{v}");
    let id = tb.conv_id(N1, &cust).await;
    assert_eq!(tb.messages(&id).await[0]["wamid"], json!(w));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_of_2_5_mib_is_accepted() {
    let tb = TB::start().await;
    let cust = customer();
    let (s, v) = tb
        .webhook_bytes(padded_body(&cust, &wamid(), 5 * MIB / 2))
        .await;
    assert_eq!(s, 200, "{v}");
    tb.conv_id(N1, &cust).await;
}

/// POSTs `body` (signed) over a raw connection with `Expect: 100-continue`, so that a server
/// that refuses early can answer without the client racing a connection reset. Returns the
/// status code of the final response and its raw text.
async fn raw_post_expect_continue(addr: std::net::SocketAddr, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /webhooks/whatsapp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Hub-Signature-256: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len(),
        sign(body)
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read_head = |buf: &Vec<u8>| -> Option<(u16, usize)> {
        let text = String::from_utf8_lossy(buf);
        let end = text.find("\r\n\r\n")?;
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, end + 4))
    };
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some((code, end)) = read_head(&buf) {
            if code == 100 {
                buf.drain(..end);
                // the server wants the body: send it (it may still refuse midway)
                let _ = s.write_all(body).await;
                continue;
            }
            // read the rest until close (Connection: close), best effort
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                while let Ok(n) = s.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            })
            .await;
            return (code, String::from_utf8_lossy(&buf).into_owned());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        match tokio::time::timeout(WAIT, s.read(&mut chunk)).await {
            Ok(Ok(0)) => panic!(
                "connection closed without a response: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => panic!(
                "read error {e}; got so far: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Err(_) => panic!("timeout waiting for a response"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_larger_than_3_mib_is_413_and_not_stored() {
    let tb = TB::start().await;
    let addr = tb.broker.as_ref().unwrap().addr();
    let cust = customer();
    // just over the limit, through the normal client
    let (s, v) = tb
        .webhook_bytes(padded_body(&cust, &wamid(), 3 * MIB + 1))
        .await;
    assert_eq!(s, 413, "{v}");
    assert_eq!(err_code(&v), "payload_too_large", "{v}");
    // well over the limit, over a raw connection
    for size in [3 * MIB + 1, 4 * MIB, 8 * MIB] {
        let (status, text) =
            raw_post_expect_continue(addr, &padded_body(&cust, &wamid(), size)).await;
        assert_eq!(status, 413, "size {size}: {text}");
        assert!(text.contains("payload_too_large"), "size {size}: {text}");
    }
    assert!(tb.conv_of(N1, &cust).await.is_none());
    // an acceptable body still works over the same path
    let (status, text) = raw_post_expect_continue(addr, &padded_body(&cust, &wamid(), MIB)).await;
    assert_eq!(status, 200, "{text}");
    tb.conv_id(N1, &cust).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400() {
    let tb = TB::start().await;
    let cust = customer();
    let full = serde_json::to_string(&text_webhook(N1, &cust, &wamid(), now(), "cut off")).unwrap();
    let truncated = full[..full.len() - 7].to_owned();
    for body in [
        truncated,
        "not json at all".to_owned(),
        "{\"object\": }".to_owned(),
    ] {
        let (s, v) = tb.webhook_bytes(body.clone().into_bytes()).await;
        assert_eq!(s, 400, "body {body:?}: {v}");
        assert_eq!(err_code(&v), "invalid_json", "{v}");
    }
    assert!(tb.conv_of(N1, &cust).await.is_none());
}

// ---------------------------------------------------------------------------------------------
// Unknown types and fields
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_message_types_and_fields_are_kept() {
    let tb = TB::start().await;
    let cust = customer();
    let t = now() - 100;
    let (w_unsup, w_holo, w_react, w_react_removed, w_button, w_loc, w_text) = (
        wamid(),
        wamid(),
        wamid(),
        wamid(),
        wamid(),
        wamid(),
        wamid(),
    );
    let messages = vec![
        json!({"from": cust, "id": w_unsup, "timestamp": (t).to_string(), "type": "unsupported",
               "errors": [{"code": 131051, "title": "Message type unknown",
                           "message": "Message type unknown",
                           "error_data": {"details": "Message type is currently not supported."}}]}),
        json!({"from": cust, "id": w_holo, "timestamp": (t + 1).to_string(), "type": "hologram",
               "hologram": {"frames": 3, "colour": "teal", "nested": {"deep": [1, 2, 3]}},
               "brand_new_field": true}),
        json!({"from": cust, "id": w_react, "timestamp": (t + 2).to_string(), "type": "reaction",
               "reaction": {"message_id": w_unsup, "emoji": "\u{1F44D}"}}),
        json!({"from": cust, "id": w_react_removed, "timestamp": (t + 3).to_string(), "type": "reaction",
               "reaction": {"message_id": w_unsup}}),
        json!({"from": cust, "id": w_button, "timestamp": (t + 4).to_string(), "type": "interactive",
               "interactive": {"type": "button_reply", "button_reply": {"id": "b1", "title": "Yes"}}}),
        json!({"from": cust, "id": w_loc, "timestamp": (t + 5).to_string(), "type": "location",
               "location": {"latitude": 52.52, "longitude": 13.405, "name": "Berlin"}}),
        json!({"from": cust, "id": w_text, "timestamp": (t + 6).to_string(), "type": "text",
               "text": {"body": "plain text", "future_flag": 7}, "context": {"forwarded": true},
               "from_user_id": "US.1234567890"}),
    ];
    let mut body = envelope(vec![entry(vec![change(N1, messages, vec![])])]);
    // unknown fields at every level
    body["some_new_top_level"] = json!({"x": 1});
    body["entry"][0]["time"] = json!(1751247548);
    body["entry"][0]["changes"][0]["value"]["contacts"][0]["user_id"] = json!("US.1234567890");
    body["entry"][0]["changes"][0]["value"]["unknown_value_key"] = json!([1, "two"]);
    body["entry"][0]["changes"][0]["value"]["metadata"]["extra"] = json!("meta");
    assert_eq!(tb.webhook(&body).await, 200);

    let id = tb.conv_id(N1, &cust).await;
    let msgs = tb.messages(&id).await;
    // The reactions are no messages of their own: they set (then remove) the customer's
    // reaction on the message they name (tests/it/message_types.rs).
    assert_eq!(msgs.len(), 5, "every message kept: {msgs:#?}");
    let by = |w: &str| {
        msgs.iter()
            .find(|m| m["wamid"] == json!(w))
            .cloned()
            .unwrap_or_else(|| panic!("{w} missing"))
    };
    assert_eq!(by(&w_unsup)["type"], json!("unsupported"));
    assert!(by(&w_unsup)["text"].is_null());
    assert_eq!(by(&w_holo)["type"], json!("hologram"));
    assert!(by(&w_holo)["text"].is_null());
    assert!(msgs.iter().all(|m| m["wamid"] != json!(w_react)));
    assert!(msgs.iter().all(|m| m["wamid"] != json!(w_react_removed)));
    assert_eq!(by(&w_unsup)["reactions"], json!([]), "set, then removed");
    assert_eq!(by(&w_button)["type"], json!("interactive"));
    assert_eq!(by(&w_loc)["type"], json!("location"));
    assert_eq!(by(&w_text)["type"], json!("text"));
    assert_eq!(by(&w_text)["text"], json!("plain text"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coexistence_and_unknown_fields_of_change_are_accepted() {
    let tb = TB::start().await;
    let cust = customer();
    let w = wamid();
    let body = envelope(vec![entry(vec![
        json!({"field": "smb_app_state_sync", "value": {"messaging_product": "whatsapp",
               "metadata": {"display_phone_number": N1_DISPLAY, "phone_number_id": N1},
               "state_sync": [{"type": "contact", "action": "add", "contact": {"full_name": "X", "phone_number": "123"}}]}}),
        json!({"field": "history", "value": {"messaging_product": "whatsapp",
               "metadata": {"display_phone_number": N1_DISPLAY, "phone_number_id": N1},
               "history": [{"metadata": {"phase": 0, "chunk_order": 1, "progress": 10}, "threads": []}]}}),
        json!({"field": "totally_new_field", "value": {"anything": [1, 2, 3]}}),
        change(
            N1,
            vec![text_msg(&w, &cust, now(), "after the odd ones")],
            vec![],
        ),
    ])]);
    assert_eq!(tb.webhook(&body).await, 200);
    let id = tb.conv_id(N1, &cust).await;
    assert_eq!(
        tb.messages(&id).await[0]["wamid"],
        json!(w),
        "the message after unknown changes is processed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_for_unknown_wamid_is_acknowledged() {
    let tb = TB::start().await;
    let body = status_webhook(
        N1,
        vec![status_obj(
            "wamid.NEVER_SENT_BY_US",
            "delivered",
            now(),
            "123",
        )],
    );
    assert_eq!(tb.webhook(&body).await, 200);
}

// ---------------------------------------------------------------------------------------------
// Outbound status updates
// ---------------------------------------------------------------------------------------------

/// Posts a status webhook (answered 200) and returns message `id`'s status afterwards.
async fn status_after(tb: &TB, body: &Value, conv: &str, id: &str) -> Value {
    assert_eq!(tb.webhook(body).await, 200);
    tb.message(conv, id).await.unwrap()["status"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_updates_only_move_forward() {
    let tb = TB::start().await;
    let (conv, cust, id, w) = accepted_reply(&tb).await;
    let t = now();
    let step = |st: &str, dt: i64| status_webhook(N1, vec![status_obj(&w, st, t + dt, &cust)]);

    assert_eq!(
        status_after(&tb, &step("sent", 1), &conv, &id).await,
        json!("sent")
    );
    assert_eq!(
        status_after(&tb, &step("delivered", 2), &conv, &id).await,
        json!("delivered")
    );
    // late `sent` (e.g. redelivered out of order) never overwrites delivered
    assert_eq!(
        status_after(&tb, &step("sent", 1), &conv, &id).await,
        json!("delivered")
    );
    // even with a newer timestamp
    assert_eq!(
        status_after(&tb, &step("sent", 5), &conv, &id).await,
        json!("delivered")
    );
    assert_eq!(
        status_after(&tb, &step("read", 3), &conv, &id).await,
        json!("read")
    );
    assert_eq!(
        status_after(&tb, &step("delivered", 6), &conv, &id).await,
        json!("read")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_find_a_recent_send_in_memory_and_an_older_one_in_storage() {
    let mut tb = TB::start().await;
    let (conv, cust, id, w) = accepted_reply(&tb).await;
    let remembered = |tb: &TB| {
        tb.broker
            .as_ref()
            .and_then(|b| b.ctx().sent.get(&w))
            .map(|at| at.conversation_id)
    };
    // Remembered by the actor right after the commit that the API's `accepted` already shows.
    eventually("the accepted send to be remembered", WAIT, || async {
        match remembered(&tb) {
            Some(c) if c == conv => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let t = now();
    let step = |st: &str, dt: i64| status_webhook(N1, vec![status_obj(&w, st, t + dt, &cust)]);
    assert_eq!(
        status_after(&tb, &step("sent", 1), &conv, &id).await,
        json!("sent")
    );
    // A restart forgets it: the next status finds the message through storage.
    tb.restart().await;
    assert_eq!(remembered(&tb), None);
    assert_eq!(
        status_after(&tb, &step("delivered", 2), &conv, &id).await,
        json!("delivered")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_out_of_order_in_one_batch_end_at_the_highest() {
    let tb = TB::start().await;
    let (conv, cust, id, w) = accepted_reply(&tb).await;
    let t = now();
    let body = status_webhook(
        N1,
        vec![
            status_obj(&w, "read", t + 3, &cust),
            status_obj(&w, "sent", t + 1, &cust),
            status_obj(&w, "delivered", t + 2, &cust),
        ],
    );
    assert_eq!(status_after(&tb, &body, &conv, &id).await, json!("read"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_status_records_code_and_title() {
    let tb = TB::start().await;
    let (conv, cust, id, w) = accepted_reply(&tb).await;
    assert_eq!(
        tb.webhook(&status_webhook(
            N1,
            vec![status_obj(&w, "sent", now(), &cust)]
        ))
        .await,
        200
    );
    let body = FIXTURE_STATUS_FAILED
        .replace("WAMID_PLACEHOLDER", &w)
        .replace("RECIPIENT_PLACEHOLDER", &cust);
    let (s, v) = tb.webhook_bytes(body.into_bytes()).await;
    assert_eq!(s, 200, "{v}");
    let m = tb.message(&conv, &id).await.unwrap();
    assert_eq!(m["status"], json!("failed"), "{m}");
    assert_eq!(m["error"]["code"], json!(131049), "{m}");
    assert_eq!(
        m["error"]["title"],
        json!("This message was not delivered to maintain healthy ecosystem engagement."),
        "{m}"
    );
}

// ---------------------------------------------------------------------------------------------
// Overload
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overloaded_broker_answers_503_with_retry_after_and_stores_nothing() {
    let tb = TB::start_with(|c| c.server_extra = "max_inflight_webhooks = 1".into()).await;
    let store = tb.broker.as_ref().unwrap().ctx().store.clone();
    // Hold the only webhook slot: a webhook whose commit hangs (a slot is taken once the body
    // has arrived, so a slow sender could not hold it; a slow disk does).
    store.inject_write_stall(Duration::from_secs(30));
    let api = tb.api.clone();
    let held_cust = customer();
    let held_body = text_webhook(N1, &held_cust, &wamid(), now(), "held");
    let held = tokio::spawn(async move { api.webhook(&held_body).await });
    let api = &tb.api;
    eventually("the held webhook to take the slot", WAIT, || async move {
        let text = api.metrics().await;
        match metric_sum(&text, "switchboard_webhooks_in_flight", &[]) {
            Some(n) if n >= 1.0 => Ok(()),
            n => Err(format!("{n:?}")),
        }
    })
    .await;
    let (refused_customer, retry_after, body) =
        eventually("a webhook to be refused", WAIT, || async move {
            let cust = customer();
            let bytes =
                serde_json::to_vec(&text_webhook(N1, &cust, &wamid(), now(), "overload")).unwrap();
            let resp = api
                .http
                .post(api.url("/webhooks/whatsapp"))
                .header("content-type", "application/json")
                .header("X-Hub-Signature-256", sign(&bytes))
                .body(bytes)
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let ra = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let text = resp.text().await.unwrap_or_default();
            match status {
                503 => Ok((cust, ra, text)),
                s => Err(format!("{s} {text}")),
            }
        })
        .await;
    let ra = retry_after.expect("503 must carry Retry-After");
    assert!(
        ra.trim().parse::<u64>().is_ok(),
        "Retry-After should be seconds: {ra:?}"
    );
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!(err_code(&v), "overloaded", "{body}");

    // Once the disk answers again, the held webhook is acknowledged, the refused one was not
    // stored, and webhooks are accepted again.
    store.inject_write_stall(Duration::ZERO);
    assert_eq!(held.await.unwrap(), 200);
    assert!(
        tb.conv_of(N1, &refused_customer).await.is_none(),
        "nothing may be stored on 503"
    );
    let cust = customer();
    assert_eq!(
        tb.webhook(&text_webhook(N1, &cust, &wamid(), now(), "back"))
            .await,
        200
    );
    tb.conv_id(N1, &cust).await;
    tb.conv_id(N1, &held_cust).await;
}

// ---------------------------------------------------------------------------------------------
// More of Meta's real-world shapes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_after_resolve_does_not_reopen() {
    let tb = TB::start().await;
    let cust = customer();
    let w = wamid();
    let t = now();
    let body = text_webhook(N1, &cust, &w, t, "first and only");
    assert_eq!(tb.webhook(&body).await, 200);
    let id = tb.conv_id(N1, &cust).await;
    tb.must_claim(ALICE, &id).await;
    assert_eq!(tb.resolve(ALICE, &id).await.0, 200);
    // Meta redelivers the same message later: acknowledged, but it is not a new message.
    assert_eq!(tb.webhook(&body).await, 200);
    let c = tb.conversation(&id).await;
    assert_eq!(
        c["status"],
        json!("resolved"),
        "a duplicate must not reopen: {c}"
    );
    assert_eq!(c["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_1000_messages_is_fully_processed() {
    let tb = TB::start().await;
    let custs: Vec<String> = (0..100).map(|_| customer()).collect();
    let t = now() - 3_000;
    let changes: Vec<Value> = custs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let msgs = (0..10)
                .map(|j| text_msg(&wamid(), c, t + j, &format!("{i}/{j}")))
                .collect();
            change(N1, msgs, vec![])
        })
        .collect();
    let body = envelope(changes.chunks(10).map(|c| entry(c.to_vec())).collect());
    let bytes = serde_json::to_vec(&body).unwrap();
    assert!(bytes.len() < 3 * MIB);
    let (s, v) = tb.webhook_bytes(bytes).await;
    assert_eq!(s, 200, "{v}");
    let all = tb.list(ROOT, &format!("number={N1}")).await;
    assert_eq!(all.len(), 100, "one conversation per customer");
    for (i, c) in custs.iter().enumerate().step_by(7) {
        let id = tb.conv_id(N1, c).await;
        assert_eq!(tb.messages(&id).await.len(), 10, "customer {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_without_phone_number_is_never_acknowledged_unstored() {
    // Some users have no phone number: `from` is absent, `from_user_id` (business-scoped user
    // id) is there. Whatever the broker does, it must not answer 200 without storing it.
    let tb = TB::start().await;
    let w = wamid();
    let user = uniq("US.");
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": WABA_ID, "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": N1_DISPLAY, "phone_number_id": N1},
        "contacts": [{"profile": {"name": "No Number"}, "user_id": user}],
        "messages": [{"from_user_id": user, "id": w, "timestamp": now().to_string(), "type": "text", "text": {"body": "I have no number"}}]
    }}]}]});
    let status = tb.webhook(&body).await;
    if status == 200 {
        let mut found = false;
        for c in tb.list(ROOT, "").await {
            let msgs = tb.messages(c["id"].as_str().unwrap()).await;
            if msgs.iter().any(|m| m["wamid"] == json!(w)) {
                found = true;
            }
        }
        assert!(
            found,
            "200 for a message (from_user_id only) that was not stored anywhere"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_with_conversation_and_pricing_objects_are_processed() {
    let tb = TB::start().await;
    let (conv, cust, id, w) = accepted_reply(&tb).await;
    let mut st = status_obj(&w, "delivered", now(), &cust);
    st["conversation"] = json!({"id": "CONVERSATION_ID", "origin": {"type": "service"}, "expiration_timestamp": "1751247548"});
    st["pricing"] = json!({"billable": false, "pricing_model": "PMP", "category": "service", "type": "free_customer_service"});
    st["biz_opaque_callback_data"] = json!(id);
    assert_eq!(
        status_after(&tb, &status_webhook(N1, vec![st]), &conv, &id).await,
        json!("delivered")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_arriving_before_the_graph_answer_is_not_lost() {
    // Meta may deliver the `sent`/`delivered` webhook before the send request's HTTP answer
    // reaches the broker. The status carries the broker's biz_opaque_callback_data.
    let tb = TB::start().await;
    let cust = customer();
    let conv = tb.open_conv(N1, &cust, "quick").await;
    tb.must_claim(BOB, &conv).await;
    tb.graph
        .push(GraphReply::Delay(1_000, Box::new(GraphReply::Ok)));
    let m = tb.must_reply(BOB, &conv, "racing the webhook").await;
    let id = m["id"].as_str().unwrap().to_owned();
    tb.graph.wait_sends(1, WAIT).await; // the request is at Graph, its answer is held back
    let mut st = status_obj("wamid.OUT1", "delivered", now(), &cust);
    st["biz_opaque_callback_data"] = json!(id);
    assert_eq!(tb.webhook(&status_webhook(N1, vec![st])).await, 200);
    let m = tb.wait_status(&conv, &id, "delivered").await;
    assert_eq!(m["wamid"], json!("wamid.OUT1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_3_mib_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tb = TB::start().await;
    let addr = tb.broker.as_ref().unwrap().addr();
    let cust = customer();
    let body = padded_body(&cust, &wamid(), 4 * MIB);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /webhooks/whatsapp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nX-Hub-Signature-256: {}\r\nConnection: close\r\n\r\n",
        sign(&body)
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        for piece in body.chunks(64 * 1024) {
            let frame = format!("{:x}\r\n", piece.len());
            if wr.write_all(frame.as_bytes()).await.is_err() {
                return;
            }
            if wr.write_all(piece).await.is_err() {
                return;
            }
            if wr.write_all(b"\r\n").await.is_err() {
                return;
            }
        }
        let _ = wr.write_all(b"0\r\n\r\n").await;
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let _ = tokio::time::timeout(WAIT, async {
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if String::from_utf8_lossy(&buf).contains("\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    writer.abort();
    let text = String::from_utf8_lossy(&buf).into_owned();
    if !text.is_empty() {
        assert!(
            text.starts_with("HTTP/1.1 413"),
            "expected 413, got {text:?}"
        );
    }
    // whether or not the answer made it through the reset, nothing is stored
    assert!(
        tb.conv_of(N1, &cust).await.is_none(),
        "an over-size chunked body was stored"
    );
}

/// A conversation too long for its wamids to be loaded at activation (more than 512 messages)
/// still deduplicates exactly after a restart: its actor checks storage for every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_conversations_deduplicate_after_a_restart() {
    let mut tb = TB::start().await;
    let cust = customer();
    let ts = now();
    let mut wamids = Vec::new();
    for batch in 0..6 {
        let msgs: Vec<Value> = (0..100)
            .map(|i| {
                let w = wamid();
                wamids.push(w.clone());
                text_msg(&w, &cust, ts, &format!("m{batch}-{i}"))
            })
            .collect();
        let body = envelope(vec![entry(vec![change(N1, msgs, vec![])])]);
        assert_eq!(tb.webhook(&body).await, 200);
    }
    let id = tb.conv_id(N1, &cust).await;
    assert_eq!(tb.messages(&id).await.len(), 600);

    tb.restart().await;
    let fresh = wamid();
    let body = envelope(vec![entry(vec![change(
        N1,
        vec![
            text_msg(&wamids[0], &cust, ts, "m0-0"),
            text_msg(&wamids[599], &cust, ts, "m5-99"),
            text_msg(&fresh, &cust, ts, "new"),
        ],
        vec![],
    )])]);
    assert_eq!(tb.webhook(&body).await, 200);
    let msgs = tb.messages(&id).await;
    assert_eq!(msgs.len(), 601, "only the new message was stored");
    assert_eq!(msgs[600]["wamid"], json!(fresh));
}
