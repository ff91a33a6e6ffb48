//! People at run time (contract "People and access"): agents and teams created and changed
//! through the admin API are in force at once, tokens are shown once and stored only as
//! hashes, a disabled agent is locked out and hands its conversations back, every change is in
//! the audit log, and all of it survives a restart; the config seeds an empty store only.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

async fn patch(tb: &TB, token: &str, path: &str, body: Value) -> (u16, Value) {
    let (s, v, _) = tb
        .request(reqwest::Method::PATCH, Some(token), path, Some(&body))
        .await;
    (s, v)
}

/// Creates an agent as root; asserts 201 and returns its token.
async fn create_agent(tb: &TB, body: Value) -> String {
    let (s, v) = tb.post(ROOT, "/api/v1/agents", body).await;
    assert_eq!(s, 201, "{v}");
    v["token"].as_str().expect("a token, shown once").to_owned()
}

/// Whether the stream ends (the server closes it) within `d`.
async fn ends_within(sse: &mut Sse, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    while sse.next_before(deadline).await.is_some() {}
    Instant::now() < deadline
}

async fn audit(tb: &TB, query: &str) -> Value {
    let (s, v) = tb.get(ROOT, &format!("/api/v1/audit{query}")).await;
    assert_eq!(s, 200, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_agent_works_at_once_and_gets_assignments() {
    let tb = TB::start_with(|c| c.support_extra = "assignment = \"round_robin\"".into()).await;
    let token = create_agent(
        &tb,
        json!({"id": "nina", "name": "Nina", "teams": ["support"], "role": "agent", "max_concurrent": 2}),
    )
    .await;
    assert_eq!(token.len(), 43, "32 random bytes in base64url: {token}");
    let (s, list) = tb.get(ROOT, "/api/v1/agents").await;
    assert_eq!(s, 200, "{list}");
    let nina = list["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["id"] == "nina"))
        .unwrap_or_else(|| panic!("nina listed: {list}"));
    assert_eq!(nina["teams"], json!(["support"]));
    assert!(
        nina.get("token").is_none(),
        "the token is shown once: {nina}"
    );
    let (s, me) = tb.get(&token, "/api/v1/agents/me").await;
    assert_eq!((s, &me["max_concurrent"]), (200, &json!(2)), "{me}");
    // The only support agent online: the team assigns to her.
    assert_eq!(tb.presence(&token, "online").await.0, 200);
    let conv = tb.open_conv(N1, &customer(), "hello").await;
    eventually("the new agent to be assigned", WAIT, || async {
        let c = tb.conversation(&conv).await;
        (c["assignee"] == "nina").then_some(()).ok_or(c.to_string())
    })
    .await;
    let (s, body) = tb.reply(&token, &conv, "hi", "k1").await;
    assert_eq!(s, 202, "{body}");
    // A transfer may name her, like any agent.
    let other = tb.open_conv(N2, &customer(), "hello").await;
    let (s, body) = tb.transfer(ROOT, &other, json!({"agent": "nina"})).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["assignee"], "nina");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_changes_are_refused_with_the_contracts_codes() {
    let tb = TB::start().await;
    for (body, why) in [
        (json!({"id": "a b", "teams": ["support"]}), "space in id"),
        (json!({"id": "", "teams": []}), "empty id"),
        (json!({"id": "system"}), "reserved id"),
        (json!({"id": "x1", "teams": ["ops"]}), "unknown team"),
        (json!({"id": "x2", "max_concurrent": 0}), "zero capacity"),
        (json!({"id": "x3", "role": "boss"}), "unknown role"),
        (json!({"id": "x4", "max_concurent": 3}), "misspelt key"),
        (json!({"name": "no id"}), "missing id"),
    ] {
        let (s, v) = tb.post(ROOT, "/api/v1/agents", body).await;
        assert_eq!((s, err_code(&v)), (400, "invalid_request"), "{why}: {v}");
    }
    let (s, v) = tb
        .post(ROOT, "/api/v1/agents", json!({"id": "alice"}))
        .await;
    assert_eq!((s, err_code(&v)), (409, "already_exists"), "{v}");
    let (s, v) = tb
        .post(ROOT, "/api/v1/teams", json!({"id": "sales", "name": "S"}))
        .await;
    assert_eq!((s, err_code(&v)), (409, "already_exists"), "{v}");
    let (s, v) = tb
        .post(
            ROOT,
            "/api/v1/teams",
            json!({"id": "ops", "settings": {"assignment": "fastest"}}),
        )
        .await;
    assert_eq!((s, err_code(&v)), (400, "invalid_request"), "{v}");
    let (s, v) = patch(&tb, ROOT, "/api/v1/agents/nobody", json!({"name": "N"})).await;
    assert_eq!((s, err_code(&v)), (404, "not_found"), "{v}");
    let (s, v) = tb
        .post(ROOT, "/api/v1/agents/nobody/token", json!({}))
        .await;
    assert_eq!((s, err_code(&v)), (404, "not_found"), "{v}");
    let (s, v) = patch(&tb, ROOT, "/api/v1/teams/nope", json!({"name": "N"})).await;
    assert_eq!((s, err_code(&v)), (404, "not_found"), "{v}");
    let (s, v) = patch(&tb, ROOT, "/api/v1/agents/bob", json!({"teams": ["ops"]})).await;
    assert_eq!((s, err_code(&v)), (400, "invalid_request"), "{v}");
    let (s, v) = patch(
        &tb,
        ROOT,
        "/api/v1/agents/root",
        json!({"role": "supervisor"}),
    )
    .await;
    assert_eq!(
        (s, err_code(&v)),
        (400, "invalid_request"),
        "the last admin: {v}"
    );
    for token in [ALICE, CAROL] {
        let (s, v) = tb
            .post(token, "/api/v1/agents", json!({"id": "sneaky"}))
            .await;
        assert_eq!((s, err_code(&v)), (403, "forbidden"), "{v}");
    }
    let (s, v) = tb.get(ROOT, "/api/v1/agents").await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["alice", "bob", "carol", "dave", "root"],
        "nothing refused was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_token_refuses_the_old_one_at_once() {
    let tb = TB::start().await;
    let old = create_agent(&tb, json!({"id": "rita", "teams": ["support"]})).await;
    assert_eq!(tb.get(&old, "/api/v1/agents/me").await.0, 200);
    let mut stream = Sse::connect(&tb.api, &old).await;
    let (s, v) = tb.post(ROOT, "/api/v1/agents/rita/token", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let new = v["token"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let (s, v) = tb.get(&old, "/api/v1/agents/me").await;
    assert_eq!((s, err_code(&v)), (401, "unauthorized"));
    assert_eq!(tb.get(&new, "/api/v1/agents/me").await.0, 200);
    assert!(
        ends_within(&mut stream, WAIT).await,
        "the stream opened with the old token ends"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_agent_is_locked_out_and_hands_back_what_it_owned() {
    let tb = TB::start().await;
    let conv = tb.open_conv(N1, &customer(), "hello").await;
    tb.must_claim(BOB, &conv).await;
    let mut stream = Sse::connect(&tb.api, BOB).await;
    let (s, v) = patch(&tb, ROOT, "/api/v1/agents/bob", json!({"disabled": true})).await;
    assert_eq!((s, &v["disabled"]), (200, &json!(true)), "{v}");
    let (s, v) = tb.get(BOB, "/api/v1/conversations").await;
    assert_eq!((s, err_code(&v)), (401, "unauthorized"));
    assert!(
        ends_within(&mut stream, WAIT).await,
        "its event stream ends"
    );
    // Support assigns manually, and still the conversation goes back to its queue.
    eventually("the conversation back in the queue", WAIT, || async {
        let c = tb.conversation(&conv).await;
        (c["status"] == "queued" && c["assignee"].is_null() && c["team"] == "support")
            .then_some(())
            .ok_or(c.to_string())
    })
    .await;
    let (s, q) = tb.get(CAROL, "/api/v1/teams/support/queue").await;
    assert_eq!(s, 200);
    assert!(q["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == conv.as_str()));
    let (s, v) = tb.transfer(ROOT, &conv, json!({"agent": "bob"})).await;
    assert_eq!(
        (s, err_code(&v)),
        (404, "not_found"),
        "no transfer to a disabled agent"
    );
    let (s, _) = patch(&tb, ROOT, "/api/v1/agents/bob", json!({"disabled": false})).await;
    assert_eq!(s, 200);
    assert_eq!(
        tb.get(BOB, "/api/v1/agents/me").await.0,
        200,
        "enabled again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_taken_off_a_team_loses_its_visibility_at_once() {
    let tb = TB::start().await;
    let queued = tb.open_conv(N1, &customer(), "waiting in support").await;
    assert_eq!(
        tb.get(ALICE, &format!("/api/v1/conversations/{queued}"))
            .await
            .0,
        200
    );
    let mut stream = Sse::connect(&tb.api, ALICE).await;
    let (s, v) = patch(
        &tb,
        ROOT,
        "/api/v1/agents/alice",
        json!({"teams": ["sales"]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = tb
        .get(ALICE, &format!("/api/v1/conversations/{queued}"))
        .await;
    assert_eq!((s, err_code(&v)), (404, "not_found"));
    assert!(tb
        .list(ALICE, "status=queued")
        .await
        .iter()
        .all(|c| c["team"] == "sales"));
    let (s, v) = tb.claim(ALICE, &queued).await;
    assert_eq!((s, err_code(&v)), (404, "not_found"));
    // Her open stream follows too: a new support conversation is not hers to hear of, the
    // sales one after it is.
    let support = tb.open_conv(N1, &customer(), "support again").await;
    let sales = tb.open_conv(N2, &customer(), "for sales").await;
    stream.wait_type("conversation.created", &sales).await;
    assert!(
        stream
            .seen
            .iter()
            .all(|e| e.data["conversation"]["id"] != support.as_str()),
        "{:?}",
        stream.seen
    );
    assert_eq!(
        tb.post(ALICE, "/api/v1/teams/sales/next", json!({}))
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_team_gets_its_actor_and_queue_at_once() {
    let tb = TB::start().await;
    let (s, v) = tb
        .post(
            ROOT,
            "/api/v1/teams",
            json!({"id": "vip", "name": "VIP", "settings": {"assignment": "round_robin"}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let conv = tb.open_conv(N1, &customer(), "hello").await;
    let (s, v) = tb.transfer(ROOT, &conv, json!({"team": "vip"})).await;
    assert_eq!((s, &v["team"]), (200, &json!("vip")), "{v}");
    let (s, q) = tb.get(ROOT, "/api/v1/teams/vip/queue").await;
    assert_eq!((s, &q["depth"]), (200, &json!(1)), "{q}");
    let (s, settings) = tb.get(ROOT, "/api/v1/teams/vip/settings").await;
    assert_eq!((s, &settings["assignment"]), (200, &json!("round_robin")));
    let token = create_agent(&tb, json!({"id": "vera", "teams": ["vip"]})).await;
    assert_eq!(tb.presence(&token, "online").await.0, 200);
    eventually("the new team to assign to its new member", WAIT, || async {
        let c = tb.conversation(&conv).await;
        (c["assignee"] == "vera").then_some(()).ok_or(c.to_string())
    })
    .await;
    let (s, v) = patch(
        &tb,
        ROOT,
        "/api/v1/teams/vip",
        json!({"name": "Very Important"}),
    )
    .await;
    assert_eq!((s, &v["name"]), (200, &json!("Very Important")), "{v}");
    let (_, teams) = tb.get(ROOT, "/api/v1/teams").await;
    let vip = teams["teams"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["id"] == "vip"))
        .unwrap_or_else(|| panic!("{teams}"));
    assert_eq!(vip["members"], json!(["vera"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_names_who_changed_what_newest_first() {
    let tb = TB::start().await;
    create_agent(&tb, json!({"id": "ann", "teams": ["support"]})).await;
    patch(
        &tb,
        ROOT,
        "/api/v1/agents/ann",
        json!({"max_concurrent": 9}),
    )
    .await;
    tb.post(ROOT, "/api/v1/agents/ann/token", json!({})).await;
    let page = audit(&tb, "?limit=2").await;
    let e = page["entries"].as_array().unwrap();
    assert_eq!(e.len(), 2, "{page}");
    assert_eq!(
        (&e[0]["action"], &e[0]["actor"], &e[0]["target"]),
        (&json!("agent.token_rotate"), &json!("root"), &json!("ann"))
    );
    assert_eq!(e[1]["action"], "agent.update");
    assert_eq!(e[1]["before"]["max_concurrent"], 5);
    assert_eq!(e[1]["after"]["max_concurrent"], 9);
    assert!(
        !page.to_string().contains("token\":"),
        "no token in the log: {page}"
    );
    // Following the cursor visits everything once, down to the config's seeding.
    let mut all = e.clone();
    let mut cursor = page["next_cursor"].clone();
    while let Some(c) = cursor.as_u64() {
        let p = audit(&tb, &format!("?limit=2&cursor={c}")).await;
        all.extend(p["entries"].as_array().unwrap().iter().cloned());
        cursor = p["next_cursor"].clone();
    }
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    let seeded = all.iter().filter(|e| e["actor"] == "config").count();
    assert_eq!(seeded, 7, "2 teams and 5 agents seeded: {all:?}");
    assert_eq!(all.len(), 10);
    let (s, v) = tb.get(CAROL, "/api/v1/audit").await;
    assert_eq!((s, err_code(&v)), (403, "forbidden"));

    // Team settings and routing rules are admin changes too; a refused one leaves no trace.
    let (s, v) = tb
        .put(
            ROOT,
            "/api/v1/teams/support/settings",
            json!({"assignment": "round_robin"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = tb
        .put(ROOT, "/api/v1/routing/rules", json!({"rules": []}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = tb
        .put(
            ROOT,
            "/api/v1/teams/support/settings",
            json!({"assignment": "fastest"}),
        )
        .await;
    assert_eq!(s, 400);
    let page = audit(&tb, "?limit=2").await;
    let e = page["entries"].as_array().unwrap();
    assert_eq!(
        (&e[0]["action"], &e[1]["action"]),
        (&json!("routing.rules"), &json!("team.settings"))
    );
    assert_eq!(e[0]["after"], json!([]));
    assert_eq!(e[1]["before"]["assignment"], "manual");
    assert_eq!(e[1]["after"]["assignment"], "round_robin");
}

/// Every file under `dir` holding `needle`.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("storage dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if std::fs::read(&path)
            .map(|b| b.windows(needle.len()).any(|w| w == needle))
            .unwrap_or(false)
        {
            found.push(path.display().to_string());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_tokens_and_the_audit_log_survive_a_restart() {
    let mut tb = TB::start().await;
    let nina = create_agent(&tb, json!({"id": "nina", "teams": ["support"]})).await;
    let (_, v) = tb.post(ROOT, "/api/v1/agents/nina/token", json!({})).await;
    let rotated = v["token"].as_str().unwrap().to_owned();
    tb.post(ROOT, "/api/v1/teams", json!({"id": "vip", "name": "VIP"}))
        .await;
    patch(&tb, ROOT, "/api/v1/agents/dave", json!({"disabled": true})).await;
    patch(
        &tb,
        ROOT,
        "/api/v1/agents/bob",
        json!({"teams": ["support", "vip"], "max_concurrent": 7}),
    )
    .await;
    let log = audit(&tb, "").await;
    let (_, teams) = tb.get(ROOT, "/api/v1/teams").await;

    // The config changes too, and is ignored: it seeded this store already. The broker stops
    // abruptly (as after a crash): every change was durable when it was answered.
    tb.cfg.extra =
        "\n[[agents]]\nid = \"late\"\ntoken = \"t-late\"\nteams = [\"support\"]\n".into();
    tb.crash_and_restart().await;

    assert_eq!(audit(&tb, "").await, log, "the audit log is durable");
    assert_eq!(
        tb.get(ROOT, "/api/v1/teams").await.1,
        teams,
        "teams and members"
    );
    assert_eq!(tb.get(&rotated, "/api/v1/agents/me").await.0, 200);
    assert_eq!(
        tb.get(&nina, "/api/v1/agents/me").await.0,
        401,
        "rotated out"
    );
    assert_eq!(
        tb.get(DAVE, "/api/v1/agents/me").await.0,
        401,
        "still disabled"
    );
    assert_eq!(
        tb.get("t-late", "/api/v1/agents/me").await.0,
        401,
        "not seeded"
    );
    let (_, me) = tb.get(BOB, "/api/v1/agents/me").await;
    assert_eq!(
        (&me["teams"], &me["max_concurrent"]),
        (&json!(["support", "vip"]), &json!(7))
    );
    assert_eq!(
        tb.get(ROOT, "/api/v1/teams/vip/queue").await.0,
        200,
        "the new team's queue"
    );

    // Tokens are on disk only as hashes: neither a seeded one nor a generated one appears.
    tb.shutdown().await;
    for token in [ALICE, rotated.as_str(), nina.as_str()] {
        let holding = files_holding(&tb.cfg.storage_path, token.as_bytes());
        assert!(holding.is_empty(), "{token} in {holding:?}");
    }
    assert!(
        !files_holding(&tb.cfg.storage_path, b"nina").is_empty(),
        "the scan reads the store"
    );
}
