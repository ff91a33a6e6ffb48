//! The OpenAI-compatible intent provider (contract "Automation", `provider = "openai"`) against
//! a fake chat-completions server on loopback: a good answer decides the intent; a server that
//! hangs leaves the decision to the built-in classifier after `timeout_ms`, without delaying the
//! webhook's 200 or the conversation actor, and calls beyond `provider_max_in_flight` fall back
//! at once; garbage falls back and is counted. Bad provider config exits 2 with one line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::common::*;

const DEMO: &str = include_str!("../../config/automation-demo.toml");

/// How the fake server answers.
#[derive(Clone)]
enum Mode {
    /// `{"intent": <id>}` as the message content.
    Intent(&'static str),
    /// This content, whatever it is.
    Content(&'static str),
    /// Never answers.
    Hang,
    /// Waits for a permit of the gate, then answers `{"intent": <id>}`.
    Gated(Arc<tokio::sync::Semaphore>, &'static str),
}

/// Every request the fake server saw: (Authorization header, body).
type Seen = Arc<Mutex<Vec<(Option<String>, Value)>>>;

#[derive(Clone)]
struct FakeState {
    mode: Mode,
    hits: Arc<AtomicUsize>,
    seen: Seen,
}

struct FakeAi {
    base: String,
    hits: Arc<AtomicUsize>,
    seen: Seen,
}

async fn completions(
    State(st): State<FakeState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    st.hits.fetch_add(1, Ordering::SeqCst);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    st.seen.lock().push((auth, body));
    let content = match st.mode {
        Mode::Intent(id) => json!({ "intent": id }).to_string(),
        Mode::Content(c) => c.to_string(),
        Mode::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Mode::Gated(gate, id) => {
            if let Ok(p) = gate.acquire().await {
                p.forget();
            }
            json!({ "intent": id }).to_string()
        }
    };
    Json(json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "test-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
    }))
}

impl FakeAi {
    async fn start(mode: Mode) -> FakeAi {
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(FakeState {
                mode,
                hits: hits.clone(),
                seen: seen.clone(),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeAi {
            base: format!("http://{addr}/v1"),
            hits,
            seen,
        }
    }
}

/// The demo automation config with the OpenAI-compatible provider at `ai`.
fn openai_config(ai: &FakeAi, timeout_ms: u64, max_in_flight: usize) -> String {
    DEMO.replace(
        "provider = \"builtin\"",
        &format!(
            "provider = \"openai\"\nbase_url = \"{}/\"\nmodel = \"test-model\"\napi_key = \"sk-test\"\ntimeout_ms = {timeout_ms}\nprovider_max_in_flight = {max_in_flight}",
            ai.base
        ),
    )
}

async fn broker(ai: &FakeAi, timeout_ms: u64, max_in_flight: usize) -> TB {
    let extra = openai_config(ai, timeout_ms, max_in_flight);
    TB::start_with(|c| c.extra = format!("\n{extra}\n")).await
}

fn failures(text: &str, reason: &str) -> f64 {
    metric_sum(
        text,
        "switchboard_bot_provider_failures_total",
        &[&format!("reason=\"{reason}\"")],
    )
    .unwrap_or(0.0)
}

/// The bot's texts sent to `customer` so far.
fn bot_texts_to(tb: &TB, customer: &str) -> Vec<String> {
    tb.graph
        .sends()
        .iter()
        .filter(|s| s.body["to"] == customer)
        .filter_map(|s| s.body["text"]["body"].as_str().map(str::to_string))
        .collect()
}

async fn wait_bot_text(tb: &TB, customer: &str) -> String {
    eventually("the bot's answer", WAIT, || async {
        bot_texts_to(tb, customer)
            .into_iter()
            .next()
            .ok_or_else(|| format!("sends: {:?}", tb.graph.sends()))
    })
    .await
}

#[tokio::test]
async fn the_providers_intent_decides_the_answer() {
    let ai = FakeAi::start(Mode::Intent("refund")).await;
    let tb = broker(&ai, 5_000, 4).await;
    let customer = customer();
    // The built-in classifier knows nothing of this text (it would hand over, low confidence).
    let id = tb.open_conv(N1, &customer, "qwxz vbnm plkj").await;
    let text = wait_bot_text(&tb, &customer).await;
    assert!(text.starts_with("Refunds go back"), "{text}");
    assert_eq!(tb.conversation(&id).await["status"], "bot");
    let seen = ai.seen.lock().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (auth, body) = &seen[0];
    assert_eq!(auth.as_deref(), Some("Bearer sk-test"));
    assert_eq!(body["model"], "test-model", "{body}");
    let system = body["messages"][0]["content"].as_str().unwrap_or_default();
    for intent in ["order_status", "refund", "complaint", "none"] {
        assert!(system.contains(intent), "{intent} not in {system}");
    }
    assert_eq!(body["messages"][1]["role"], "user", "{body}");
    assert_eq!(body["messages"][1]["content"], "qwxz vbnm plkj", "{body}");
}

#[tokio::test]
async fn a_knowledge_answer_and_a_keyword_cost_no_call() {
    let ai = FakeAi::start(Mode::Intent("refund")).await;
    let tb = broker(&ai, 5_000, 4).await;
    let customer = customer();
    tb.open_conv(N1, &customer, "what are your opening hours?")
        .await;
    let text = wait_bot_text(&tb, &customer).await;
    assert!(text.contains("Monday"), "{text}");
    let other = tb
        .open_conv(N1, &crate::common::customer(), "I want to talk to a person")
        .await;
    eventually("handed over", WAIT, || async {
        match tb.conversation(&other).await["status"].as_str() {
            Some("queued") => Ok(()),
            s => Err(format!("{s:?}")),
        }
    })
    .await;
    assert_eq!(ai.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_hanging_provider_blocks_neither_the_webhook_nor_the_actor_and_overload_falls_back_at_once(
) {
    if reran_alone!() {
        return;
    }
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let ai = FakeAi::start(Mode::Gated(gate.clone(), "refund")).await;
    // The timeout is far away: only the gate ends the call.
    let tb = broker(&ai, 60_000, 1).await;
    let before = tb.metrics().await;
    let first = customer();
    let started = Instant::now();
    let id = tokio::time::timeout(WAIT, tb.open_conv(N1, &first, "qwxz vbnm plkj"))
        .await
        .expect("the webhook was answered while the provider hangs");
    eventually("the call is in flight", WAIT, || async {
        match ai.hits.load(Ordering::SeqCst) {
            1 => Ok(()),
            n => Err(format!("{n} calls")),
        }
    })
    .await;
    // The actor answers commands while its bot turn waits on the provider (one that changes
    // nothing: a note would make the pending turn stale).
    let (s, v) = tb.release(BOB, &id).await;
    assert_eq!((s, err_code(&v)), (403, "not_owner"), "{v}");
    assert_eq!(tb.conversation(&id).await["status"], "bot");
    assert!(bot_texts_to(&tb, &first).is_empty());
    // A second turn finds the one call slot taken: the built-in classifier answers at once.
    let second = customer();
    tb.open_conv(N1, &second, "thank you").await;
    let text = wait_bot_text(&tb, &second).await;
    assert!(text.starts_with("You are welcome"), "{text}");
    assert_eq!(ai.hits.load(Ordering::SeqCst), 1, "no second call was made");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "nothing waited for the provider's timeout"
    );
    let after = tb.metrics().await;
    assert_eq!(
        failures(&after, "overload") - failures(&before, "overload"),
        1.0
    );
    // The provider answers at last: its intent decides the first turn.
    gate.add_permits(1);
    let text = wait_bot_text(&tb, &first).await;
    assert!(text.starts_with("Refunds go back"), "{text}");
    let after = tb.metrics().await;
    assert_eq!(
        metric_sum(&after, "switchboard_bot_provider_seconds_count", &[]).unwrap_or(0.0)
            - metric_sum(&before, "switchboard_bot_provider_seconds_count", &[]).unwrap_or(0.0),
        1.0,
        "one call timed (the refused one was never made)"
    );
}

#[tokio::test]
async fn a_provider_that_never_answers_falls_back_after_its_timeout() {
    if reran_alone!() {
        return;
    }
    let ai = FakeAi::start(Mode::Hang).await;
    let tb = broker(&ai, 400, 4).await;
    let before = tb.metrics().await;
    let customer = customer();
    let started = Instant::now();
    let id = tb.open_conv(N1, &customer, "thank you so much").await;
    let text = wait_bot_text(&tb, &customer).await;
    let took = started.elapsed();
    assert!(text.starts_with("You are welcome"), "{text}");
    assert!(took >= Duration::from_millis(400), "answered in {took:?}");
    assert_eq!(ai.hits.load(Ordering::SeqCst), 1);
    // "thanks" resolves: the built-in classifier's intent was applied in full.
    assert_eq!(tb.conversation(&id).await["status"], "resolved");
    let after = tb.metrics().await;
    assert_eq!(
        failures(&after, "timeout") - failures(&before, "timeout"),
        1.0
    );
}

#[tokio::test]
async fn garbage_from_the_provider_falls_back_and_is_counted() {
    if reran_alone!() {
        return;
    }
    let ai = FakeAi::start(Mode::Content(
        "I believe the customer might be expressing gratitude.",
    ))
    .await;
    let tb = broker(&ai, 5_000, 4).await;
    let before = tb.metrics().await;
    let customer = customer();
    tb.open_conv(N1, &customer, "thank you so much").await;
    let text = wait_bot_text(&tb, &customer).await;
    assert!(text.starts_with("You are welcome"), "{text}");
    assert_eq!(ai.hits.load(Ordering::SeqCst), 1);
    let after = tb.metrics().await;
    assert_eq!(
        failures(&after, "garbage") - failures(&before, "garbage"),
        1.0
    );
    assert_eq!(
        failures(&after, "timeout") - failures(&before, "timeout"),
        0.0
    );
}

#[tokio::test]
async fn the_provider_saying_none_hands_over() {
    let ai = FakeAi::start(Mode::Content("{\"intent\": \"none\"}")).await;
    let tb = broker(&ai, 5_000, 4).await;
    let customer = customer();
    // The built-in classifier would answer this one; the provider's word wins.
    let id = tb.open_conv(N1, &customer, "thank you so much").await;
    let c = eventually("handed over", WAIT, || async {
        let c = tb.conversation(&id).await;
        match c["status"].as_str() {
            Some("queued") => Ok(c),
            _ => Err(c.to_string()),
        }
    })
    .await;
    let notes: Vec<&str> = c["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["direction"] == "note")
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert!(
        notes.len() == 1 && notes[0].contains("low_confidence"),
        "{notes:?}"
    );
}

#[test]
fn openai_without_base_url_or_model_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let valid = {
        let mut cfg = Cfg::new(&dir.path().join("db"), "http://127.0.0.1:9/v25.0");
        cfg.listen = format!("127.0.0.1:{}", free_port());
        cfg.toml()
    };
    let without_url = DEMO.replace(
        "provider = \"builtin\"",
        "provider = \"openai\"\nmodel = \"m\"",
    );
    crate::config::expect_config_error(
        &format!("{valid}\n{without_url}"),
        &["automation.base_url", "openai"],
    );
    let without_model = DEMO.replace(
        "provider = \"builtin\"",
        "provider = \"openai\"\nbase_url = \"http://127.0.0.1:11434/v1\"",
    );
    crate::config::expect_config_error(
        &format!("{valid}\n{without_model}"),
        &["automation.model", "openai"],
    );
}
