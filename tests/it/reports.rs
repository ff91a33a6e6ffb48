//! Reports from reporting events: a scripted day under a `ManualClock` with every figure worked
//! out by hand, CSV, who may read which report, durability across a restart, and that every
//! metric the Grafana dashboard queries is exported.
//!
//! The day (UTC; support works 09:00–17:00 Berlin = 08:00–16:00 UTC, Mon–Fri, with a 30-minute
//! business-hours-only first-response SLA and `reassign_after = 15m`; sales is always open):
//!
//! | conv | what happens |
//! |------|--------------|
//! | C1 | Wed 08:00 opens; alice claims 08:05, replies 08:10 (first response 600 s, SLA hit); customer writes 08:20; alice replies 08:30 (reply 600 s); resolves 09:00 (resolution 3600 s) |
//! | C2 | 09:00 opens; bob claims 09:10 and does not answer: back to the queue at 09:26 (reassignment); alice claims 09:27, replies 09:28 (first response 1680 s, hit), transfers it to sales 09:40; dave claims 09:45, replies 09:50, resolves 10:00 (in sales: resolution 3600 s) |
//! | C3 | 15:50 opens (10 business minutes left that day); bob claims Thu 08:10, replies 08:15: first response 59100 s wall, 1500 s business (10 + 15 min): hit (due 08:20) |
//! | C4 | 15:55 opens; misses its SLA at Thu 08:25 (5 + 25 min), seen 08:26; bob claims 08:28, replies 08:30: first response 59700 s wall, 2100 s business |

use crate::common::*;
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use switchboard::clock::{Clock, ManualClock};

/// Ms since the epoch of a UTC time in December 2026 (Dec 2 is a Wednesday).
fn utc(d: u32, h: u32, min: u32) -> i64 {
    Utc.with_ymd_and_hms(2026, 12, d, h, min, 0)
        .single()
        .expect("valid date")
        .timestamp_millis()
}

const SUPPORT: &str = r#"time_zone = "Europe/Berlin"
hours = { mon = ["09:00-17:00"], tue = ["09:00-17:00"], wed = ["09:00-17:00"], thu = ["09:00-17:00"], fri = ["09:00-17:00"] }
reassign_after = "15m"
sla = { first_response = "30m", business_hours_only = true }"#;

const WINDOW: &str = "from=2026-12-02T00:00:00Z&to=2026-12-04T00:00:00Z";

async fn start(clock: &std::sync::Arc<ManualClock>) -> TB {
    TB::start_with_clock(|c| c.support_extra = SUPPORT.into(), clock.clone()).await
}

/// A customer message at the clock's time; the conversation's id.
async fn write(tb: &TB, clock: &ManualClock, customer: &str) -> String {
    tb.send_text_at(N1, customer, clock.now_ms() / 1000, "hello")
        .await;
    tb.conv_id(N1, customer).await
}

async fn report(tb: &TB, token: &str, dimension: &str, query: &str) -> Value {
    let (s, v) = tb
        .get(token, &format!("/api/v1/reports/{dimension}?{query}"))
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

fn row<'a>(v: &'a Value, list: &str, field: &str, key: &str) -> &'a Value {
    v[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list}: {v}"))
        .iter()
        .find(|r| r[field] == key)
        .unwrap_or_else(|| panic!("no row {key} in {v}"))
}

fn stats(avg: f64, p50: f64, p90: f64) -> Value {
    json!({"avg": avg, "p50": p50, "p90": p90})
}

/// Runs the day of the module docs; returns the four conversation ids.
async fn scripted_day(tb: &TB, clock: &ManualClock) -> [String; 4] {
    let (k1, k2, k3, k4) = (customer(), customer(), customer(), customer());
    clock.set(utc(2, 8, 0));
    let c1 = write(tb, clock, &k1).await;
    clock.set(utc(2, 8, 5));
    tb.must_claim(ALICE, &c1).await;
    clock.set(utc(2, 8, 10));
    tb.must_reply(ALICE, &c1, "hi").await;
    clock.set(utc(2, 8, 20));
    write(tb, clock, &k1).await;
    clock.set(utc(2, 8, 30));
    tb.must_reply(ALICE, &c1, "done").await;
    clock.set(utc(2, 9, 0));
    let (s, v) = tb.resolve(ALICE, &c1).await;
    assert_eq!(s, 200, "{v}");

    let c2 = write(tb, clock, &k2).await;
    clock.set(utc(2, 9, 10));
    tb.must_claim(BOB, &c2).await;
    clock.set(utc(2, 9, 26));
    eventually("bob loses C2 for not answering", WAIT, || async {
        let c = tb.conversation(&c2).await;
        if c["status"] == "queued" {
            Ok(())
        } else {
            Err(c.to_string())
        }
    })
    .await;
    clock.set(utc(2, 9, 27));
    tb.must_claim(ALICE, &c2).await;
    clock.set(utc(2, 9, 28));
    tb.must_reply(ALICE, &c2, "on it").await;
    clock.set(utc(2, 9, 40));
    let (s, v) = tb.transfer(ALICE, &c2, json!({"team": "sales"})).await;
    assert_eq!(s, 200, "{v}");
    clock.set(utc(2, 9, 45));
    tb.must_claim(DAVE, &c2).await;
    clock.set(utc(2, 9, 50));
    tb.must_reply(DAVE, &c2, "sales here").await;
    clock.set(utc(2, 10, 0));
    let (s, v) = tb.resolve(DAVE, &c2).await;
    assert_eq!(s, 200, "{v}");

    clock.set(utc(2, 15, 50));
    let c3 = write(tb, clock, &k3).await;
    clock.set(utc(2, 15, 55));
    let c4 = write(tb, clock, &k4).await;

    clock.set(utc(3, 8, 10));
    tb.must_claim(BOB, &c3).await;
    clock.set(utc(3, 8, 15));
    tb.must_reply(BOB, &c3, "good morning").await;
    clock.set(utc(3, 8, 26));
    eventually("C4 misses its SLA", WAIT, || async {
        let c = tb.conversation(&c4).await;
        if c["sla_breaches"] == json!(["first_response"]) {
            Ok(())
        } else {
            Err(c.to_string())
        }
    })
    .await;
    clock.set(utc(3, 8, 28));
    tb.must_claim(BOB, &c4).await;
    clock.set(utc(3, 8, 30));
    tb.must_reply(BOB, &c4, "sorry for the wait").await;
    [c1, c2, c3, c4]
}

/// The support and sales rows the day gives (support: C1–C4 and C2's first part).
fn check_teams(v: &Value) {
    let s = row(v, "teams", "team", "support");
    assert_eq!(s["conversations"], 4, "{s}");
    assert_eq!(s["inbound"], 5, "{s}");
    assert_eq!(s["outbound"], 5, "{s}");
    assert_eq!(
        s["first_response_seconds"],
        stats(30270.0, 1680.0, 59700.0),
        "{s}"
    );
    assert_eq!(
        s["first_response_business_seconds"],
        stats(1470.0, 1500.0, 2100.0),
        "{s}"
    );
    assert_eq!(
        s["resolution_seconds"],
        stats(3600.0, 3600.0, 3600.0),
        "{s}"
    );
    assert_eq!(s["reply_seconds"], stats(24336.0, 1680.0, 59700.0), "{s}");
    assert_eq!(s["reassignments"], 1, "{s}");
    assert_eq!(s["transfers"], 1, "{s}");
    assert_eq!(s["sla_hits"], 3, "{s}");
    assert_eq!(s["sla_misses"], 1, "{s}");
    assert_eq!(s["assignments"], 5, "{s}");
    assert_eq!(
        (s["bot_resolved"].clone(), s["bot_handovers"].clone()),
        (json!(0), json!(0))
    );
    // Now: C3 and C4 are bob's, nothing waits.
    assert_eq!(s["backlog"], 2, "{s}");
    assert_eq!(s["unassigned"], 0, "{s}");

    let sales = row(v, "teams", "team", "sales");
    assert_eq!(sales["conversations"], 1, "{sales}");
    assert_eq!(sales["inbound"], 0, "{sales}");
    assert_eq!(sales["outbound"], 1, "{sales}");
    assert_eq!(sales["transfers"], 0, "{sales}");
    assert_eq!(
        sales["first_response_seconds"]["avg"],
        Value::Null,
        "{sales}"
    );
    assert_eq!(
        sales["resolution_seconds"],
        stats(3600.0, 3600.0, 3600.0),
        "{sales}"
    );
    assert_eq!(sales["backlog"], 0, "{sales}");
}

#[tokio::test]
async fn a_scripted_day_gives_the_figures_worked_out_by_hand() {
    let clock = ManualClock::new(utc(2, 7, 0));
    let mut tb = start(&clock).await;
    scripted_day(&tb, &clock).await;

    let teams = report(&tb, ROOT, "teams", WINDOW).await;
    check_teams(&teams);

    let agents = report(&tb, ROOT, "agents", WINDOW).await;
    let alice = row(&agents, "agents", "agent", "alice");
    assert_eq!(alice["conversations"], 2, "{alice}");
    assert_eq!(alice["outbound"], 3, "{alice}");
    assert_eq!(
        alice["first_response_seconds"],
        stats(1140.0, 600.0, 1680.0),
        "{alice}"
    );
    assert_eq!(alice["transfers"], 1, "{alice}");
    assert_eq!(alice["sla_hits"], 2, "{alice}");
    assert_eq!(alice["backlog"], 0, "{alice}");
    let bob = row(&agents, "agents", "agent", "bob");
    assert_eq!(bob["conversations"], 3, "{bob}");
    assert_eq!(bob["reassignments"], 1, "{bob}");
    assert_eq!(
        bob["first_response_seconds"],
        stats(59400.0, 59100.0, 59700.0),
        "{bob}"
    );
    assert_eq!(
        bob["first_response_business_seconds"],
        stats(1800.0, 1500.0, 2100.0),
        "{bob}"
    );
    assert_eq!(bob["backlog"], 2, "{bob}");
    let dave = row(&agents, "agents", "agent", "dave");
    assert_eq!(dave["resolution_seconds"]["avg"], 3600.0, "{dave}");

    let numbers = report(&tb, ROOT, "numbers", WINDOW).await;
    let n1 = row(&numbers, "numbers", "number", N1);
    assert_eq!(n1["conversations"], 4, "{n1}");
    assert_eq!(n1["inbound"], 5, "{n1}");
    assert_eq!(n1["outbound"], 6, "{n1}");
    assert_eq!(n1["resolution_seconds"]["avg"], 3600.0, "{n1}");

    // Day buckets in support's zone (Berlin, UTC+1): Wednesday had C1–C4, Thursday C3 and C4.
    let days = report(&tb, ROOT, "teams", &format!("{WINDOW}&bucket=day")).await;
    let support: Vec<&Value> = days["teams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["team"] == "support")
        .collect();
    let buckets: Vec<&str> = support
        .iter()
        .map(|r| r["bucket"].as_str().unwrap())
        .collect();
    assert_eq!(
        buckets,
        ["2026-12-02T00:00:00+01:00", "2026-12-03T00:00:00+01:00"]
    );
    assert_eq!(support[0]["conversations"], 4, "{}", support[0]);
    assert_eq!(support[0]["first_response_seconds"]["avg"], 1140.0);
    assert_eq!(support[1]["conversations"], 2, "{}", support[1]);
    assert_eq!(support[1]["sla_misses"], 1, "{}", support[1]);
    assert_eq!(support[1]["first_response_seconds"]["p50"], 59100.0);

    // A window that holds only Thursday morning sees only Thursday's events.
    let thursday = report(
        &tb,
        ROOT,
        "teams",
        "from=2026-12-03T00:00:00Z&to=2026-12-03T08:20:00Z",
    )
    .await;
    let s = row(&thursday, "teams", "team", "support");
    assert_eq!(
        (s["conversations"].clone(), s["outbound"].clone()),
        (json!(1), json!(1)),
        "{s}"
    );

    // Events are durable: the same report after a restart.
    tb.restart().await;
    check_teams(&report(&tb, ROOT, "teams", WINDOW).await);
}

#[tokio::test]
async fn reports_as_csv_access_and_bad_bounds() {
    let clock = ManualClock::new(utc(2, 7, 0));
    let tb = start(&clock).await;
    scripted_day(&tb, &clock).await;

    let (s, body, headers) = tb
        .request(
            reqwest::Method::GET,
            Some(ROOT),
            &format!("/api/v1/reports/teams?{WINDOW}&format=csv"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let ct = headers[reqwest::header::CONTENT_TYPE].to_str().unwrap();
    assert!(ct.starts_with("text/csv"), "{ct}");
    let text = body.as_str().expect("csv text");
    let lines: Vec<&str> = text.lines().collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(&header[..2], ["team", "bucket"]);
    let support: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with("support,"))
        .expect("a support line")
        .split(',')
        .collect();
    let col = |name: &str| {
        support[header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} in {header:?}"))]
    };
    assert_eq!(col("conversations"), "4");
    assert_eq!(col("first_response_seconds_p50"), "1680.0");
    assert_eq!(col("first_response_business_seconds_avg"), "1470.0");
    assert_eq!(col("sla_misses"), "1");
    assert_eq!(lines.len(), 3, "a header and two teams: {text}");

    // Agents may not read reports; a supervisor reads only its own teams.
    let (s, v) = tb
        .get(ALICE, &format!("/api/v1/reports/teams?{WINDOW}"))
        .await;
    assert_eq!((s, err_code(&v)), (403, "forbidden"), "{v}");
    let (s, v) = tb
        .get(DAVE, &format!("/api/v1/reports/agents?{WINDOW}"))
        .await;
    assert_eq!((s, err_code(&v)), (403, "forbidden"), "{v}");
    let carol = report(&tb, CAROL, "teams", WINDOW).await;
    let teams: Vec<&str> = carol["teams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["team"].as_str().unwrap())
        .collect();
    assert_eq!(teams, ["support"]);
    let carol_agents = report(&tb, CAROL, "agents", WINDOW).await;
    let names: Vec<&str> = carol_agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["agent"].as_str().unwrap())
        .collect();
    assert!(
        !names.contains(&"dave"),
        "dave's work was all in sales: {names:?}"
    );
    let n1 = row(
        &report(&tb, CAROL, "numbers", WINDOW).await,
        "numbers",
        "number",
        N1,
    )
    .clone();
    assert_eq!(n1["outbound"], 5, "only support's replies: {n1}");

    // Bad bounds are the contract's invalid_request.
    for q in [
        "",
        "from=2026-12-02T00:00:00Z",
        "from=yesterday&to=2026-12-04T00:00:00Z",
        "from=2026-12-04T00:00:00Z&to=2026-12-02T00:00:00Z",
        "from=2026-12-02T00:00:00Z&to=2026-12-02T00:00:00Z",
        "from=2026-12-02T00:00:00Z&to=2026-12-04T00:00:00Z&bucket=week",
        "from=2026-12-02T00:00:00Z&to=2026-12-04T00:00:00Z&format=xml",
    ] {
        let (s, v) = tb.get(ROOT, &format!("/api/v1/reports/teams?{q}")).await;
        assert_eq!((s, err_code(&v)), (400, "invalid_request"), "{q}: {v}");
    }
    let (s, v) = tb
        .get(ROOT, &format!("/api/v1/reports/queues?{WINDOW}"))
        .await;
    assert_eq!((s, err_code(&v)), (404, "not_found"), "{v}");
}

/// Every `switchboard_*` name the dashboard's queries use, without histogram suffixes.
fn dashboard_metrics() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/switchboard.json");
    let text = std::fs::read_to_string(&path).expect("dashboards/switchboard.json");
    let json: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "query", Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&json, &mut exprs);
    assert!(!exprs.is_empty(), "the dashboard has queries");
    let mut names: Vec<String> = Vec::new();
    for e in exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("switchboard_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let mut name = tail[..end].to_string();
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    name = base.to_string();
                }
            }
            if !names.contains(&name) {
                names.push(name);
            }
            rest = &tail[end..];
        }
    }
    names
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported() {
    let clock = ManualClock::new(utc(2, 7, 0));
    let tb = start(&clock).await;
    // Some traffic, so series that appear on first use exist too.
    scripted_day(&tb, &clock).await;
    let text = tb.metrics().await;
    let exported: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let names = dashboard_metrics();
    assert!(names.len() >= 8, "{names:?}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| {
            !exported.iter().any(|e| {
                *e == n.as_str()
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| *e == format!("{n}{s}"))
            })
        })
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}");
}

#[tokio::test]
async fn a_resolve_asks_for_a_rating_and_the_answer_counts_for_the_team_and_agent() {
    let tb = TB::start_with(|c| c.extra = "\n[csat]\nenabled = true\n".into()).await;
    let customer = customer();
    tb.send_text(N1, &customer, "help").await;
    let id = tb.conv_id(N1, &customer).await;
    tb.must_claim(ALICE, &id).await;
    tb.must_reply(ALICE, &id, "done").await;
    let (s, v) = tb.resolve(ALICE, &id).await;
    assert_eq!(s, 200, "{v}");
    let sends = tb.graph.wait_sends(2, WAIT).await;
    let asked = sends[1].body["text"]["body"].as_str().unwrap_or_default();
    assert!(asked.contains("rate our help"), "{}", sends[1].body);

    // The answer is stored, counted, and does not reopen the conversation.
    tb.send_text(N1, &customer, " 4 ").await;
    let c = eventually("the answer stored", WAIT, || async {
        let c = tb.conversation(&id).await;
        let texts: Vec<&str> = c["messages"]
            .as_array()
            .map(|m| m.iter().filter_map(|m| m["text"].as_str()).collect())
            .unwrap_or_default();
        if texts.contains(&" 4 ") {
            Ok(c)
        } else {
            Err(c.to_string())
        }
    })
    .await;
    assert_eq!(c["status"], "resolved", "{c}");
    let now = chrono::Utc::now();
    let window = format!(
        "from={}&to={}",
        (now - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        (now + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let teams = report(&tb, ROOT, "teams", &window).await;
    let s = row(&teams, "teams", "team", "support");
    assert_eq!(
        (s["csat_answers"].clone(), s["csat_avg"].clone()),
        (json!(1), json!(4.0)),
        "{s}"
    );
    let agents = report(&tb, ROOT, "agents", &window).await;
    let a = row(&agents, "agents", "agent", "alice");
    assert_eq!(a["csat_avg"], 4.0, "{a}");

    // Only one answer per question: the next message reopens as usual.
    tb.send_text(N1, &customer, "5").await;
    eventually("reopened", WAIT, || async {
        let c = tb.conversation(&id).await;
        if c["status"] == "queued" {
            Ok(())
        } else {
            Err(c.to_string())
        }
    })
    .await;
    let s = row(
        &report(&tb, ROOT, "teams", &window).await,
        "teams",
        "team",
        "support",
    )
    .clone();
    assert_eq!(s["csat_answers"], 1, "{s}");
}

#[tokio::test]
async fn without_csat_a_number_after_a_resolve_reopens() {
    let tb = TB::start().await;
    let customer = customer();
    tb.send_text(N1, &customer, "help").await;
    let id = tb.conv_id(N1, &customer).await;
    tb.must_claim(ALICE, &id).await;
    let (s, v) = tb.resolve(ALICE, &id).await;
    assert_eq!(s, 200, "{v}");
    tb.send_text(N1, &customer, "4").await;
    eventually("reopened", WAIT, || async {
        let c = tb.conversation(&id).await;
        if c["status"] == "queued" {
            Ok(())
        } else {
            Err(c.to_string())
        }
    })
    .await;
    assert_eq!(tb.graph.count(), 0, "no rating question without [csat]");
}

#[tokio::test]
async fn an_agent_is_refused_a_report_before_its_query_is_checked() {
    // Access comes first: an agent's bad query is 403, as a good one is.
    let tb = TB::start().await;
    for q in [
        "",
        "from=yesterday&to=2026-12-04T00:00:00Z",
        "from=2026-12-04T00:00:00Z&to=2026-12-02T00:00:00Z",
        "from=2026-12-02T00:00:00Z&to=2026-12-04T00:00:00Z&bucket=week",
        "from=2026-12-02T00:00:00Z&from=2026-12-03T00:00:00Z",
    ] {
        for dimension in ["teams", "agents", "numbers"] {
            let (s, v) = tb
                .get(ALICE, &format!("/api/v1/reports/{dimension}?{q}"))
                .await;
            assert_eq!(
                (s, err_code(&v)),
                (403, "forbidden"),
                "{dimension}?{q}: {v}"
            );
        }
        // A supervisor still gets the 400 naming the problem.
        let (s, v) = tb.get(CAROL, &format!("/api/v1/reports/teams?{q}")).await;
        assert_eq!((s, err_code(&v)), (400, "invalid_request"), "{q}: {v}");
    }
}

/// Teams and agents created at run time report like configured ones: a new team has its row
/// (also with nothing in the window), and a new agent's day buckets are cut in its team's time
/// zone, not in UTC (reports once read the zones from the config file only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_and_agents_created_at_run_time_are_reported_in_their_zone() {
    let tb = TB::start().await;
    for id in ["tokyo", "osaka"] {
        let (s, v) = tb
            .post(ROOT, "/api/v1/teams", json!({"id": id, "name": id}))
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = tb
        .put(
            ROOT,
            "/api/v1/teams/tokyo/settings",
            json!({"time_zone": "Asia/Tokyo"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, kenji) = tb
        .post(
            ROOT,
            "/api/v1/agents",
            json!({"id": "kenji", "name": "Kenji", "teams": ["tokyo"], "role": "agent", "max_concurrent": 3}),
        )
        .await;
    assert_eq!(s, 201, "{kenji}");
    let token = kenji["token"].as_str().expect("token").to_string();
    let conv = tb.open_conv(N1, &customer(), "hello").await;
    let (s, v) = tb.transfer(ROOT, &conv, json!({"team": "tokyo"})).await;
    assert_eq!(s, 200, "{v}");
    tb.must_claim(&token, &conv).await;
    tb.must_reply(&token, &conv, "konnichiwa").await;

    let now = Utc::now();
    let window = format!(
        "from={}&to={}",
        (now - chrono::Duration::days(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        (now + chrono::Duration::days(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let teams = report(&tb, ROOT, "teams", &window).await;
    assert_eq!(row(&teams, "teams", "team", "osaka")["conversations"], 0);
    let agents = report(&tb, ROOT, "agents", &format!("{window}&bucket=day")).await;
    let k = row(&agents, "agents", "agent", "kenji");
    let bucket = k["bucket"].as_str().expect("bucket");
    assert!(bucket.ends_with("+09:00"), "kenji's day is Tokyo's: {k}");
}
