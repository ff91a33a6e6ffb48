//! Prometheus metrics at `GET /metrics`.

use crate::common::*;

fn has_series(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        !l.starts_with('#')
            && (l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_without_auth() {
    let tb = TB::start().await;
    tb.open_conv(N1, &customer(), "hi").await;
    let resp = tb.http.get(tb.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "content-type {ct:?}");
    let text = resp.text().await.unwrap();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let name = if let Some(rest) = line
            .strip_prefix("# TYPE ")
            .or_else(|| line.strip_prefix("# HELP "))
        {
            rest.split_whitespace().next().unwrap_or("")
        } else if line.starts_with('#') {
            continue;
        } else {
            line.split(['{', ' ']).next().unwrap()
        };
        assert!(
            name.starts_with("switchboard_"),
            "metric not prefixed with switchboard_: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_metrics_are_present_and_move() {
    let tb = TB::start().await;
    let before = tb.metrics().await;
    let inbound_before =
        metric_sum(&before, "switchboard_inbound_messages_total", &[]).unwrap_or(0.0);

    // activity: a rejected webhook, accepted webhooks, claims (ok and conflict), a reply
    let (s, _) = tb.webhook_raw(b"{}".to_vec(), Some("sha256=00")).await;
    assert_eq!(s, 401);
    let cust = customer();
    let id = tb.open_conv(N1, &cust, "metrics one").await;
    tb.send_text(N1, &cust, "metrics two").await;
    tb.must_claim(BOB, &id).await;
    assert_eq!(tb.claim(ALICE, &id).await.0, 409);
    let m = tb.must_reply(BOB, &id, "metrics reply").await;
    tb.wait_status(&id, m["id"].as_str().unwrap(), "accepted")
        .await;
    let q = tb.open_conv(N2, &customer(), "queued sales").await;
    let _ = q;

    // metrics may be updated asynchronously: wait for the inbound counter to move by >= 3
    let api = &tb.api;
    let text = eventually("inbound counter to increase", WAIT, move || async move {
        let t = api.metrics().await;
        let v = metric_sum(&t, "switchboard_inbound_messages_total", &[]).unwrap_or(0.0);
        if v >= inbound_before + 3.0 {
            Ok(t)
        } else {
            Err(format!("{v} (before {inbound_before})"))
        }
    })
    .await;

    for name in [
        "switchboard_webhook_requests_total",
        "switchboard_inbound_messages_total",
        "switchboard_outbound_messages_total",
        "switchboard_claims_total",
        "switchboard_conversations",
        "switchboard_live_conversation_actors",
    ] {
        assert!(has_series(&text, name), "missing {name} in:\n{text}");
    }
    // labelled by outcome
    let outcomes = |name: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter_map(|l| {
                l.split("outcome=\"")
                    .nth(1)
                    .map(|r| r.split('"').next().unwrap().to_owned())
            })
            .collect::<std::collections::BTreeSet<String>>()
            .into_iter()
            .collect()
    };
    let wh = outcomes("switchboard_webhook_requests_total");
    assert!(
        wh.len() >= 2,
        "webhook requests need >= 2 outcomes (accepted and rejected), got {wh:?}"
    );
    let cl = outcomes("switchboard_claims_total");
    assert!(
        cl.len() >= 2,
        "claims need >= 2 outcomes (ok and conflict), got {cl:?}"
    );
    assert!(!outcomes("switchboard_outbound_messages_total").is_empty());
    // conversations by status and team
    assert!(
        text.lines()
            .any(|l| l.starts_with("switchboard_conversations{")
                && l.contains("status=\"assigned\"")
                && l.contains("team=\"support\"")),
        "no switchboard_conversations{{status=\"assigned\",team=\"support\"}}:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("switchboard_conversations{")
                && l.contains("status=\"queued\"")
                && l.contains("team=\"sales\"")),
        "no switchboard_conversations{{status=\"queued\",team=\"sales\"}}:\n{text}"
    );
    // latency histogram
    assert!(
        text.contains("# TYPE switchboard_webhook_duration_seconds histogram"),
        "webhook latency must be a histogram:\n{text}"
    );
    assert!(has_series(
        &text,
        "switchboard_webhook_duration_seconds_bucket"
    ));
    assert!(has_series(
        &text,
        "switchboard_webhook_duration_seconds_count"
    ));
    let count = metric_sum(&text, "switchboard_webhook_duration_seconds_count", &[]).unwrap();
    assert!(count >= 3.0, "histogram count {count}");
    // storage memory, read at scrape: the writes above sit in the memtables
    let memtables = metric_sum(
        &text,
        "switchboard_store_memory_bytes",
        &["kind=\"memtables\""],
    )
    .unwrap_or(0.0);
    assert!(memtables > 0.0, "memtables {memtables}:\n{text}");
    assert!(has_series(&text, "switchboard_store_memory_bytes"));
    // per-route latency, labelled by the route template (never the conversation id)
    let claims = metric_sum(
        &text,
        "switchboard_http_request_duration_seconds_count",
        &[
            "route=\"/api/v1/conversations/{id}/claim\"",
            "method=\"POST\"",
        ],
    )
    .unwrap_or(0.0);
    assert!(claims >= 2.0, "claim requests timed: {claims}:\n{text}");
    assert!(
        !text.contains(&format!("route=\"/api/v1/conversations/{id}")),
        "a conversation id leaked into a label"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_of_an_unknown_conversation_is_counted_as_not_found() {
    if reran_alone!() {
        return;
    }
    let tb = TB::start().await;
    let count = |t: &str| {
        metric_sum(t, "switchboard_claims_total", &["outcome=\"not_found\""]).unwrap_or(0.0)
    };
    let before = count(&tb.metrics().await);
    let (s, body) = tb.claim(ALICE, "0000000000000000").await;
    assert_eq!(s, 404, "{body}");
    assert_eq!(count(&tb.metrics().await), before + 1.0);
}

/// Counters and histograms with known labels are exported at 0 from start-up, before any
/// traffic, so dashboards and `rate()` see them right after a restart. Alone in its process: the
/// other tests' brokers move the same process-wide counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_broker_exports_its_known_series_at_zero() {
    if reran_alone!() {
        return;
    }
    let tb = TB::start().await;
    let text = tb.metrics().await;
    let zero = |name: &str, labels: &[&str]| {
        assert_eq!(
            metric_sum(&text, name, labels),
            Some(0.0),
            "{name}{labels:?} is not exported at 0:\n{text}"
        );
    };
    for outcome in [
        "ok",
        "invalid_signature",
        "invalid_json",
        "too_large",
        "timeout",
        "overloaded",
        "error",
    ] {
        zero(
            "switchboard_webhook_requests_total",
            &[&format!("outcome=\"{outcome}\"")],
        );
    }
    for outcome in [
        "unauthorized",
        "forbidden",
        "not_found",
        "already_assigned",
        "capacity_reached",
        "not_owner",
        "window_closed",
        "overloaded",
    ] {
        zero(
            "switchboard_api_requests_total",
            &[&format!("outcome=\"{outcome}\"")],
        );
    }
    for outcome in ["won", "already_assigned", "capacity_reached", "not_found"] {
        zero(
            "switchboard_claims_total",
            &[&format!("outcome=\"{outcome}\"")],
        );
    }
    for outcome in ["queued", "accepted", "failed", "window_closed"] {
        zero(
            "switchboard_outbound_messages_total",
            &[&format!("outcome=\"{outcome}\"")],
        );
    }
    for outcome in ["applied", "stale", "orphan"] {
        zero(
            "switchboard_status_updates_total",
            &[&format!("outcome=\"{outcome}\"")],
        );
    }
    for team in ["support", "sales"] {
        let team = format!("team=\"{team}\"");
        for reason in ["auto", "assignee_offline", "no_answer", "sla_escalation"] {
            zero(
                "switchboard_assignments_total",
                &[&team, &format!("reason=\"{reason}\"")],
            );
        }
        for kind in ["first_response", "next_response", "resolution"] {
            for outcome in ["hit", "miss"] {
                zero(
                    "switchboard_sla_total",
                    &[
                        &team,
                        &format!("kind=\"{kind}\""),
                        &format!("outcome=\"{outcome}\""),
                    ],
                );
            }
        }
    }
    for number in [N1, N2] {
        let number = format!("number=\"{number}\"");
        for cause in ["timeout", "connection", "no_message_id", "restart"] {
            zero(
                "switchboard_outbox_ambiguous_total",
                &[&number, &format!("cause=\"{cause}\"")],
            );
        }
        zero("switchboard_outbox_adopted_total", &[&number]);
        zero("switchboard_outbound_delay_seconds_count", &[&number]);
    }
    for name in [
        "switchboard_inbound_messages_total",
        "switchboard_inbound_duplicates_total",
        "switchboard_inbound_wamid_conflicts_total",
        "switchboard_inbound_future_timestamps_total",
        "switchboard_outbound_retries_total",
        "switchboard_outbox_spilled_total",
        "switchboard_api_requests_refused_total",
        "switchboard_mailbox_full_total",
        "switchboard_webhook_duration_seconds_count",
        "switchboard_graph_request_duration_seconds_count",
    ] {
        zero(name, &[]);
    }
}
