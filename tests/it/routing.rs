//! Routing rules, queue priority, business hours (fallbacks, after-hours reply), reassignment
//! after `reassign_after`, SLAs in both modes and the admin API for rules and team settings.
//!
//! Time-dependent tests run the broker on a `ManualClock` and move it; nothing sleeps.

use std::time::Duration;

use crate::common::*;
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use switchboard::clock::ManualClock;

/// Ms since the epoch of a UTC wall-clock time (Berlin is UTC+1 in late November).
fn utc(d: u32, h: u32, min: u32) -> i64 {
    Utc.with_ymd_and_hms(2026, 11, d, h, min, 0)
        .single()
        .expect("valid date")
        .timestamp_millis()
}

/// A customer wa_id: a country calling code (plus area code) and fresh digits up to `len`.
fn cust_len(prefix: &str, len: usize) -> String {
    let n = uniq("");
    let digits: String = n.chars().filter(|c| c.is_ascii_digit()).collect();
    let rest = len - prefix.len();
    format!(
        "{prefix}{:0>rest$}",
        &digits[digits.len().saturating_sub(rest)..]
    )
}

fn cust(prefix: &str) -> String {
    match prefix {
        "1415" => cust_len("14152", 11),
        "34" | "43" => cust_len(prefix, 11),
        _ => cust_len(prefix, 12),
    }
}

/// Opens a conversation with a message stamped at the manual clock's time.
async fn open_at(tb: &TB, clock: &ManualClock, number: &str, text: &str) -> String {
    let customer = customer();
    tb.send_text_at(number, &customer, clock_secs(clock), text)
        .await;
    tb.conv_id(number, &customer).await
}

const RULES: &str = r#"
[[teams]]
id = "orders"
name = "Orders"

[[teams]]
id = "german"
name = "German desk"

[[routing.rules]]
name = "orders"
when = { keywords = ["bestellung", "order"] }
then = { team = "orders", priority = "high", labels = ["order"] }

[[routing.rules]]
name = "german speakers"
when = { country = ["DE", "AT"], language = ["de"] }
then = { team = "german" }

[[routing.rules]]
name = "spanish"
when = { language = ["es"] }
then = { team = "sales", labels = ["es"] }

[[routing.rules]]
name = "us on the support number"
when = { country = ["US"], number = ["106540352242922"] }
then = { team = "sales", priority = "urgent" }
"#;

async fn routed(tb: &TB, number: &str, customer: &str, text: &str) -> Value {
    let id = tb.open_conv(number, customer, text).await;
    tb.conversation(&id).await
}

#[tokio::test]
async fn rules_route_by_keyword_country_language_and_number() {
    let tb = TB::start_with(|c| c.extra.push_str(RULES)).await;

    let c = routed(
        &tb,
        N1,
        &cust("49"),
        "Wo ist meine Bestellung? Ich warte seit einer Woche.",
    )
    .await;
    assert_eq!(c["team"], "orders", "{c}");
    assert_eq!(c["priority"], "high");
    assert_eq!(c["labels"], json!(["order"]));
    assert_eq!(c["routed_by"], "orders");

    let c = routed(
        &tb,
        N1,
        &cust("43"),
        "Guten Tag, ich habe eine Frage zu meinem Konto und brauche bitte Hilfe.",
    )
    .await;
    assert_eq!(c["team"], "german", "{c}");
    assert_eq!(c["priority"], "normal");

    // Country matches but the language does not: no rule, the number's default team.
    let c = routed(
        &tb,
        N1,
        &cust("49"),
        "Hello, I have a question about my account and need some help please.",
    )
    .await;
    assert_eq!(c["team"], "support", "{c}");
    assert!(c.get("routed_by").is_none(), "{c}");

    let c = routed(
        &tb,
        N1,
        &cust("34"),
        "Hola, tengo una pregunta sobre mi cuenta y necesito ayuda, por favor.",
    )
    .await;
    assert_eq!(
        (c["team"].as_str(), &c["labels"]),
        (Some("sales"), &json!(["es"])),
        "{c}"
    );

    let c = routed(&tb, N1, &cust("1415"), "hi").await;
    assert_eq!(
        (c["team"].as_str(), c["priority"].as_str()),
        (Some("sales"), Some("urgent"))
    );
    // The same customer country on the other number matches no rule.
    let c = routed(&tb, N2, &cust("1415"), "hi").await;
    assert_eq!(c["team"], "sales");
    assert_eq!(c["priority"], "normal");
    assert!(c.get("routed_by").is_none(), "{c}");

    let m = tb.metrics().await;
    let n = metric_sum(
        &m,
        "switchboard_routed_conversations_total",
        &["rule=\"orders\"", "team=\"orders\""],
    );
    assert!(n >= Some(1.0), "routed metric:\n{m}");
}

#[tokio::test]
async fn a_reopened_conversation_is_routed_again() {
    let tb = TB::start_with(|c| c.extra.push_str(RULES)).await;
    let customer = cust("49");
    let id = tb
        .open_conv(
            N1,
            &customer,
            "Hello, I have a question about my account please.",
        )
        .await;
    assert_eq!(tb.conversation(&id).await["team"], "support");
    tb.must_claim(BOB, &id).await;
    let (s, v) = tb.resolve(BOB, &id).await;
    assert_eq!(s, 200, "{v}");
    tb.send_text(N1, &customer, "where is my order 12345?")
        .await;
    let c = tb.conversation(&id).await;
    assert_eq!(
        (c["status"].as_str(), c["team"].as_str()),
        (Some("queued"), Some("orders")),
        "{c}"
    );
    assert_eq!(c["priority"], "high");
}

#[tokio::test]
async fn the_queue_serves_higher_priority_first() {
    let tb = TB::start_with(|c| c.extra.push_str(RULES)).await;
    let normal = tb.open_conv(N1, &cust("44"), "just a question").await;
    let urgent = tb.open_conv(N1, &cust("1415"), "help").await; // urgent, team sales
    let high = tb.open_conv(N1, &cust("44"), "my order is late").await; // high, team orders
    assert_eq!(tb.conversation(&normal).await["team"], "support");
    // Put all three on one team, keeping their priorities.
    for id in [&urgent, &high] {
        let (s, v) = tb.transfer(ROOT, id, json!({"team": "support"})).await;
        assert_eq!(s, 200, "{v}");
    }
    assert_eq!(
        queue_ids(&tb, CAROL, "support").await,
        vec![urgent.clone(), high, normal]
    );
    let (s, c) = tb.post(BOB, "/api/v1/teams/support/next", json!({})).await;
    assert_eq!((s, c["id"].as_str()), (200, Some(urgent.as_str())), "{c}");
}

/// The ids waiting in `team`'s queue, in the order it serves them.
async fn queue_ids(tb: &TB, token: &str, team: &str) -> Vec<String> {
    let (s, q) = tb.get(token, &format!("/api/v1/teams/{team}/queue")).await;
    assert_eq!(s, 200, "{q}");
    q["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

const BERLIN_HOURS: &str = r#"time_zone = "Europe/Berlin"
hours = { mon = ["09:00-17:00"], tue = ["09:00-17:00"], wed = ["09:00-17:00"], thu = ["09:00-17:00"], fri = ["09:00-17:00"] }
holidays = ["2026-12-01"]"#;

/// Support on Berlin hours, falling back to sales on New York's (Mondays 09:00–17:00).
async fn follow_the_sun(clock: &std::sync::Arc<ManualClock>) -> TB {
    TB::start_with_clock(
        |c| {
            c.support_extra = format!("{BERLIN_HOURS}\nfallback_teams = [\"sales\"]");
            c.sales_extra = r#"time_zone = "America/New_York"
hours = { mon = ["09:00-17:00"] }"#
                .into();
        },
        clock.clone(),
    )
    .await
}

#[tokio::test]
async fn a_closed_team_hands_new_conversations_to_an_open_fallback() {
    let clock = ManualClock::new(utc(30, 9, 0)); // Monday 10:00 in Berlin: support is open
    let tb = follow_the_sun(&clock).await;
    let c = tb
        .conversation(&open_at(&tb, &clock, N1, "hello").await)
        .await;
    assert_eq!(c["team"], "support", "{c}");

    // Monday 20:00 in Berlin is 14:00 in New York: support is closed, sales open.
    clock.set(utc(30, 19, 0));
    let c = tb
        .conversation(&open_at(&tb, &clock, N1, "hello").await)
        .await;
    assert_eq!(c["team"], "sales", "{c}");
}

#[tokio::test]
async fn what_waits_when_a_team_closes_moves_to_an_open_fallback_keeping_its_place_in_line() {
    let clock = ManualClock::new(utc(30, 15, 0)); // Monday 16:00 in Berlin: support is open
    let tb = follow_the_sun(&clock).await;
    let waiting = open_at(&tb, &clock, N1, "hello").await;
    clock.set(utc(30, 15, 30));
    let later = open_at(&tb, &clock, N2, "hi sales").await;
    let owned = open_at(&tb, &clock, N1, "mine").await;
    tb.must_claim(CAROL, &owned).await;
    assert_eq!(tb.conversation(&waiting).await["team"], "support");

    // 17:00 in Berlin, 11:00 in New York: support closes while sales is open.
    clock.set(utc(30, 16, 0));
    let moved = eventually("the waiting conversation to move", WAIT, || async {
        let c = tb.conversation(&waiting).await;
        match c["team"].as_str() {
            Some("sales") => Ok(c),
            _ => Err(c.to_string()),
        }
    })
    .await;
    assert_eq!(moved["status"], "queued", "{moved}");
    let c = tb.conversation(&owned).await;
    assert_eq!(
        (c["team"].as_str(), c["assignee"].as_str()),
        (Some("support"), Some("carol")),
        "an owned conversation stays: {c}"
    );
    // It waited since 15:00, so it is ahead of the one sales has had since 15:30.
    assert_eq!(queue_ids(&tb, ROOT, "sales").await, vec![waiting, later]);
    assert_eq!(queue_ids(&tb, ROOT, "support").await, Vec::<String>::new());
    let moves = metric_sum(
        &tb.metrics().await,
        "switchboard_fallback_moves_total",
        &["from=\"support\"", "to=\"sales\""],
    );
    assert!(moves >= Some(1.0), "{moves:?}");
}

fn clock_secs(clock: &ManualClock) -> i64 {
    use switchboard::clock::Clock;
    clock.now_ms() / 1000
}

fn system_texts(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["direction"] == "outbound" && m["author"] == "system")
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn the_after_hours_reply_goes_out_once_per_closed_period_even_across_a_reopen_and_on_holidays(
) {
    let clock = ManualClock::new(utc(27, 17, 0)); // Friday 18:00 Berlin: closed
    let tb = TB::start_with_clock(
        |c| {
            c.support_extra = format!(
                "{BERLIN_HOURS}\nafter_hours_reply = \"We are closed and answer from 09:00.\""
            )
        },
        clock.clone(),
    )
    .await;
    let customer = customer();
    tb.send_text_at(N1, &customer, clock_secs(&clock), "hello?")
        .await;
    let id = tb.conv_id(N1, &customer).await;
    assert_eq!(
        system_texts(&tb.messages(&id).await),
        vec!["We are closed and answer from 09:00."]
    );
    let sent = tb.graph.wait_sends(1, WAIT).await;
    assert_eq!(
        sent[0].body["text"]["body"],
        "We are closed and answer from 09:00."
    );
    assert_eq!(tb.conversation(&id).await["status"], "queued");

    // Same closed period (Saturday): nothing more, not even after the conversation was
    // resolved and the customer's next message reopened it.
    clock.set(utc(28, 11, 0));
    tb.send_text_at(N1, &customer, clock_secs(&clock), "anyone?")
        .await;
    assert_eq!(system_texts(&tb.messages(&id).await).len(), 1);
    assert_eq!(tb.resolve(CAROL, &id).await.0, 200);
    tb.send_text_at(N1, &customer, clock_secs(&clock), "still there?")
        .await;
    assert_eq!(tb.conversation(&id).await["status"], "queued");
    assert_eq!(system_texts(&tb.messages(&id).await).len(), 1);

    // Monday 10:00 is open: no reply. Tuesday 2026-12-01 is a holiday: a new closed period.
    clock.set(utc(30, 9, 0));
    tb.send_text_at(N1, &customer, clock_secs(&clock), "good morning")
        .await;
    assert_eq!(system_texts(&tb.messages(&id).await).len(), 1);
    clock.set(
        Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0)
            .unwrap()
            .timestamp_millis(),
    );
    tb.send_text_at(N1, &customer, clock_secs(&clock), "hello again")
        .await;
    assert_eq!(system_texts(&tb.messages(&id).await).len(), 2);
}

#[tokio::test]
async fn an_assignee_who_does_not_answer_within_reassign_after_loses_the_conversation() {
    let clock = ManualClock::new(utc(30, 10, 0));
    let tb = TB::start_with_clock(
        |c| c.support_extra = "assignment = \"round_robin\"\nreassign_after = \"10m\"".into(),
        clock.clone(),
    )
    .await;
    tb.presence(ALICE, "online").await;
    let id = open_at(&tb, &clock, N1, "hi").await;
    let c = wait_conv(&tb, &id, "assignment to alice", |c| {
        c["assignee"] == "alice"
    })
    .await;
    assert_eq!(c["status"], "assigned");
    tb.presence(BOB, "online").await;

    // A second conversation goes to bob, who answers it in time.
    let answered = open_at(&tb, &clock, N1, "hello").await;
    wait_conv(&tb, &answered, "assignment to bob", |c| {
        c["assignee"] == "bob"
    })
    .await;
    clock.advance(Duration::from_secs(5 * 60));
    tb.must_reply(BOB, &answered, "on it").await;

    clock.advance(Duration::from_secs(6 * 60));
    let c = wait_conv(&tb, &id, "reassignment to bob", |c| c["assignee"] == "bob").await;
    assert_eq!(c["status"], "assigned");
    let notes: Vec<String> = tb
        .messages(&id)
        .await
        .iter()
        .filter(|m| m["direction"] == "note")
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("reassigned from alice") && n.contains("did not answer")),
        "{notes:?}"
    );
    assert_eq!(tb.conversation(&answered).await["assignee"], "bob");
    let m = tb.metrics().await;
    assert!(
        metric_sum(
            &m,
            "switchboard_assignments_total",
            &["team=\"support\"", "reason=\"no_answer\""]
        ) >= Some(1.0),
        "{m}"
    );
}

#[tokio::test]
async fn a_missed_first_response_raises_priority_tells_supervisors_and_escalates() {
    // It counts `switchboard_sla_total{team="support"}` exactly: other tests move it too.
    if reran_alone!() {
        return;
    }
    let clock = ManualClock::new(utc(30, 10, 0));
    let tb = TB::start_with_clock(
        |c| {
            c.support_extra = "assignment = \"round_robin\"\nsla = { first_response = \"5m\", next_response = \"15m\", escalate = \"reassign\" }".into()
        },
        clock.clone(),
    )
    .await;
    let mut carol = Sse::connect(&tb.api, CAROL).await;
    tb.presence(ALICE, "online").await;
    let met = open_at(&tb, &clock, N1, "first").await;
    wait_conv(&tb, &met, "assignment", |c| c["assignee"] == "alice").await;
    clock.advance(Duration::from_secs(60));
    tb.must_reply(ALICE, &met, "hello!").await;

    let missed = open_at(&tb, &clock, N1, "second").await;
    wait_conv(&tb, &missed, "assignment", |c| c["assignee"] == "alice").await;
    tb.presence(BOB, "online").await;
    clock.advance(Duration::from_secs(6 * 60));
    let ev = carol
        .wait_for("sla breach event", |e| {
            e.event == "conversation.sla_breached"
        })
        .await;
    assert_eq!(ev.data["sla"], "first_response");
    assert_eq!(ev.data["conversation"]["id"], json!(missed));
    let c = wait_conv(&tb, &missed, "escalation to bob", |c| {
        c["assignee"] == "bob"
    })
    .await;
    assert_eq!(c["priority"], "high");
    assert_eq!(c["sla_breaches"], json!(["first_response"]));
    // The conversation answered in time breached nothing.
    assert_eq!(tb.conversation(&met).await["sla_breaches"], json!([]));

    let m = tb.metrics().await;
    let get = |kind: &str, outcome: &str| {
        metric_sum(
            &m,
            "switchboard_sla_total",
            &[
                "team=\"support\"",
                &format!("kind=\"{kind}\""),
                &format!("outcome=\"{outcome}\""),
            ],
        )
    };
    assert_eq!(get("first_response", "hit"), Some(1.0), "{m}");
    assert_eq!(get("first_response", "miss"), Some(1.0), "{m}");
    assert!(
        metric_sum(
            &m,
            "switchboard_assignments_total",
            &["reason=\"sla_escalation\""]
        ) >= Some(1.0)
    );
}

#[tokio::test]
async fn business_hours_slas_only_count_open_time() {
    // Friday 16:58 in Berlin; support counts 5 business minutes, sales 5 wall-clock minutes.
    let clock = ManualClock::new(utc(27, 15, 58));
    let tb = TB::start_with_clock(
        |c| {
            c.support_extra = format!(
                "{BERLIN_HOURS}\nsla = {{ first_response = \"5m\", business_hours_only = true }}"
            );
            c.sales_extra = "sla = { first_response = \"5m\" }".into();
        },
        clock.clone(),
    )
    .await;
    let business = open_at(&tb, &clock, N1, "before the weekend").await;
    let wall = open_at(&tb, &clock, N2, "before the weekend").await;

    clock.set(utc(28, 11, 0)); // Saturday noon
    wait_conv(&tb, &wall, "wall-clock breach", |c| {
        c["sla_breaches"] == json!(["first_response"])
    })
    .await;
    assert_eq!(tb.conversation(&business).await["sla_breaches"], json!([]));

    // 2 minutes on Friday + 3 on Monday: due Monday 09:03.
    clock.set(utc(30, 8, 4));
    wait_conv(&tb, &business, "business-hours breach", |c| {
        c["sla_breaches"] == json!(["first_response"])
    })
    .await;
}

#[tokio::test]
async fn admins_replace_routing_rules_at_run_time_and_they_survive_a_restart() {
    let mut tb = TB::start().await;
    let rules = json!({"rules": [{
        "name": "refunds",
        "when": {"keywords": ["refund"]},
        "then": {"team": "sales", "priority": "high"}
    }]});
    let (s, v) = tb.put(BOB, "/api/v1/routing/rules", rules.clone()).await;
    assert_eq!((s, err_code(&v)), (403, "forbidden"), "{v}");
    let (s, v) = tb
        .put(
            ROOT,
            "/api/v1/routing/rules",
            json!({"rules": [{"name": "x", "when": {"regex": "("}, "then": {"team": "sales"}}]}),
        )
        .await;
    assert_eq!((s, err_code(&v)), (400, "invalid_request"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("regex"),
        "{v}"
    );
    let (s, v) = tb
        .put(
            ROOT,
            "/api/v1/routing/rules",
            json!({"rules": [{"name": "x", "then": {"team": "nope"}}]}),
        )
        .await;
    assert_eq!((s, err_code(&v)), (400, "invalid_request"), "{v}");

    let (s, v) = tb.put(ROOT, "/api/v1/routing/rules", rules.clone()).await;
    assert_eq!(s, 200, "{v}");
    let c = routed(&tb, N1, &customer(), "I want a refund").await;
    assert_eq!(
        (c["team"].as_str(), c["routed_by"].as_str()),
        (Some("sales"), Some("refunds"))
    );

    tb.restart().await;
    let (s, v) = tb.get(CAROL, "/api/v1/routing/rules").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["rules"][0]["name"], "refunds", "{v}");
    let c = routed(&tb, N1, &customer(), "refund please").await;
    assert_eq!(c["team"], "sales");
}

#[tokio::test]
async fn admins_change_team_settings_and_the_new_policy_applies_at_once() {
    let mut tb = TB::start().await;
    tb.presence(BOB, "online").await;
    let id = tb.open_conv(N1, &customer(), "hello").await;
    assert_eq!(tb.conversation(&id).await["status"], "queued");

    let (s, v) = tb.get(CAROL, "/api/v1/teams/support/settings").await;
    assert_eq!((s, &v["assignment"]), (200, &json!("manual")), "{v}");
    let (s, v) = tb
        .put(
            CAROL,
            "/api/v1/teams/support/settings",
            json!({"assignment": "least_loaded"}),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = tb
        .put(
            ROOT,
            "/api/v1/teams/support/settings",
            json!({"time_zone": "Mars/Olympus"}),
        )
        .await;
    assert_eq!((s, err_code(&v)), (400, "invalid_request"), "{v}");
    let (s, v) = tb
        .put(
            ROOT,
            "/api/v1/teams/nope/settings",
            json!({"assignment": "least_loaded"}),
        )
        .await;
    assert_eq!(s, 404, "{v}");

    // A misspelt key is refused, not dropped (which would reset what it meant to the default).
    let (s, v) = tb
        .put(
            ROOT,
            "/api/v1/teams/support/settings",
            json!({"asignment": "least_loaded"}),
        )
        .await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (400, &json!("invalid_request")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("asignment")),
        "{v}"
    );

    let (s, v) = tb
        .put(
            ROOT,
            "/api/v1/teams/support/settings",
            json!({"assignment": "least_loaded", "reassign_after": "10m"}),
        )
        .await;
    assert_eq!((s, &v["assignment"]), (200, &json!("least_loaded")), "{v}");
    // The waiting conversation is assigned under the new policy without a restart.
    wait_conv(&tb, &id, "assignment to bob", |c| c["assignee"] == "bob").await;

    tb.restart().await;
    let (s, v) = tb.get(ROOT, "/api/v1/teams/support/settings").await;
    assert_eq!((s, &v["reassign_after"]), (200, &json!("10m")), "{v}");
}

#[tokio::test]
async fn next_response_and_resolution_clocks_are_settled_once_each() {
    let clock = ManualClock::new(utc(30, 10, 0));
    let tb = TB::start_with_clock(
        |c| c.sales_extra = "sla = { next_response = \"15m\", resolution = \"1h\" }".into(),
        clock.clone(),
    )
    .await;
    let customer = customer();
    tb.send_text_at(N2, &customer, clock_secs(&clock), "hello")
        .await;
    let slow = tb.conv_id(N2, &customer).await;
    let fast = open_at(&tb, &clock, N2, "quick one").await;
    tb.must_claim(DAVE, &slow).await;
    tb.must_claim(DAVE, &fast).await;
    tb.must_reply(DAVE, &slow, "hi, how can I help?").await;
    tb.must_reply(DAVE, &fast, "done!").await;
    let (s, v) = tb.resolve(DAVE, &fast).await;
    assert_eq!(s, 200, "{v}");

    clock.advance(Duration::from_secs(60));
    tb.send_text_at(N2, &customer, clock_secs(&clock), "still there?")
        .await;
    clock.advance(Duration::from_secs(16 * 60));
    wait_conv(&tb, &slow, "next-response breach", |c| {
        c["sla_breaches"] == json!(["next_response"])
    })
    .await;
    // Answering clears the running next-response clock; the resolution clock still runs.
    tb.must_reply(DAVE, &slow, "yes, sorry").await;
    clock.advance(Duration::from_secs(60 * 60));
    let c = wait_conv(&tb, &slow, "resolution breach", |c| {
        c["sla_breaches"]
            .as_array()
            .is_some_and(|b| b.contains(&json!("resolution")))
    })
    .await;
    assert_eq!(
        c["priority"], "urgent",
        "each breach raises the priority a step: {c}"
    );
    assert_eq!(tb.conversation(&fast).await["sla_breaches"], json!([]));

    let m = tb.metrics().await;
    let get = |kind: &str, outcome: &str| {
        metric_sum(
            &m,
            "switchboard_sla_total",
            &[
                "team=\"sales\"",
                &format!("kind=\"{kind}\""),
                &format!("outcome=\"{outcome}\""),
            ],
        )
    };
    assert!(get("resolution", "hit") >= Some(1.0), "{m}");
    assert!(get("resolution", "miss") >= Some(1.0), "{m}");
    assert!(get("next_response", "miss") >= Some(1.0), "{m}");
    assert!(
        metric_sum(&m, "switchboard_queue_depth", &["team=\"sales\""]).is_some(),
        "queue gauges are published: {m}"
    );
}

/// Deadlines are computed from durable state, so a crash does not lose them: a conversation
/// assigned before the crash is still reassigned when its `reassign_after` passes.
#[tokio::test]
async fn deadlines_survive_a_crash() {
    let clock = ManualClock::new(utc(30, 10, 0));
    let mut tb = TB::start_with_clock(
        |c| {
            c.support_extra = "assignment = \"round_robin\"\nreassign_after = \"10m\"\nsla = { first_response = \"30m\" }".into()
        },
        clock.clone(),
    )
    .await;
    tb.presence(ALICE, "online").await;
    let id = open_at(&tb, &clock, N1, "hi").await;
    wait_conv(&tb, &id, "assignment to alice", |c| {
        c["assignee"] == "alice"
    })
    .await;

    tb.crash_and_restart().await;
    // Presence is not persisted: alice is offline after the restart and bob comes online.
    tb.presence(BOB, "online").await;
    clock.advance(Duration::from_secs(11 * 60));
    let c = wait_conv(&tb, &id, "reassignment after the crash", |c| {
        c["assignee"] == "bob"
    })
    .await;
    assert_eq!(c["sla_breaches"], json!([]));
    clock.advance(Duration::from_secs(20 * 60));
    wait_conv(&tb, &id, "first-response breach after the crash", |c| {
        c["sla_breaches"] == json!(["first_response"])
    })
    .await;
}

/// A deadline added by an admin applies to conversations that were already open.
#[tokio::test]
async fn new_team_deadlines_apply_to_open_conversations() {
    let clock = ManualClock::new(utc(30, 10, 0));
    let tb = TB::start_with_clock(
        |c| c.support_extra = "assignment = \"round_robin\"".into(),
        clock.clone(),
    )
    .await;
    tb.presence(ALICE, "online").await;
    let id = open_at(&tb, &clock, N1, "hi").await;
    wait_conv(&tb, &id, "assignment to alice", |c| {
        c["assignee"] == "alice"
    })
    .await;
    let (s, v) = tb
        .put(
            ROOT,
            "/api/v1/teams/support/settings",
            json!({"assignment": "round_robin", "reassign_after": "5m"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    tb.presence(BOB, "online").await;
    // The open conversation's deadline is scheduled in the background after the change; keep
    // moving the clock until it has been picked up.
    let c = eventually("reassignment under the new setting", WAIT, || async {
        clock.advance(Duration::from_secs(6 * 60));
        let c = tb.conversation(&id).await;
        if c["assignee"] == "bob" {
            Ok(c)
        } else {
            Err(c.to_string())
        }
    })
    .await;
    assert_eq!(c["status"], "assigned");
}
