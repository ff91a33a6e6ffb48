//! Webhook input Meta should not send but might: timestamps from the future, one wamid listed
//! under two customers.

use crate::common::*;
use serde_json::json;

/// How far ahead of the broker's clock a timestamp is still taken as given (`ingest`).
const SKEW_SECS: i64 = 5 * 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_far_in_the_future_is_dated_on_arrival_and_counted() {
    let tb = TB::start().await;
    let name = "switchboard_inbound_future_timestamps_total";
    let before = metric_sum(&tb.metrics().await, name, &[]).unwrap_or(0.0);

    let cust = customer();
    let sent = now();
    tb.send_text_at(N1, &cust, sent + 365 * SECS_PER_DAY, "from next year")
        .await;
    let arrived = now();
    let id = tb.conv_id(N1, &cust).await;
    let c = tb.conversation(&id).await;
    let at = parse_time(&c["messages"][0]["at"]).timestamp();
    assert!(
        (sent..=arrived).contains(&at),
        "dated on arrival ({sent}..={arrived}), not a year ahead: {c}"
    );
    let closes = parse_time(&c["window_expires_at"]).timestamp();
    assert!(
        closes <= arrived + SECS_PER_DAY,
        "the window closes 24 h after arrival, not a year later: {c}"
    );
    let after = metric_sum(&tb.metrics().await, name, &[]).unwrap_or(0.0);
    assert!(after >= before + 1.0, "counted: {before} -> {after}");

    // A customer's clock a little ahead is within the skew: taken as given.
    let ahead = now() + SKEW_SECS / 2;
    tb.send_text_at(N1, &cust, ahead, "slightly ahead").await;
    let c = tb.conversation(&id).await;
    assert_eq!(
        parse_time(&c["messages"][1]["at"]).timestamp(),
        ahead,
        "{c}"
    );
    assert_eq!(
        parse_time(&c["window_expires_at"]).timestamp(),
        ahead + SECS_PER_DAY,
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_wamid_under_two_customers_in_one_webhook_is_stored_once_under_the_first() {
    let tb = TB::start().await;
    let conflicts = "switchboard_inbound_wamid_conflicts_total";
    let before = metric_sum(&tb.metrics().await, conflicts, &[]).unwrap_or(0.0);

    let (first, second, third) = (customer(), customer(), customer());
    let w = wamid();
    let ts = now();
    // Under two customers of one change, then under a third customer on the other number.
    let body = envelope(vec![entry(vec![
        change(
            N1,
            vec![
                text_msg(&w, &first, ts, "the message"),
                text_msg(&w, &second, ts, "the message again"),
            ],
            vec![],
        ),
        change(N2, vec![text_msg(&w, &third, ts, "and again")], vec![]),
    ])]);
    assert_eq!(tb.webhook(&body).await, 200);
    // Redelivered whole: still nothing new.
    assert_eq!(tb.webhook(&body).await, 200);

    let id = tb.conv_id(N1, &first).await;
    let msgs = tb.messages(&id).await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["wamid"], json!(w));
    assert_eq!(msgs[0]["text"], json!("the message"));
    assert!(
        tb.conv_of(N1, &second).await.is_none(),
        "no conversation for the second listing"
    );
    assert!(
        tb.conv_of(N2, &third).await.is_none(),
        "no conversation for the listing on another number"
    );
    let after = metric_sum(&tb.metrics().await, conflicts, &[]).unwrap_or(0.0);
    assert!(after >= before + 2.0, "both counted: {before} -> {after}");
}
