//! Idle conversation actors passivate (after the idle timeout, or the idlest first beyond
//! `conversations.max_live`) and come back from storage with their state intact.
//! (Its own test binary, so the process-global actor gauge belongs to this broker alone.)

use std::time::Duration;

use crate::common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passivated_conversations_reactivate_with_state_intact() {
    if reran_alone!() {
        return;
    }
    let tb = TB::start_with(|c| c.idle_timeout_ms = 200).await;
    let cust = customer();
    let id = tb.open_conv(N1, &cust, "before idle").await;
    tb.must_claim(ALICE, &id).await;
    assert_eq!(tb.note(ALICE, &id, "idle note").await.0, 201);
    let (s, r) = tb.reply(ALICE, &id, "before idle reply", "idle-key").await;
    assert_eq!(s, 202);
    tb.wait_status(&id, r["id"].as_str().unwrap(), "accepted")
        .await;
    let other = tb.open_conv(N1, &customer(), "second conversation").await;
    let before = tb.conversation(&id).await;

    // the live-actor gauge drops to zero once both conversations are idle
    no_live_actors(&tb.api, "live actors to drop to 0").await;

    // state intact after reactivation by a read
    let after = tb.conversation(&id).await;
    assert_eq!(after["assignee"], json!("alice"));
    assert_eq!(after["status"], json!("assigned"));
    assert_eq!(after["messages"], before["messages"]);

    // ownership and capacity are enforced after passivation
    let (s, v) = tb.claim(BOB, &id).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["assignee"], json!("alice"));
    tb.must_claim(ALICE, &other).await;
    let third = tb.open_conv(N1, &customer(), "third").await;
    let (s, v) = tb.claim(ALICE, &third).await;
    assert_eq!(
        s, 409,
        "alice owns 2 (max 2) even though the actors slept: {v}"
    );
    assert_eq!(err_code(&v), "capacity_reached");

    // idempotency key and wamid dedup survive passivation
    no_live_actors(&tb.api, "live actors to drop to 0 again").await;
    let (s, again) = tb.reply(ALICE, &id, "before idle reply", "idle-key").await;
    assert_eq!(s, 202);
    assert_eq!(again["id"], r["id"]);
    let first_wamid = before["messages"][0]["wamid"].as_str().unwrap().to_owned();
    let ts = parse_time(&before["messages"][0]["at"]).timestamp();
    assert_eq!(
        tb.webhook(&text_webhook(N1, &cust, &first_wamid, ts, "before idle"))
            .await,
        200
    );
    tb.send_text(N1, &cust, "after idle").await;
    let msgs = tb.messages(&id).await;
    assert_eq!(
        msgs.len(),
        4,
        "inbound, note, reply, new inbound: {msgs:#?}"
    );
    assert_eq!(msgs[3]["text"], json!("after idle"));
    assert_eq!(tb.graph.count(), 1, "the idempotent retry sent nothing");
}

/// Beyond `conversations.max_live` the idlest actor passivates at once, long before its idle
/// timeout, and its next message reactivates it from storage with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_live_the_idlest_conversation_passivates_first() {
    if reran_alone!() {
        return;
    }
    let tb = TB::start_with(|c| {
        c.idle_timeout_ms = 600_000;
        c.conversations_extra = "max_live = 2".into();
    })
    .await;
    let (ca, cb, cc) = (customer(), customer(), customer());
    let a = tb.open_conv(N1, &ca, "a first").await;
    let b = tb.open_conv(N1, &cb, "b first").await;
    tb.must_claim(ALICE, &b).await;
    assert_eq!(counters(&tb.api).await, (2.0, 2.0, 0.0));
    let a_before = tb.conversation(&a).await;

    // A third conversation passes the bound: `a`, idle longest, passivates; `b` and `c` stay.
    let c = tb.open_conv(N1, &cc, "c first").await;
    eventually(
        "the idlest actor to passivate",
        Duration::from_secs(10),
        || async {
            match counters(&tb.api).await {
                (3.0, 2.0, 1.0) => Ok(()),
                other => Err(format!(
                    "(activations, live, bound passivations) = {other:?}"
                )),
            }
        },
    )
    .await;
    tb.send_text(N1, &cb, "b again").await;
    assert_eq!(
        counters(&tb.api).await,
        (3.0, 2.0, 1.0),
        "b was still live: no activation, nothing passivated"
    );

    // `a`'s next message reactivates it from storage (and `c`, now the idlest, makes room).
    tb.send_text(N1, &ca, "a again").await;
    eventually("a back, c passivated", Duration::from_secs(10), || async {
        match counters(&tb.api).await {
            (4.0, 2.0, 2.0) => Ok(()),
            other => Err(format!(
                "(activations, live, bound passivations) = {other:?}"
            )),
        }
    })
    .await;
    let texts = |msgs: Vec<serde_json::Value>| -> Vec<String> {
        msgs.iter()
            .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(texts(tb.messages(&a).await), ["a first", "a again"]);
    assert_eq!(tb.conv_id(N1, &ca).await, a, "the same conversation");
    let a_after = tb.conversation(&a).await;
    for key in ["status", "team", "assignee", "created_at"] {
        assert_eq!(a_after[key], a_before[key], "{key}");
    }
    assert_eq!(texts(tb.messages(&b).await), ["b first", "b again"]);
    assert_eq!(tb.conversation(&b).await["assignee"], json!("alice"));
    assert_eq!(texts(tb.messages(&c).await), ["c first"]);
    // `b` went idle after `c` did, so `b` is still live: a claim answers from its actor
    // without an activation.
    let (s, v) = tb.claim(ALICE, &b).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(counters(&tb.api).await.0, 4.0);
    let idle = metric_sum(
        &tb.api.metrics().await,
        "switchboard_actor_passivations_total",
        &[r#"reason="idle""#],
    );
    assert_eq!(idle, Some(0.0), "the idle timeout retired nothing");
}

/// (activations, live actors, passivations beyond the bound) from `/metrics`.
async fn counters(api: &Api) -> (f64, f64, f64) {
    let t = api.metrics().await;
    let get = |name: &str, labels: &[&str]| metric_sum(&t, name, labels).unwrap_or(-1.0);
    (
        get("switchboard_actor_activations_total", &[]),
        get("switchboard_live_conversation_actors", &[]),
        get(
            "switchboard_actor_passivations_total",
            &[r#"reason="bound""#],
        ),
    )
}

/// Waits until every conversation actor has passivated (the live-actor gauge reads 0).
async fn no_live_actors(api: &Api, what: &str) {
    eventually(what, Duration::from_secs(10), move || async move {
        let t = api.metrics().await;
        match metric_sum(&t, "switchboard_live_conversation_actors", &[]) {
            Some(0.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// The binary's allocator gives idle memory back: jemalloc runs with the background purging
/// thread and the short decay of `switchboard::alloc` (read back and logged at start-up), and
/// that thread exists. Without `malloc_conf` jemalloc would purge only when allocating again, so a
/// broker gone quiet kept its peak RSS (issue 17).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_allocator_purges_idle_memory_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cfg = Cfg::new(&dir.path().join("db"), "http://127.0.0.1:9/v25.0");
    cfg.listen = format!("127.0.0.1:{port}");
    let path = dir.path().join("alloc.toml");
    std::fs::write(&path, cfg.toml()).unwrap();
    let p = BinProc::spawn(&path, port, &dir.path().join("log.txt")).await;
    let log = p.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("allocator"))
        .unwrap_or_else(|| panic!("no allocator line at start-up; log:\n{log}"));
    let decay = switchboard::alloc::DECAY_MS;
    for want in [
        "allocator returns idle memory".to_string(),
        "background_thread=true".to_string(),
        format!("dirty_decay_ms={decay}"),
        format!("muzzy_decay_ms={decay}"),
    ] {
        assert!(line.contains(&want), "{want:?} missing from {line:?}");
    }
    let tasks = format!("/proc/{}/task", p.child.id());
    eventually(
        "a jemalloc background thread",
        Duration::from_secs(10),
        || {
            let tasks = tasks.clone();
            async move {
                let names: Vec<String> = std::fs::read_dir(&tasks)
                    .map_err(|e| e.to_string())?
                    .filter_map(|t| t.ok())
                    .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                    .map(|n| n.trim().to_string())
                    .collect();
                if names.iter().any(|n| n.starts_with("jemalloc_bg")) {
                    Ok(())
                } else {
                    Err(format!("threads: {names:?}"))
                }
            }
        },
    )
    .await;
}
