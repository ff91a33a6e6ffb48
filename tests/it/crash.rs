//! Crash safety with the real binary: SIGKILL and restart on the same storage directory.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

/// The messages' texts, in order ("" for one without text).
fn texts(msgs: &[Value]) -> Vec<&str> {
    msgs.iter()
        .map(|m| m["text"].as_str().unwrap_or(""))
        .collect()
}

fn write_config(path: &Path, storage: &Path, port: u16, graph: &str, max_attempts: u64) {
    let mut cfg = Cfg::new(storage, graph);
    cfg.listen = format!("127.0.0.1:{port}");
    cfg.max_attempts = max_attempts;
    cfg.retry_base_ms = 10;
    cfg.retry_max_ms = 50;
    // A send out at the kill may have reached Meta: held this long for a callback after the
    // restart (these tests send no callbacks), then sent again.
    cfg.outbox_extra = "ambiguous_hold_ms = 1000".into();
    std::fs::write(path, cfg.toml()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_acknowledged_survives_sigkill() {
    // Phase 1: Graph is down (500 forever), so the reply stays pending.
    let (dir, storage, cfg_path, broken, mut p) = start_with_graph_down().await;
    let api = p.api.clone();

    let (ca, cb, cc) = (customer(), customer(), customer());
    let t = now() - 300;
    // conversation A on number 1: three messages over two POSTs (one batched)
    let wa = [wamid(), wamid(), wamid()];
    assert_eq!(
        api.webhook(&text_webhook(N1, &ca, &wa[0], t, "A one"))
            .await,
        200
    );
    let batch = envelope(vec![
        entry(vec![change(
            N1,
            vec![
                text_msg(&wa[1], &ca, t + 1, "A two"),
                text_msg(&wa[2], &ca, t + 2, "A three"),
            ],
            vec![],
        )]),
        entry(vec![change(
            N2,
            vec![text_msg(&wamid(), &cb, t + 3, "B one")],
            vec![],
        )]),
    ]);
    assert_eq!(api.webhook(&batch).await, 200);
    assert_eq!(
        api.webhook(&text_webhook(N1, &cc, &wamid(), t + 4, "C one"))
            .await,
        200
    );

    let a = api.conv_id(N1, &ca).await;
    let b = api.conv_id(N2, &cb).await;
    let c = api.conv_id(N1, &cc).await;
    api.must_claim(ALICE, &a).await;
    api.must_claim(DAVE, &b).await;
    api.must_claim(BOB, &c).await;
    assert_eq!(api.resolve(BOB, &c).await.0, 200);
    let (s, note) = api.note(ALICE, &a, "VIP customer, be nice").await;
    assert_eq!(s, 201, "{note}");
    let (s, reply) = api
        .reply(ALICE, &a, "We have it in blue and red.", "crash-key-1")
        .await;
    assert_eq!(s, 202, "{reply}");
    let reply_id = reply["id"].as_str().unwrap().to_owned();
    broken.wait_sends(2, WAIT).await; // it was attempted (and failed) at least twice
    assert_eq!(
        api.message(&a, &reply_id).await.unwrap()["status"],
        json!("pending")
    );
    let before_a = api.conversation(&a).await;

    // Phase 2: SIGKILL.
    p.kill9();
    drop(broken);

    // Phase 3: restart on the same directory with a working Graph.
    let good = FakeGraph::start_with_prefix("wamid.GOOD").await;
    let port = free_port();
    write_config(&cfg_path, &storage, port, &good.base, 1_000_000);
    let p2 = BinProc::spawn(&cfg_path, port, &dir.path().join("log2.txt")).await;
    let api = p2.api.clone();

    // the pending reply is sent after the restart
    let sends = good.wait_sends(1, Duration::from_secs(15)).await;
    assert_eq!(sends[0].body["biz_opaque_callback_data"], json!(reply_id));
    assert_eq!(sends[0].body["to"], json!(ca));
    assert_eq!(
        sends[0].body["text"]["body"],
        json!("We have it in blue and red.")
    );
    let m = api.wait_status(&a, &reply_id, "accepted").await;
    assert_eq!(m["wamid"], json!("wamid.GOOD1"));

    // conversation A: owner, every message, the note
    let conv_a = api.conversation(&a).await;
    assert_eq!(conv_a["assignee"], json!("alice"));
    assert_eq!(conv_a["status"], json!("assigned"));
    let msgs = conv_a["messages"].as_array().unwrap();
    assert_eq!(
        texts(msgs),
        vec![
            "A one",
            "A two",
            "A three",
            "VIP customer, be nice",
            "We have it in blue and red."
        ]
    );
    assert_eq!(msgs[3]["direction"], json!("note"));
    assert_eq!(msgs[3]["author"], json!("alice"));
    let before_ids: Vec<&Value> = before_a["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["id"])
        .collect();
    let after_ids: Vec<&Value> = msgs.iter().map(|m| &m["id"]).collect();
    assert_eq!(
        before_ids, after_ids,
        "message ids are stable across the crash"
    );
    // B and C
    let conv_b = api.conversation(&b).await;
    assert_eq!(conv_b["assignee"], json!("dave"));
    assert_eq!(conv_b["team"], json!("sales"));
    assert_eq!(conv_b["messages"].as_array().unwrap().len(), 1);
    let conv_c = api.conversation(&c).await;
    assert_eq!(conv_c["status"], json!("resolved"));

    // the idempotency key survived: same key → same message, nothing new sent
    let (s, again) = api
        .reply(ALICE, &a, "We have it in blue and red.", "crash-key-1")
        .await;
    assert_eq!(s, 202, "{again}");
    assert_eq!(again["id"], json!(reply_id));
    // wamid dedup survived: redelivering A's first message stores nothing new
    assert_eq!(
        api.webhook(&text_webhook(N1, &ca, &wa[0], t, "A one"))
            .await,
        200
    );
    // a fresh reply goes out as the second send, proving the duplicate was not sent
    let fresh = api.must_reply(ALICE, &a, "anything else?").await;
    good.wait_sends(2, WAIT).await;
    api.wait_status(&a, fresh["id"].as_str().unwrap(), "accepted")
        .await;
    assert_eq!(good.count(), 2, "{:?}", good.sends());
    assert_eq!(
        good.sends()[1].body["biz_opaque_callback_data"],
        fresh["id"]
    );
    let n = api.messages(&a).await.len();
    assert_eq!(n, 6, "5 before + the fresh reply; redelivery added nothing");
    // capacity survived: alice owns A (1 of 2) → one more claim works, the next is refused
    let x = api.open_conv(N1, &customer(), "x").await;
    let y = api.open_conv(N1, &customer(), "y").await;
    api.must_claim(ALICE, &x).await;
    assert_eq!(api.claim(ALICE, &y).await.0, 409);
}

/// Plain inbound messages are committed without rewriting their conversation's record; after a
/// SIGKILL every view of the conversation still counts them, and the next message follows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_committed_without_their_record_survive_sigkill() {
    let (dir, storage, cfg_path, graph, mut p) = start_with_graph_down().await;
    let api = p.api.clone();
    let cust = customer();
    // Meta's times are earlier than the broker's clock (whole seconds, sent before received).
    let t = now() - 600;
    api.send_text_at(N1, &cust, t, "first").await;
    let id = api.conv_id(N1, &cust).await;
    for i in 1..=3 {
        let text = format!("plain {i}");
        let w = text_webhook(N1, &cust, &wamid(), t + 100 * i, &text);
        assert_eq!(api.webhook(&w).await, 200);
    }
    let before = api.conversation(&id).await;
    p.kill9();
    drop(graph);

    let graph = FakeGraph::start().await;
    let port = free_port();
    write_config(&cfg_path, &storage, port, &graph.base, 5);
    let p2 = BinProc::spawn(&cfg_path, port, &dir.path().join("log2.txt")).await;
    let api = p2.api.clone();
    let after = api.conversation(&id).await;
    assert_eq!(after, before, "the same conversation, messages and all");
    let last = parse_time(&after["last_message_at"]).timestamp();
    assert_eq!(last, t + 300, "the last message's time");
    assert_eq!(
        parse_time(&after["window_expires_at"]).timestamp(),
        t + 300 + 24 * 3600
    );
    let listed = api.list(ROOT, &format!("customer={cust}")).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["last_message_at"], after["last_message_at"]);

    // The next message takes the next position: nothing stored before is overwritten.
    let w = text_webhook(N1, &cust, &wamid(), t + 400, "after the crash");
    assert_eq!(api.webhook(&w).await, 200);
    let msgs = api.messages(&id).await;
    assert_eq!(
        texts(&msgs),
        vec!["first", "plain 1", "plain 2", "plain 3", "after the crash"]
    );
    let ids: std::collections::HashSet<&str> = msgs
        .iter()
        .map(|m| m["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids.len(), 5, "distinct message ids");
}

/// Many concurrent webhooks; SIGKILL in the middle; every acknowledged one must be there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_webhooks_survive_sigkill_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("db");
    let cfg_path = dir.path().join("switchboard.toml");
    let graph = FakeGraph::start().await;
    let port = free_port();
    write_config(&cfg_path, &storage, port, &graph.base, 5);
    let mut p = BinProc::spawn(&cfg_path, port, &dir.path().join("log1.txt")).await;

    let customers: Vec<String> = (0..6).map(|_| customer()).collect();
    let acked: Arc<Mutex<Vec<(String, String, String)>>> = Arc::new(Mutex::new(Vec::new())); // (number, customer, wamid)
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let api = p.api.clone();
        let acked = acked.clone();
        let stop = stop.clone();
        let customers = customers.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let cust = &customers[(worker + i) % customers.len()];
                let number = if i.is_multiple_of(3) { N2 } else { N1 };
                let w1 = wamid();
                let w2 = wamid();
                let body = envelope(vec![entry(vec![change(
                    number,
                    vec![
                        text_msg(&w1, cust, now(), &format!("w{worker} i{i} a")),
                        text_msg(&w2, cust, now(), &format!("w{worker} i{i} b")),
                    ],
                    vec![],
                )])]);
                let bytes = serde_json::to_vec(&body).unwrap();
                if let Some(200) = api.webhook_bytes_opt(bytes).await {
                    let mut a = acked.lock().unwrap();
                    a.push((number.to_owned(), cust.clone(), w1));
                    a.push((number.to_owned(), cust.clone(), w2));
                }
                i += 1;
            }
        }));
    }
    // let it run until a good number were acknowledged, then kill
    wait_for_acks(&acked, 100, "100 acknowledged webhook messages").await;
    p.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();

    let port = free_port();
    write_config(&cfg_path, &storage, port, &graph.base, 5);
    let p2 = BinProc::spawn(&cfg_path, port, &dir.path().join("log2.txt")).await;
    let mut stored: HashMap<(String, String), Vec<String>> = HashMap::new();
    for (number, cust, _) in &acked {
        let key = (number.clone(), cust.clone());
        if stored.contains_key(&key) {
            continue;
        }
        let id = p2.api.conv_id(number, cust).await;
        let wamids = p2
            .api
            .messages(&id)
            .await
            .iter()
            .filter_map(|m| m["wamid"].as_str().map(str::to_owned))
            .collect();
        stored.insert(key, wamids);
    }
    let mut missing = Vec::new();
    for (number, cust, w) in &acked {
        if !stored[&(number.clone(), cust.clone())].contains(w) {
            missing.push(w.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages lost after SIGKILL: {:?}",
        missing.len(),
        acked.len(),
        missing
    );
    // and no duplicates
    for ((n, c), ws) in &stored {
        let mut sorted = ws.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ws.len(), "duplicate wamids in ({n}, {c})");
    }
}

/// SIGTERM while a send is at Graph: the broker finishes it (no duplicate after restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_in_flight_send() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("db");
    let cfg_path = dir.path().join("switchboard.toml");
    let graph = FakeGraph::start().await;
    graph.push(GraphReply::Delay(800, Box::new(GraphReply::Ok)));
    let port = free_port();
    write_config(&cfg_path, &storage, port, &graph.base, 5);
    let mut p = BinProc::spawn(&cfg_path, port, &dir.path().join("log1.txt")).await;
    let api = p.api.clone();
    let cust = customer();
    let id = api.open_conv(N1, &cust, "hello").await;
    api.must_claim(ALICE, &id).await;
    let m = api.must_reply(ALICE, &id, "in flight at shutdown").await;
    let msg_id = m["id"].as_str().unwrap().to_owned();
    graph.wait_sends(1, WAIT).await;
    let st = p.signal_and_wait("TERM", Duration::from_secs(20)).await;
    assert!(st.success(), "{st:?}; log:\n{}", p.log_text());

    let port = free_port();
    write_config(&cfg_path, &storage, port, &graph.base, 5);
    let p2 = BinProc::spawn(&cfg_path, port, &dir.path().join("log2.txt")).await;
    let m = p2.api.wait_status(&id, &msg_id, "accepted").await;
    // prove no resend happened: a fresh reply is the second and last send
    let fresh = p2.api.must_reply(ALICE, &id, "after restart").await;
    p2.api
        .wait_status(&id, fresh["id"].as_str().unwrap(), "accepted")
        .await;
    let sends = graph.sends();
    assert_eq!(
        graph.sends_for(&msg_id).len(),
        1,
        "the in-flight message was sent twice: {sends:#?}"
    );
    assert_eq!(m["wamid"], json!("wamid.OUT1"));
}

/// Replies acknowledged with 202 under load, then SIGKILL: after the restart each one is sent
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_replies_survive_sigkill_under_load() {
    let (dir, storage, cfg_path, broken, mut p) = start_with_graph_down().await;

    let owners = [BOB, CAROL, ROOT, BOB];
    let mut convs = Vec::new();
    for tok in owners {
        let id = p.api.open_conv(N1, &customer(), "load").await;
        p.api.must_claim(tok, &id).await;
        convs.push((tok, id));
    }
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new())); // (conv, msg id)
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (w, (tok, id)) in convs.iter().cloned().enumerate() {
        let api = p.api.clone();
        let acked = acked.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let resp = api
                    .http
                    .post(api.url(&format!("/api/v1/conversations/{id}/messages")))
                    .bearer_auth(tok)
                    .json(&json!({"text": format!("w{w} r{i}"), "idempotency_key": format!("load-{w}-{i}")}))
                    .send()
                    .await;
                if let Ok(r) = resp {
                    if r.status().as_u16() == 202 {
                        if let Ok(v) = r.json::<Value>().await {
                            acked.lock().unwrap().push((id.clone(), v["id"].as_str().unwrap().to_owned()));
                        }
                    }
                }
                i += 1;
            }
        }));
    }
    wait_for_acks(&acked, 60, "60 acknowledged replies").await;
    p.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    drop(broken);
    let acked = acked.lock().unwrap().clone();

    let good = FakeGraph::start_with_prefix("wamid.GOOD").await;
    let port = free_port();
    write_config(&cfg_path, &storage, port, &good.base, 1_000_000);
    let p2 = BinProc::spawn(&cfg_path, port, &dir.path().join("log2.txt")).await;
    good.wait_sends(acked.len(), Duration::from_secs(20)).await;
    for (conv, msg) in &acked {
        let m = p2.api.wait_status(conv, msg, "accepted").await;
        assert!(m["wamid"].as_str().unwrap().starts_with("wamid.GOOD"));
        assert_eq!(
            good.sends_for(msg).len(),
            1,
            "message {msg} sent {} times",
            good.sends_for(msg).len()
        );
    }
}

/// Waits until the load tasks have recorded at least `n` acknowledgements.
async fn wait_for_acks<T>(acked: &std::sync::Mutex<Vec<T>>, n: usize, what: &str) {
    eventually(what, Duration::from_secs(30), || {
        let have = acked.lock().map(|a| a.len()).unwrap_or(0);
        async move {
            if have >= n {
                Ok(())
            } else {
                Err(format!("{have}"))
            }
        }
    })
    .await;
}

/// Starts the real binary on a fresh directory with a Graph API that fails every send (HTTP
/// 500, retried "forever"), so every acknowledged reply stays pending until the kill.
async fn start_with_graph_down() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    FakeGraph,
    BinProc,
) {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("db");
    let cfg_path = dir.path().join("switchboard.toml");
    let broken = FakeGraph::start_with_prefix("wamid.BROKEN").await;
    broken.set_default(GraphReply::Status(500));
    let port = free_port();
    write_config(&cfg_path, &storage, port, &broken.base, 1_000_000);
    let p = BinProc::spawn(&cfg_path, port, &dir.path().join("log1.txt")).await;
    (dir, storage, cfg_path, broken, p)
}
