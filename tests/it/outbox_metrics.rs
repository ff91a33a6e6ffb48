//! What an SRE reads when a number is throttled or the Graph API is down: each number's backlog,
//! `switchboard_outbox_pending{number}`, and how long its replies waited,
//! `switchboard_outbound_delay_seconds{number}`.
//!
//! A test binary of its own: metrics are process-wide, and the other outbound tests' brokers
//! send on the same numbers.

use crate::common::*;

async fn pending(tb: &TB, number: &str) -> Option<f64> {
    let text = tb.metrics().await;
    metric_sum(
        &text,
        "switchboard_outbox_pending",
        &[&format!("number=\"{number}\"")],
    )
}

async fn wait_pending(tb: &TB, n1: f64, n2: f64) {
    eventually("outbox pending gauges", WAIT, || async {
        let got = (pending(tb, N1).await, pending(tb, N2).await);
        if got == (Some(n1), Some(n2)) {
            Ok(())
        } else {
            Err(format!("{got:?}, want ({n1}, {n2})"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_numbers_backlog_and_reply_delays_are_measured_across_a_restart() {
    if reran_alone!() {
        return;
    }
    let mut tb = TB::start_with(|c| {
        c.max_attempts = 1_000_000;
        c.retry_max_ms = 50;
        // A queue of one: some of the replies below wait on disk only (spilled), and count too.
        c.outbox_extra = "queue_capacity = 1".into();
    })
    .await;
    wait_pending(&tb, 0.0, 0.0).await;
    tb.graph.set_default(GraphReply::Status(500)); // every send fails and is retried
    let (a, _) = claimed(&tb, N1, BOB).await;
    let (b, _) = claimed(&tb, N1, BOB).await;
    let (c, _) = claimed(&tb, N2, DAVE).await;
    let mut sent = Vec::new();
    for (owner, conv, text) in [
        (BOB, &a, "a1"),
        (BOB, &a, "a2"),
        (BOB, &b, "b1"),
        (DAVE, &c, "c1"),
    ] {
        let m = tb.must_reply(owner, conv, text).await;
        sent.push((conv.clone(), m["id"].as_str().unwrap().to_owned()));
    }
    tb.graph.wait_sends(3, WAIT).await; // attempted and failing
    wait_pending(&tb, 3.0, 1.0).await;

    // After a restart the count comes from disk. The new Graph API holds every send for 2 s, so
    // the gauge is read while all four are still unsettled.
    let good = FakeGraph::start_with_prefix("wamid.AFTER").await;
    good.set_default(GraphReply::Delay(2_000, Box::new(GraphReply::Ok)));
    tb.restart_with_graph(good).await;
    assert_eq!(
        (pending(&tb, N1).await, pending(&tb, N2).await),
        (Some(3.0), Some(1.0))
    );
    for (conv, id) in &sent {
        tb.wait_status(conv, id, "accepted").await;
    }
    wait_pending(&tb, 0.0, 0.0).await;

    // Every reply waited at least the 2 s the Graph API held it after the restart.
    let text = tb.metrics().await;
    for (number, replies) in [(N1, 3.0), (N2, 1.0)] {
        let label = format!("number=\"{number}\"");
        let count = metric_sum(&text, "switchboard_outbound_delay_seconds_count", &[&label]);
        let sum = metric_sum(&text, "switchboard_outbound_delay_seconds_sum", &[&label]);
        assert_eq!(count, Some(replies), "delays recorded for {number}");
        assert!(sum.unwrap_or(0.0) >= 2.0 * replies, "{number}: {sum:?}");
    }
    tb.shutdown().await;
}
