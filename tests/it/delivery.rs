//! Delivery statuses and ambiguous sends against a fake Meta that, like the real one, sends
//! status callbacks (as signed webhooks to the broker) for the messages it takes, echoing each
//! send's `biz_opaque_callback_data`, sometimes before it answers the send or instead of
//! answering it in time.
//!
//! - Statuses only move forward whatever the order of callbacks and send answers, across
//!   restarts (issue 17, item 2).
//! - A send whose outcome is unknown (timeout, broken connection, 2xx without `messages[0].id`)
//!   is held until a callback names it (the wamid is adopted, nothing is sent again) or the hold
//!   ends (then it is sent again), also after a crash during the send (items 4 and 9c).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use rand::seq::SliceRandom;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// A fake Meta: Graph API plus status callbacks
// ---------------------------------------------------------------------------------------------

/// What the fake Meta does with one send.
#[derive(Clone, Debug)]
struct Plan {
    /// Fire `sent`, `delivered` and `read` for the new wamid, as three webhooks posted
    /// concurrently in random order, this long after the request arrived (None: no callbacks).
    callbacks_after_ms: Option<u64>,
    /// Whether the answer waits until every callback was acknowledged by the broker.
    answer_after_callbacks: bool,
    /// Echo `biz_opaque_callback_data` in the callbacks, as Meta does.
    echo: bool,
    /// The answer, after `answer_after_ms`.
    answer: Answer,
    answer_after_ms: u64,
}

#[derive(Clone, Debug, PartialEq)]
enum Answer {
    /// 200 with `messages[0].id` = the wamid.
    Ok,
    /// 200 with a body that is not JSON.
    NotJson,
    /// Never answers.
    Hang,
}

impl Plan {
    /// Meta under load: every callback reaches the broker before the answer to the send.
    fn callbacks_first(echo: bool) -> Plan {
        Plan {
            callbacks_after_ms: Some(0),
            answer_after_callbacks: true,
            echo,
            answer: Answer::Ok,
            answer_after_ms: 0,
        }
    }

    /// Takes the message and calls back after `callbacks_ms`, but answers only after `answer_ms`.
    fn slow(callbacks_ms: u64, answer_ms: u64) -> Plan {
        Plan {
            callbacks_after_ms: Some(callbacks_ms),
            answer_after_callbacks: false,
            echo: true,
            answer: Answer::Ok,
            answer_after_ms: answer_ms,
        }
    }

    /// Never answers and never calls back (the request may or may not have arrived).
    fn hang() -> Plan {
        Plan {
            callbacks_after_ms: None,
            answer_after_callbacks: false,
            echo: true,
            answer: Answer::Hang,
            answer_after_ms: 0,
        }
    }

    /// Answers at once with 200 and `body`, calling back (or not) right after.
    fn answer(answer: Answer, callbacks: bool) -> Plan {
        Plan {
            callbacks_after_ms: callbacks.then_some(0),
            answer_after_callbacks: false,
            echo: true,
            answer,
            answer_after_ms: 0,
        }
    }
}

/// One send the fake Meta received.
#[derive(Clone, Debug)]
struct Post {
    /// Its `biz_opaque_callback_data`: the broker's message id.
    message: String,
    wamid: String,
    at: Instant,
}

struct MetaState {
    /// Where callbacks go (set once the broker is up; replaced after a restart).
    broker: Mutex<Option<Api>>,
    /// Plans for the next sends, in order; then `default`.
    script: Mutex<Vec<Plan>>,
    default: Mutex<Plan>,
    posts: Mutex<Vec<Post>>,
    /// Callbacks the broker did not answer 200.
    refused: Mutex<Vec<u16>>,
    counter: AtomicUsize,
}

struct Meta {
    base: String,
    state: Arc<MetaState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Meta {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Meta {
    async fn start(default: Plan) -> Meta {
        let state = Arc::new(MetaState {
            broker: Mutex::new(None),
            script: Mutex::new(Vec::new()),
            default: Mutex::new(default),
            posts: Mutex::new(Vec::new()),
            refused: Mutex::new(Vec::new()),
            counter: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route(
                &format!("/{GRAPH_VERSION}/{{phone}}/messages"),
                post(meta_send),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Meta {
            base: format!("http://{addr}/{GRAPH_VERSION}"),
            state,
            task,
        }
    }

    fn call_back_to(&self, api: &Api) {
        *self.state.broker.lock().unwrap() = Some(api.clone());
    }

    fn push(&self, plan: Plan) {
        self.state.script.lock().unwrap().push(plan);
    }

    fn posts(&self) -> Vec<Post> {
        self.state.posts.lock().unwrap().clone()
    }

    fn posts_for(&self, message: &str) -> Vec<Post> {
        self.posts()
            .into_iter()
            .filter(|p| p.message == message)
            .collect()
    }

    /// POSTs per message id.
    fn post_counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for p in self.posts() {
            *counts.entry(p.message).or_insert(0) += 1;
        }
        counts
    }

    async fn wait_posts(&self, n: usize) -> Vec<Post> {
        eventually(&format!("{n} sends to reach Meta"), WAIT, || async {
            let posts = self.posts();
            if posts.len() >= n {
                Ok(posts)
            } else {
                Err(format!("{} so far", posts.len()))
            }
        })
        .await
    }

    fn refused(&self) -> Vec<u16> {
        self.state.refused.lock().unwrap().clone()
    }
}

/// The three status webhooks Meta sends for a message it took, each on its own.
fn callbacks(number: &str, to: &str, wamid: &str, message: Option<&str>) -> Vec<Value> {
    let ts = now();
    ["sent", "delivered", "read"]
        .iter()
        .enumerate()
        .map(|(i, status)| {
            let mut s = status_obj(wamid, status, ts + i as i64, to);
            if let Some(m) = message {
                s["biz_opaque_callback_data"] = json!(m);
            }
            status_webhook(number, vec![s])
        })
        .collect()
}

/// Posts `hooks` to the broker concurrently, in random order; records any refusal.
async fn fire(st: &MetaState, hooks: Vec<Value>) {
    let Some(api) = st.broker.lock().unwrap().clone() else {
        return;
    };
    let mut hooks = hooks;
    hooks.shuffle(&mut rand::thread_rng());
    let answers = futures_util::future::join_all(hooks.iter().map(|h| api.webhook(h))).await;
    let mut refused = st.refused.lock().unwrap();
    refused.extend(answers.into_iter().filter(|s| *s != 200));
}

async fn meta_send(
    State(st): State<Arc<MetaState>>,
    axum::extract::Path(phone): axum::extract::Path<String>,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let message = body["biz_opaque_callback_data"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let to = body["to"].as_str().unwrap_or("").to_owned();
    let n = st.counter.fetch_add(1, Ordering::SeqCst) + 1;
    let wamid = format!("wamid.META{n}");
    let plan = {
        let mut script = st.script.lock().unwrap();
        if script.is_empty() {
            st.default.lock().unwrap().clone()
        } else {
            script.remove(0)
        }
    };
    st.posts.lock().unwrap().push(Post {
        message: message.clone(),
        wamid: wamid.clone(),
        at: Instant::now(),
    });
    if let Some(after) = plan.callbacks_after_ms {
        let hooks = callbacks(&phone, &to, &wamid, plan.echo.then_some(message.as_str()));
        let st2 = st.clone();
        let calls = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(after)).await;
            fire(&st2, hooks).await;
        });
        if plan.answer_after_callbacks {
            let _ = calls.await;
        }
    }
    tokio::time::sleep(Duration::from_millis(plan.answer_after_ms)).await;
    match plan.answer {
        Answer::Ok => {
            let body = json!({
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": wamid}]
            });
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Answer::NotJson => (
            StatusCode::OK,
            [("content-type", "text/html")],
            "<html>message accepted</html>",
        )
            .into_response(),
        Answer::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

/// A broker talking to `meta`, with `outbox` lines added to its `[outbox]` table.
async fn broker_for(meta: &Meta, outbox: &str) -> TB {
    let base = meta.base.clone();
    let outbox = outbox.to_owned();
    let tb = TB::start_with(move |c| {
        c.graph_base = base;
        c.outbox_extra = outbox;
        c.extra = racer_agents(10);
    })
    .await;
    meta.call_back_to(&tb.api);
    tb
}

/// `n` conversations on N1, each claimed by one of the racer agents (at most 50).
async fn conversations(tb: &TB, n: usize) -> Vec<(String, String)> {
    let mut convs = Vec::new();
    for i in 0..n {
        let token = format!("t-racer{}", i % 10);
        let (id, _) = claimed(tb, N1, &token).await;
        convs.push((token, id));
    }
    convs
}

/// `n` conversations on N2, claimed by dave (at most 5): N2 is this binary's number for tests
/// that read metrics, which are process-wide and labelled by number.
async fn conversations_on_n2(tb: &TB, n: usize) -> Vec<(String, String)> {
    let mut convs = Vec::new();
    for _ in 0..n {
        let (id, _) = claimed(tb, N2, DAVE).await;
        convs.push((DAVE.to_owned(), id));
    }
    convs
}

/// The sum of `name{number="<number>", …}` over the other `labels`.
async fn metric(tb: &TB, name: &str, number: &str, labels: &[&str]) -> Option<f64> {
    let number = format!("number=\"{number}\"");
    let mut all = vec![number.as_str()];
    all.extend_from_slice(labels);
    metric_sum(&tb.metrics().await, name, &all)
}

/// Sends `per_conversation` replies in each conversation, the conversations concurrently;
/// returns (conversation, message id) of every reply.
async fn reply_everywhere(
    tb: &TB,
    convs: &[(String, String)],
    per_conversation: usize,
) -> Vec<(String, String)> {
    let calls = convs.iter().map(|(token, conv)| async move {
        let mut ids = Vec::new();
        for i in 0..per_conversation {
            let m = tb.must_reply(token, conv, &format!("reply {i}")).await;
            ids.push((conv.clone(), m["id"].as_str().unwrap().to_owned()));
        }
        ids
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Every outbound message of `convs` by id: (status, wamid).
async fn outbound_states(tb: &TB, convs: &[(String, String)]) -> HashMap<String, (Value, Value)> {
    let mut out = HashMap::new();
    for (_, conv) in convs {
        for m in tb.messages(conv).await {
            if m["direction"] == json!("outbound") {
                out.insert(
                    m["id"].as_str().unwrap().to_owned(),
                    (m["status"].clone(), m["wamid"].clone()),
                );
            }
        }
    }
    out
}

/// Waits until every message in `sent` is `read` with the wamid Meta gave its (only) send.
async fn all_read(tb: &TB, meta: &Meta, convs: &[(String, String)], sent: &[(String, String)]) {
    eventually(
        &format!("all {} messages to be read", sent.len()),
        Duration::from_secs(30),
        || async {
            let states = outbound_states(tb, convs).await;
            let behind: Vec<_> = sent
                .iter()
                .filter_map(|(_, id)| {
                    let (status, wamid) = states.get(id)?;
                    let posts = meta.posts_for(id);
                    let right = status == &json!("read")
                        && posts.len() == 1
                        && wamid == &json!(posts[0].wamid);
                    (!right).then(|| format!("{id}: {status} {wamid} after {} sends", posts.len()))
                })
                .collect();
            if behind.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} not read: {:?}",
                    behind.len(),
                    &behind[..behind.len().min(5)]
                ))
            }
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Statuses only move forward (item 2)
// ---------------------------------------------------------------------------------------------

/// All three callbacks of each send reach the broker, concurrently and in random order, before
/// the answer to the send: every message ends `read`, and stays so across restarts. Without
/// `biz_opaque_callback_data` every status is parked first (the wamid is unknown until the
/// answer), which is where concurrent webhooks used to put back a `sent` over a `read`.
async fn callbacks_before_the_answer_end_read(echo: bool) {
    let meta = Meta::start(Plan::callbacks_first(echo)).await;
    let mut tb = broker_for(&meta, "").await;
    let convs = conversations(&tb, 10).await;
    let sent = reply_everywhere(&tb, &convs, 10).await;
    all_read(&tb, &meta, &convs, &sent).await;
    assert!(meta.refused().is_empty(), "{:?}", meta.refused());

    tb.restart().await;
    meta.call_back_to(&tb.api);
    all_read(&tb, &meta, &convs, &sent).await;
    tb.crash_and_restart().await;
    meta.call_back_to(&tb.api);
    // And after the restart too, for new sends.
    let more = reply_everywhere(&tb, &convs, 3).await;
    let all: Vec<_> = sent.iter().chain(&more).cloned().collect();
    all_read(&tb, &meta, &convs, &all).await;
    assert!(meta.refused().is_empty(), "{:?}", meta.refused());
    tb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statuses_only_move_forward_when_callbacks_beat_the_answer() {
    callbacks_before_the_answer_end_read(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statuses_only_move_forward_when_callbacks_naming_the_message_beat_the_answer() {
    callbacks_before_the_answer_end_read(true).await;
}

// ---------------------------------------------------------------------------------------------
// Ambiguous sends are held, adopted, or sent again after the hold (items 4, 9c)
// ---------------------------------------------------------------------------------------------

/// Meta takes every message and calls back, but answers after the broker's request timeout
/// (some callbacks come while the request is out, some after it timed out): each reply is
/// POSTed once and gets the wamid from its callbacks, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_timed_out_send_named_by_a_callback_is_adopted_not_sent_again() {
    if reran_alone!() {
        return;
    }
    let meta = Meta::start(Plan::slow(400, 1_500)).await;
    meta.push(Plan::slow(100, 1_500)); // the first one's callbacks beat the timeout
    let tb = broker_for(&meta, "request_timeout_ms = 250\nambiguous_hold_ms = 20000").await;
    let convs = conversations_on_n2(&tb, 2).await;
    let sent = reply_everywhere(&tb, &convs, 3).await;
    all_read(&tb, &meta, &convs, &sent).await;
    // Each conversation's replies reached Meta in the order they were accepted.
    for (_, conv) in &convs {
        let ours: Vec<_> = sent.iter().filter(|(c, _)| c == conv).collect();
        let at: Vec<Instant> = ours
            .iter()
            .map(|(_, id)| meta.posts_for(id)[0].at)
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "out of order: {ours:?}");
    }
    let ambiguous = metric(
        &tb,
        "switchboard_outbox_ambiguous_total",
        N2,
        &["cause=\"timeout\""],
    );
    assert_eq!(ambiguous.await, Some(6.0));
    let adopted = metric(&tb, "switchboard_outbox_adopted_total", N2, &[]);
    assert_eq!(adopted.await, Some(6.0));
    assert!(meta.refused().is_empty(), "{:?}", meta.refused());
}

/// A send that hangs and is never named by a callback is sent again, but only after the hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_send_without_callbacks_is_sent_again_after_the_hold() {
    let meta = Meta::start(Plan::answer(Answer::Ok, false)).await;
    meta.push(Plan::hang());
    let tb = broker_for(&meta, "request_timeout_ms = 200\nambiguous_hold_ms = 1500").await;
    let (token, conv) = conversations(&tb, 1).await.remove(0);
    let m = tb.must_reply(&token, &conv, "are you there?").await;
    let id = m["id"].as_str().unwrap();
    let m = tb.wait_status(&conv, id, "accepted").await;
    let posts = meta.posts_for(id);
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert_eq!(m["wamid"], json!(posts[1].wamid));
    let gap = posts[1].at - posts[0].at;
    // The request timeout, then the hold.
    assert!(
        gap >= Duration::from_millis(1_600),
        "sent again after {gap:?}"
    );
}

/// A 200 whose body is not JSON (no `messages[0].id`) is ambiguous, not an acceptance without a
/// wamid: the callbacks naming the message give it its wamid, and nothing is sent again...
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_that_is_not_json_takes_its_wamid_from_the_callbacks() {
    let meta = Meta::start(Plan::answer(Answer::NotJson, true)).await;
    let tb = broker_for(&meta, "ambiguous_hold_ms = 20000").await;
    let convs = conversations(&tb, 1).await;
    let sent = reply_everywhere(&tb, &convs, 3).await;
    all_read(&tb, &meta, &convs, &sent).await;
}

/// ...and without callbacks it is sent again after the hold, ending with a wamid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_that_is_not_json_and_never_named_is_sent_again_after_the_hold() {
    let meta = Meta::start(Plan::answer(Answer::Ok, false)).await;
    meta.push(Plan::answer(Answer::NotJson, false));
    let tb = broker_for(&meta, "ambiguous_hold_ms = 500").await;
    let (token, conv) = conversations(&tb, 1).await.remove(0);
    let m = tb.must_reply(&token, &conv, "taken?").await;
    let id = m["id"].as_str().unwrap();
    let m = tb.wait_status(&conv, id, "accepted").await;
    let posts = meta.posts_for(id);
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert_eq!(m["wamid"], json!(posts[1].wamid));
    assert!(posts[1].at - posts[0].at >= Duration::from_millis(500));
}

/// The broker dies while a send is out (Meta took it, its answer never came): after the restart
/// the send is held, and a callback naming it (Meta retries webhooks the broker missed) settles
/// it; it is never POSTed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_cut_by_a_crash_is_held_after_the_restart_and_adopted() {
    let hold = 2_000;
    let meta = Meta::start(Plan::answer(Answer::Ok, false)).await;
    meta.push(Plan::hang());
    let mut tb = broker_for(&meta, &format!("ambiguous_hold_ms = {hold}")).await;
    let (token, conv) = conversations(&tb, 1).await.remove(0);
    let m = tb.must_reply(&token, &conv, "before the crash").await;
    let id = m["id"].as_str().unwrap().to_owned();
    let post = meta.wait_posts(1).await.remove(0);
    tb.crash_and_restart().await;
    let restarted = Instant::now();
    meta.call_back_to(&tb.api);
    let to = tb.conversation(&conv).await["customer"]
        .as_str()
        .unwrap()
        .to_owned();
    for hook in callbacks(N1, &to, &post.wamid, Some(&id)) {
        assert_eq!(tb.webhook(&hook).await, 200);
    }
    let m = tb.wait_status(&conv, &id, "read").await;
    assert_eq!(m["wamid"], json!(post.wamid));
    // The hold would have ended by now: had it not been settled, it would have been sent again.
    tokio::time::sleep(Duration::from_millis(hold + 500).saturating_sub(restarted.elapsed())).await;
    assert_eq!(meta.posts_for(&id).len(), 1, "{:?}", meta.posts());
    // The conversation's next reply is not stuck behind it.
    let next = tb.must_reply(&token, &conv, "after the crash").await;
    tb.wait_status(&conv, next["id"].as_str().unwrap(), "accepted")
        .await;
}

/// The same crash, but nothing names the send: it is sent again once the hold ends, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_cut_by_a_crash_and_never_named_is_sent_again_after_the_hold() {
    let hold = 1_500;
    let meta = Meta::start(Plan::answer(Answer::Ok, false)).await;
    meta.push(Plan::hang());
    let mut tb = broker_for(&meta, &format!("ambiguous_hold_ms = {hold}")).await;
    let (token, conv) = conversations(&tb, 1).await.remove(0);
    let m = tb.must_reply(&token, &conv, "before the crash").await;
    let id = m["id"].as_str().unwrap().to_owned();
    meta.wait_posts(1).await;
    // Taken before the restart: the hold begins while the broker starts, before
    // `crash_and_restart` returns, so an instant taken after it would shorten the hold measured.
    let restarted = Instant::now();
    tb.crash_and_restart().await;
    meta.call_back_to(&tb.api);
    let m = tb.wait_status(&conv, &id, "accepted").await;
    let posts = meta.posts_for(&id);
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert_eq!(m["wamid"], json!(posts[1].wamid));
    assert!(
        posts[1].at - restarted >= Duration::from_millis(hold),
        "sent again {:?} after the restart",
        posts[1].at - restarted
    );
}

/// Sends marked in doubt together (a dispatch round's marks are one commit) and cut by a crash
/// are each held after the restart like a send marked alone: the ones a callback names are
/// adopted and never POSTed again, the others are sent again only once the hold has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_of_sends_cut_by_a_crash_is_held_after_the_restart_none_sent_again_blindly() {
    let hold = 1_500;
    let n = 6;
    let meta = Meta::start(Plan::answer(Answer::Ok, false)).await;
    for _ in 0..n {
        meta.push(Plan::hang());
    }
    let mut tb = broker_for(&meta, &format!("ambiguous_hold_ms = {hold}")).await;
    let convs = conversations(&tb, n).await;
    let sent = reply_everywhere(&tb, &convs, 1).await;
    let posts = meta.wait_posts(n).await;
    let restarted = Instant::now();
    tb.crash_and_restart().await;
    meta.call_back_to(&tb.api);
    // Half of them are named by Meta's callbacks (retried webhooks the broker missed).
    let (named, unnamed) = sent.split_at(n / 2);
    for (conv, id) in named {
        let to = tb.conversation(conv).await["customer"]
            .as_str()
            .unwrap()
            .to_owned();
        let post = posts.iter().find(|p| &p.message == id).expect("posted");
        for hook in callbacks(N1, &to, &post.wamid, Some(id)) {
            assert_eq!(tb.webhook(&hook).await, 200);
        }
        let m = tb.wait_status(conv, id, "read").await;
        assert_eq!(m["wamid"], json!(post.wamid));
    }
    for (conv, id) in unnamed {
        let m = tb.wait_status(conv, id, "accepted").await;
        let again = meta.posts_for(id);
        assert_eq!(again.len(), 2, "{again:?}");
        assert_eq!(m["wamid"], json!(again[1].wamid));
        assert!(
            again[1].at - restarted >= Duration::from_millis(hold),
            "sent again {:?} after the restart",
            again[1].at - restarted
        );
    }
    // Every hold has ended by now: a named send would have been POSTed again.
    tokio::time::sleep(Duration::from_millis(hold + 500).saturating_sub(restarted.elapsed())).await;
    for (_, id) in named {
        assert_eq!(meta.posts_for(id).len(), 1, "{:?}", meta.posts());
    }
}

/// A send refused for sure (HTTP 500) before a crash is not in doubt: it is sent again at once
/// after the restart, with no hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_refused_before_a_crash_is_not_held_after_the_restart() {
    let mut tb = TB::start_with(|c| {
        c.outbox_extra = "ambiguous_hold_ms = 60000".into();
        c.max_attempts = 1_000;
        c.retry_base_ms = 5_000;
        c.retry_max_ms = 5_000;
    })
    .await;
    tb.graph.set_default(GraphReply::Status(500));
    let (conv, _) = claimed(&tb, N1, BOB).await;
    let m = tb.must_reply(BOB, &conv, "through a 500").await;
    let id = m["id"].as_str().unwrap().to_owned();
    tb.graph.wait_sends(1, WAIT).await;
    // Recording the refusal is one commit; the back-off that follows lasts seconds, so the
    // crash finds no request out.
    tokio::time::sleep(Duration::from_millis(300)).await;
    tb.graph.set_default(GraphReply::Ok);
    tb.crash_and_restart().await;
    let m = tb.wait_status(&conv, &id, "accepted").await;
    assert!(m["wamid"].as_str().is_some(), "{m}");
}

// ---------------------------------------------------------------------------------------------
// Measurement: duplicates per 1,000 ambiguous sends
// ---------------------------------------------------------------------------------------------

/// 1,000 replies to a Meta that takes each message and calls back 50–400 ms later (echoing
/// `biz_opaque_callback_data`) but answers only after the broker's 200 ms request timeout, so
/// every send is ambiguous. Prints the POSTs per message. Run with
/// `cargo test --test delivery -- --ignored --nocapture duplicates_per_1000`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "measurement; prints figures for BENCHMARKS.md"]
async fn duplicates_per_1000_ambiguous_sends() {
    let meta = Meta::start(Plan::slow(0, 1_000)).await;
    let tb = broker_for(&meta, "request_timeout_ms = 200").await;
    // Callbacks 50–400 ms after each request: before and after its timeout.
    let plans: Vec<Plan> = (0..1_000)
        .map(|i| Plan::slow(50 + (i * 37 % 351) as u64, 1_000))
        .collect();
    for p in plans {
        meta.push(p);
    }
    let convs = conversations(&tb, 50).await;
    let started = Instant::now();
    let sent = reply_everywhere(&tb, &convs, 20).await;
    assert_eq!(sent.len(), 1_000);
    // Settled: read (adopted), accepted, or failed after the retries ran out.
    let settled = eventually(
        "every reply to settle",
        Duration::from_secs(300),
        || async {
            let states = outbound_states(&tb, &convs).await;
            let open = sent
                .iter()
                .filter(|(_, id)| states.get(id).is_none_or(|(s, _)| s == &json!("pending")))
                .count();
            if open == 0 {
                Ok(states)
            } else {
                Err(format!("{open} pending"))
            }
        },
    )
    .await;
    let counts = meta.post_counts();
    let posts: usize = sent
        .iter()
        .map(|(_, id)| counts.get(id).copied().unwrap_or(0))
        .sum();
    let duplicates = posts - sent.len();
    let mut by_status: HashMap<String, usize> = HashMap::new();
    for (_, id) in &sent {
        let status = settled[id].0.as_str().unwrap_or("?").to_owned();
        *by_status.entry(status).or_insert(0) += 1;
    }
    let most = sent
        .iter()
        .map(|(_, id)| counts.get(id).copied().unwrap_or(0))
        .max();
    println!(
        "ambiguous sends: {} replies, {posts} POSTs, {duplicates} duplicates \
         ({:.1} per 1,000), at most {:?} POSTs for one reply; final statuses {by_status:?}; \
         {:.1} s",
        sent.len(),
        duplicates as f64 * 1_000.0 / sent.len() as f64,
        most,
        started.elapsed().as_secs_f64()
    );
}
