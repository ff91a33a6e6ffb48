//! Agent API basics: auth, presence, visibility, list filters, healthz, graceful restart.

use crate::common::*;
use serde_json::{json, Value};

fn ids(convs: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = convs
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_200() {
    let tb = TB::start().await;
    assert_eq!(tb.healthz().await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_unknown_token_is_401() {
    let tb = TB::start().await;
    let id = tb.open_conv(N1, &customer(), "hi").await;
    let routes: Vec<(reqwest::Method, String, Option<Value>)> = vec![
        (reqwest::Method::GET, "/api/v1/conversations".into(), None),
        (
            reqwest::Method::GET,
            format!("/api/v1/conversations/{id}"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/conversations/{id}/claim"),
            Some(json!({})),
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/conversations/{id}/release"),
            Some(json!({})),
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/conversations/{id}/messages"),
            Some(json!({"text": "x", "idempotency_key": "k"})),
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/conversations/{id}/notes"),
            Some(json!({"text": "x"})),
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/conversations/{id}/transfer"),
            Some(json!({"team": "sales"})),
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/conversations/{id}/resolve"),
            Some(json!({})),
        ),
        (
            reqwest::Method::PUT,
            "/api/v1/agents/me/presence".into(),
            Some(json!({"status": "online"})),
        ),
        (reqwest::Method::GET, "/api/v1/events".into(), None),
    ];
    for (m, path, body) in routes {
        for token in [None, Some("t-nobody"), Some(""), Some("T-ALICE")] {
            let (s, v, _) = tb.request(m.clone(), token, &path, body.as_ref()).await;
            assert_eq!(s, 401, "{m} {path} with token {token:?}: {v}");
            assert_eq!(err_code(&v), "unauthorized", "{m} {path}: {v}");
        }
    }
    // wrong scheme
    let resp = tb
        .http
        .get(tb.url("/api/v1/conversations"))
        .header("authorization", "Basic dC1hbGljZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // nothing happened to the conversation
    let c = tb.conversation(&id).await;
    assert!(c["assignee"].is_null());
    assert_eq!(c["team"], json!("support"));
    assert_eq!(c["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_can_be_set_and_is_validated() {
    let tb = TB::start().await;
    for st in ["online", "away", "offline", "online"] {
        let (s, v) = tb.presence(ALICE, st).await;
        assert_eq!(s, 200, "{st}: {v}");
        assert_eq!(v["agent"], json!("alice"));
        assert_eq!(v["status"], json!(st));
    }
    let (s, v) = tb.presence(DAVE, "away").await;
    assert_eq!(s, 200);
    assert_eq!(v["agent"], json!("dave"));
    for bad in [
        json!({"status": "sleeping"}),
        json!({"status": ""}),
        json!({}),
        json!({"status": 1}),
    ] {
        let (s, v) = tb
            .put(ALICE, "/api/v1/agents/me/presence", bad.clone())
            .await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert_eq!(err_code(&v), "invalid_request", "{bad}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_by_role() {
    let tb = TB::start().await;
    let q1 = tb.open_conv(N1, &customer(), "support queued").await;
    let bobs = tb.open_conv(N1, &customer(), "support, bob's").await;
    let alices = tb.open_conv(N1, &customer(), "support, alice's").await;
    let resolved = tb.open_conv(N1, &customer(), "support, resolved").await;
    let sales_q = tb.open_conv(N2, &customer(), "sales queued").await;
    let daves = tb.open_conv(N2, &customer(), "sales, dave's").await;
    tb.must_claim(BOB, &bobs).await;
    tb.must_claim(ALICE, &alices).await;
    tb.must_claim(BOB, &resolved).await;
    assert_eq!(tb.resolve(BOB, &resolved).await.0, 200);
    tb.must_claim(DAVE, &daves).await;

    let all = sorted(vec![
        q1.clone(),
        bobs.clone(),
        alices.clone(),
        resolved.clone(),
        sales_q.clone(),
        daves.clone(),
    ]);
    assert_eq!(ids(&tb.list(ROOT, "").await), all, "admin sees everything");
    assert_eq!(
        ids(&tb.list(CAROL, "").await),
        sorted(vec![
            q1.clone(),
            bobs.clone(),
            alices.clone(),
            resolved.clone()
        ]),
        "supervisor sees everything in its teams"
    );
    assert_eq!(
        ids(&tb.list(ALICE, "").await),
        sorted(vec![q1.clone(), alices.clone()]),
        "agent: queued of its teams + own"
    );
    assert_eq!(
        ids(&tb.list(BOB, "").await),
        sorted(vec![q1.clone(), bobs.clone()])
    );
    assert_eq!(
        ids(&tb.list(DAVE, "").await),
        sorted(vec![sales_q.clone(), daves.clone()])
    );

    // GET by id follows the same rules: invisible → 404 not_found
    for (tok, id, visible) in [
        (ALICE, &bobs, false),
        (ALICE, &resolved, false),
        (ALICE, &sales_q, false),
        (ALICE, &alices, true),
        (ALICE, &q1, true),
        (CAROL, &bobs, true),
        (CAROL, &resolved, true),
        (CAROL, &daves, false),
        (DAVE, &q1, false),
        (ROOT, &daves, true),
    ] {
        let (s, v) = tb.get(tok, &format!("/api/v1/conversations/{id}")).await;
        if visible {
            assert_eq!(s, 200, "{tok} should see {id}: {v}");
            assert!(v["messages"].is_array(), "{v}");
        } else {
            assert_eq!(s, 404, "{tok} must not see {id}: {v}");
            assert_eq!(err_code(&v), "not_found");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters() {
    let tb = TB::start().await;
    let c1 = customer();
    let c2 = customer();
    let a = tb.open_conv(N1, &c1, "a").await;
    let b = tb.open_conv(N1, &c2, "b").await;
    let c = tb.open_conv(N2, &c1, "c").await;
    tb.must_claim(BOB, &b).await;

    assert_eq!(
        ids(&tb.list(ROOT, "status=queued").await),
        sorted(vec![a.clone(), c.clone()])
    );
    assert_eq!(
        ids(&tb.list(ROOT, "status=assigned").await),
        vec![b.clone()]
    );
    assert_eq!(ids(&tb.list(ROOT, "team=sales").await), vec![c.clone()]);
    assert_eq!(
        ids(&tb.list(ROOT, "team=support").await),
        sorted(vec![a.clone(), b.clone()])
    );
    assert_eq!(ids(&tb.list(ROOT, "assignee=bob").await), vec![b.clone()]);
    assert!(tb.list(ROOT, "assignee=alice").await.is_empty());
    assert_eq!(
        ids(&tb.list(ROOT, &format!("customer={c1}")).await),
        sorted(vec![a.clone(), c.clone()])
    );
    assert_eq!(
        ids(&tb.list(ROOT, &format!("number={N2}")).await),
        vec![c.clone()]
    );
    assert_eq!(
        ids(&tb.list(ROOT, &format!("number={N1}")).await),
        sorted(vec![a.clone(), b.clone()])
    );
    assert_eq!(
        ids(&tb.list(ROOT, &format!("customer={c1}&number={N1}")).await),
        vec![a.clone()]
    );
    assert_eq!(
        ids(&tb.list(ROOT, "status=queued&team=support").await),
        vec![a.clone()]
    );
    assert!(tb.list(ROOT, "status=resolved").await.is_empty());
    // filters combine with visibility
    assert!(tb.list(ALICE, "team=sales").await.is_empty());
    assert!(tb.list(ALICE, "assignee=bob").await.is_empty());
    // conversation objects carry the documented fields
    let one = tb.list(ROOT, &format!("customer={c2}")).await.remove(0);
    for k in [
        "id",
        "number",
        "customer",
        "customer_name",
        "status",
        "team",
        "assignee",
        "window_expires_at",
        "last_message_at",
    ] {
        assert!(one.get(k).is_some(), "conversation lacks {k}: {one}");
    }
    assert_eq!(one["customer_name"], json!(format!("Customer {c2}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_and_restart_keep_everything() {
    let mut tb = TB::start().await;
    let cust = customer();
    let id = tb.open_conv(N1, &cust, "before restart").await;
    tb.must_claim(ALICE, &id).await;
    assert_eq!(tb.note(ALICE, &id, "a note").await.0, 201);
    let r = tb.must_reply(ALICE, &id, "a reply").await;
    tb.wait_status(&id, r["id"].as_str().unwrap(), "accepted")
        .await;
    let before = tb.conversation(&id).await;

    tb.restart().await;
    let after = tb.conversation(&id).await;
    assert_eq!(after["assignee"], json!("alice"));
    assert_eq!(after["status"], json!("assigned"));
    assert_eq!(
        after["messages"], before["messages"],
        "messages identical after restart"
    );
    // redelivery after restart is still deduplicated
    let again = tb.messages(&id).await[0]["wamid"]
        .as_str()
        .unwrap()
        .to_owned();
    let ts = parse_time(&tb.messages(&id).await[0]["at"]).timestamp();
    assert_eq!(
        tb.webhook(&text_webhook(N1, &cust, &again, ts, "before restart"))
            .await,
        200
    );
    assert_eq!(tb.messages(&id).await.len(), 3);
    // capacity state survives: alice (max 2) owns 1 → one more claim, then capacity_reached
    let x = tb.open_conv(N1, &customer(), "x").await;
    let y = tb.open_conv(N1, &customer(), "y").await;
    tb.must_claim(ALICE, &x).await;
    let (s, v) = tb.claim(ALICE, &y).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(err_code(&v), "capacity_reached");
    tb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_with_limit_and_after() {
    let tb = TB::start().await;
    let mut all = Vec::new();
    for i in 0..5 {
        all.push(tb.open_conv(N1, &customer(), &format!("m{i}")).await);
    }
    let all = sorted(all);
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = match &after {
            Some(a) => format!("/api/v1/conversations?limit=2&after={a}"),
            None => "/api/v1/conversations?limit=2".to_string(),
        };
        let (code, body) = tb.get(ROOT, &q).await;
        assert_eq!(code, 200, "{body}");
        let page = body["conversations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(page.len() <= 2, "limit respected: {body}");
        seen.extend(ids(&page));
        match body["next_after"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, all, "every conversation exactly once, in id order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_lane_serves_the_same_api_beside_the_main_listener() {
    let mut tb = TB::start_with(|c| c.server_extra = "api_listen = \"127.0.0.1:0\"".into()).await;
    let lane_addr = tb
        .broker
        .as_ref()
        .and_then(|b| b.api_addr())
        .expect("api_listen gives the lane an address");
    assert_ne!(Some(lane_addr), tb.broker.as_ref().map(|b| b.addr()));
    let lane = Api::new(lane_addr);

    // A webhook on the main listener, the claim on the lane: one broker behind both.
    let id = tb.open_conv(N1, &customer(), "hello").await;
    let (s, v) = lane
        .post(
            ALICE,
            &format!("/api/v1/conversations/{id}/claim"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let owner = v["assignee"].as_str().expect("assignee").to_string();
    let (s, v) = tb.get(ROOT, &format!("/api/v1/conversations/{id}")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["assignee"].as_str(), Some(owner.as_str()));

    // Same auth and errors on the lane.
    let (s, v) = lane.get("no-such-token", "/api/v1/conversations").await;
    assert_eq!(s, 401);
    assert_eq!(err_code(&v), "unauthorized");
    let (s, v) = lane
        .post(BOB, &format!("/api/v1/conversations/{id}/claim"), json!({}))
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(err_code(&v), "already_assigned");

    // A graceful shutdown stops both listeners.
    tb.shutdown().await;
    assert!(std::net::TcpStream::connect(lane_addr).is_err());
}

/// Holds one of alice's API slots with a note whose body is still on its way, until her next
/// request is refused 503 `overloaded`; returns the held connection and the rest of the body.
async fn hold_with_a_slow_note(tb: &TB) -> (tokio::net::TcpStream, &'static [u8]) {
    let id = tb.open_conv(N1, &customer(), "hello").await;
    let addr = tb.api.base.trim_start_matches("http://").to_owned();
    let body: &'static [u8] = br#"{"text": "a note that arrives slowly"}"#;
    let head = format!(
        "POST /api/v1/conversations/{id}/notes HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ALICE}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut start = head.into_bytes();
    start.extend_from_slice(&body[..10]);
    let (held, refused) = hold_until_refused(&addr, &start, || async {
        match tb.get(ALICE, "/api/v1/conversations").await {
            (503, v) => Some(v),
            (200, _) => None,
            (s, v) => panic!("{s} {v}"),
        }
    })
    .await;
    assert_eq!(err_code(&refused), "overloaded");
    (held, &body[10..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requests_beyond_max_inflight_api_get_503_overloaded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tb = TB::start_with(|c| c.server_extra = "max_inflight_api = 1".into()).await;
    // Hold the only permit with a request whose body is still on its way.
    let (mut held, rest) = hold_with_a_slow_note(&tb).await;
    // Health and metrics are not limited.
    assert_eq!(tb.healthz().await, 200);
    let refusals = metric_sum(
        &tb.metrics().await,
        "switchboard_api_requests_refused_total",
        &[],
    );
    assert!(refusals.unwrap_or(0.0) >= 1.0, "refusals: {refusals:?}");

    // The held request completes once its body has arrived, and frees its permit.
    held.write_all(rest).await.unwrap();
    let mut answer = vec![0u8; 12];
    held.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 201");
    let (status, _) = tb.get(ALICE, "/api/v1/conversations").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_cannot_hold_every_event_stream_or_request_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tb = TB::start_with(|c| {
        c.server_extra = "max_streams_per_agent = 2\nmax_inflight_per_agent = 1".into()
    })
    .await;
    // Streams: alice gets two, not a third; bob still gets his.
    let _a1 = Sse::connect(&tb.api, ALICE).await;
    let _a2 = Sse::connect(&tb.api, ALICE).await;
    let (s, v) = tb.get(ALICE, "/api/v1/events").await;
    assert_eq!((s, err_code(&v)), (503, "overloaded"), "{v}");
    let _b = Sse::connect(&tb.api, BOB).await;
    let refused = metric_sum(
        &tb.metrics().await,
        "switchboard_agent_requests_refused_total",
        &["kind=\"streams\""],
    );
    assert!(refused.unwrap_or(0.0) >= 1.0, "{refused:?}");

    // Requests: alice's one slot is held by a request whose body is on its way; her next
    // request is refused, bob's is served.
    let (mut held, rest) = hold_with_a_slow_note(&tb).await;
    let (s, _) = tb.get(BOB, "/api/v1/conversations").await;
    assert_eq!(s, 200);
    held.write_all(rest).await.unwrap();
    let mut answer = vec![0u8; 12];
    held.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 201");
    let (s, _) = tb.get(ALICE, "/api/v1/conversations").await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_are_throttled_per_address() {
    let tb = TB::start_with(|c| c.server_extra = "auth_failures_per_minute = 5".into()).await;
    for i in 0..5 {
        let (s, v) = tb.get(&format!("guess-{i}"), "/api/v1/conversations").await;
        assert_eq!((s, err_code(&v)), (401, "unauthorized"), "{v}");
    }
    // The sixth guess, and even the right token, from that address: 429 with Retry-After, so
    // a right guess cannot be told from a wrong one.
    for token in ["guess-5", ALICE] {
        let (s, v, headers) = tb
            .request(
                reqwest::Method::GET,
                Some(token),
                "/api/v1/conversations",
                None,
            )
            .await;
        assert_eq!((s, err_code(&v)), (429, "rate_limited"), "{v}");
        let secs: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=12).contains(&secs), "{secs}");
    }
    let (s, v, _) = tb
        .request(
            reqwest::Method::GET,
            Some("guess-6"),
            "/api/v1/events",
            None,
        )
        .await;
    assert_eq!(
        (s, err_code(&v)),
        (429, "rate_limited"),
        "the event stream too: {v}"
    );
    // Another address is not affected (127.0.0.2 is loopback too).
    let other = reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let r = other
        .get(tb.api.url("/api/v1/conversations"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = tb.metrics().await;
    let failed = metric_sum(
        &text,
        "switchboard_auth_failures_total",
        &["outcome=\"unauthorized\""],
    );
    let throttled = metric_sum(
        &text,
        "switchboard_auth_failures_total",
        &["outcome=\"throttled\""],
    );
    assert!(failed.unwrap_or(0.0) >= 5.0, "{failed:?}");
    assert!(throttled.unwrap_or(0.0) >= 3.0, "{throttled:?}");
}
