//! `TB`: a broker started in-process on port 0 with a temporary directory and its own
//! `FakeGraph`, restartable on the same storage; and the conversations most tests start from.

use std::sync::Arc;
use std::time::Duration;

use switchboard::app::Broker;
use switchboard::config::Config;

use super::api::Api;
use super::config::{Cfg, BOB, N1};
use super::fake_graph::FakeGraph;
use super::util::customer;

pub struct TB {
    pub api: Api,
    pub broker: Option<Broker>,
    pub graph: FakeGraph,
    pub cfg: Cfg,
    /// The storage directory, kept (and removed) for as long as the harness lives.
    _dir: tempfile::TempDir,
    /// The broker's wall clock, kept across restarts.
    pub clock: switchboard::clock::SharedClock,
}

impl std::ops::Deref for TB {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

pub async fn start_broker_with_clock(cfg: &Cfg, clock: switchboard::clock::SharedClock) -> Broker {
    let text = cfg.toml();
    let config = Config::from_toml_str(&text)
        .unwrap_or_else(|e| panic!("test config rejected: {e:?}\n{text}"));
    Broker::start_with_clock(config, clock)
        .await
        .unwrap_or_else(|e| panic!("broker failed to start: {e:?}"))
}

impl TB {
    pub async fn start() -> TB {
        TB::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Cfg)) -> TB {
        TB::start_with_clock(tweak, Arc::new(switchboard::clock::SystemClock)).await
    }

    /// Starts a broker whose wall clock is `clock` (e.g. a `ManualClock` the test moves).
    pub async fn start_with_clock(
        tweak: impl FnOnce(&mut Cfg),
        clock: switchboard::clock::SharedClock,
    ) -> TB {
        let graph = FakeGraph::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Cfg::new(&dir.path().join("db"), &graph.base);
        tweak(&mut cfg);
        let broker = start_broker_with_clock(&cfg, clock.clone()).await;
        let api = Api::new(broker.addr());
        TB {
            api,
            broker: Some(broker),
            graph,
            cfg,
            _dir: dir,
            clock,
        }
    }

    pub async fn shutdown(&mut self) {
        if let Some(b) = self.broker.take() {
            tokio::time::timeout(Duration::from_secs(20), b.shutdown())
                .await
                .expect("broker.shutdown() did not finish within 20 s");
        }
    }

    /// Drops the broker without shutting down (a crash minus the process exit), then starts
    /// again on the same storage directory.
    pub async fn crash_and_restart(&mut self) {
        drop(self.broker.take());
        let broker = start_broker_with_clock(&self.cfg, self.clock.clone()).await;
        self.api = Api::new(broker.addr());
        self.broker = Some(broker);
    }

    /// Graceful shutdown, then start again on the same storage directory.
    pub async fn restart(&mut self) {
        self.shutdown().await;
        let broker = start_broker_with_clock(&self.cfg, self.clock.clone()).await;
        self.api = Api::new(broker.addr());
        self.broker = Some(broker);
    }

    /// Like restart, but with a new FakeGraph (and the config pointing to it).
    pub async fn restart_with_graph(&mut self, graph: FakeGraph) {
        self.shutdown().await;
        self.cfg.graph_base = graph.base.clone();
        self.graph = graph;
        let broker = start_broker_with_clock(&self.cfg, self.clock.clone()).await;
        self.api = Api::new(broker.addr());
        self.broker = Some(broker);
    }
}

/// Opens a conversation, claims it as bob and sends one reply; returns (conv, customer,
/// message id, outbound wamid) once it is accepted.
pub async fn accepted_reply(tb: &TB) -> (String, String, String, String) {
    let cust = customer();
    let conv = tb.open_conv(N1, &cust, "need help").await;
    tb.must_claim(BOB, &conv).await;
    let m = tb.must_reply(BOB, &conv, "how can I help?").await;
    let id = m["id"].as_str().unwrap().to_owned();
    let m = tb.wait_status(&conv, &id, "accepted").await;
    let w = m["wamid"]
        .as_str()
        .expect("accepted message has a wamid")
        .to_owned();
    (conv, cust, id, w)
}

/// A new customer's conversation on `number`, claimed by `token`'s agent: (id, customer).
pub async fn claimed(tb: &TB, number: &str, token: &str) -> (String, String) {
    let cust = customer();
    let id = tb.open_conv(number, &cust, "hello").await;
    tb.must_claim(token, &id).await;
    (id, cust)
}

/// Waits until conversation `id` (as `GET /api/v1/conversations/{id}` shows it) satisfies
/// `pred`, and returns it; `what` names the wait in the failure.
pub async fn wait_conv(
    tb: &TB,
    id: &str,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    super::util::eventually(what, super::util::WAIT, || async {
        let c = tb.conversation(id).await;
        if pred(&c) {
            Ok(c)
        } else {
            Err(c.to_string())
        }
    })
    .await
}

/// Waits until conversation `id` has `status`, and returns it.
pub async fn wait_status(tb: &TB, id: &str, status: &str) -> serde_json::Value {
    wait_conv(tb, id, &format!("status {status}"), |c| {
        c["status"] == status
    })
    .await
}

/// The texts of the notes the bot left in conversation `c`, oldest first.
pub fn bot_notes(c: &serde_json::Value) -> Vec<String> {
    c["messages"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter(|m| m["direction"] == "note" && m["author"] == "bot")
                .filter_map(|m| m["text"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
