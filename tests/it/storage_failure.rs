//! A failing or hung store: `/healthz` says so, and the supervisor reopens a failing one
//! in-process.

use std::time::Duration;

use crate::common::*;
use serde_json::json;
use switchboard::{Config, Supervisor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_storage_is_reported_and_the_broker_restarts_on_its_journal() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Cfg::new(&dir.path().join("db"), &graph.base);
    let config = Config::from_toml_str(&cfg.toml()).unwrap();
    let sup = Supervisor::start(config).await.unwrap();
    let api = Api::new(sup.broker().addr());
    let store = sup.broker().ctx().store.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(sup.run(async {
        let _ = stopped.await;
    }));

    let cust = customer();
    let first = wamid();
    let t = now() - 60;
    assert_eq!(
        api.webhook(&text_webhook(N1, &cust, &first, t, "before"))
            .await,
        200
    );
    assert_eq!(api.healthz().await, 200);

    // The disk "fails": the next webhook is not acknowledged, and health says so.
    store.inject_write_failure(true);
    let second = wamid();
    let during = text_webhook(N1, &cust, &second, t + 1, "during");
    assert_eq!(api.webhook(&during).await, 500);
    assert_eq!(api.healthz().await, 503);

    // The supervisor reopens the store on the same port; Meta's redelivery is then stored.
    eventually("the broker to be healthy again", WAIT, || async {
        match api.healthz().await {
            200 => Ok(()),
            other => Err(format!("healthz {other}")),
        }
    })
    .await;
    assert_eq!(api.webhook(&during).await, 200);
    let id = api.conv_id(N1, &cust).await;
    let texts: Vec<_> = api
        .messages(&id)
        .await
        .iter()
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(texts, vec![json!("before"), json!("during")]);
    let restarts = metric_sum(
        &api.metrics().await,
        "switchboard_broker_restarts_total",
        &[],
    );
    assert!(restarts.unwrap_or(0.0) >= 1.0, "restarts: {restarts:?}");

    stop.send(()).unwrap();
    run.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_disk_is_reported_until_the_commit_returns() {
    let tb = TB::start_with(|c| c.storage_extra = "stall_after_ms = 100".into()).await;
    let store = tb.broker.as_ref().unwrap().ctx().store.clone();
    store.inject_write_stall(Duration::from_millis(1500));
    let api = tb.api.clone();
    let slow = tokio::spawn(async move {
        api.webhook(&text_webhook(N1, &customer(), &wamid(), now(), "slow"))
            .await
    });
    eventually("healthz to report the stall", WAIT, || async {
        match tb.healthz().await {
            503 => Ok(()),
            other => Err(format!("healthz {other}")),
        }
    })
    .await;
    store.inject_write_stall(Duration::ZERO);
    assert_eq!(
        slow.await.unwrap(),
        200,
        "the stalled webhook is acknowledged once written"
    );
    assert_eq!(tb.healthz().await, 200);
}
