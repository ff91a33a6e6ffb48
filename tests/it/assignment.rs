//! Automatic assignment for teams with `assignment = "least_loaded" | "round_robin"`: only online
//! agents below `max_concurrent`, the backlog drains when an agent comes online or frees a slot,
//! and `manual` teams (the default) assign nothing.

use std::collections::HashMap;

use crate::common::*;
use serde_json::{json, Value};

const N3: &str = "306540352242944";
const ANN: &str = "t-ann";
const BEN: &str = "t-ben";

/// The `desk` team (with `policy`), its number N3 and its agents ann and ben.
fn desk_toml(policy: &str) -> String {
    format!(
        r#"
[[numbers]]
phone_number_id = "{N3}"
default_team = "desk"

[[teams]]
id = "desk"
name = "Desk"
assignment = "{policy}"

[[agents]]
id = "ann"
token = "{ANN}"
teams = ["desk"]
max_concurrent = 2

[[agents]]
id = "ben"
token = "{BEN}"
teams = ["desk"]
max_concurrent = 3
"#
    )
}

async fn desk(policy: &str) -> TB {
    let extra = desk_toml(policy);
    TB::start_with(move |c| c.extra.push_str(&extra)).await
}

/// Waits until every conversation is assigned; returns conversation id → assignee.
async fn all_assigned(tb: &Api, ids: &[String]) -> HashMap<String, String> {
    eventually("conversations to be assigned", WAIT, || async {
        let mut owners = HashMap::new();
        for id in ids {
            let c = tb.conversation(id).await;
            match c["assignee"].as_str() {
                Some(a) if c["status"] == "assigned" => {
                    owners.insert(id.clone(), a.to_string());
                }
                _ => return Err(format!("{id} not assigned yet: {c}")),
            }
        }
        Ok(owners)
    })
    .await
}

fn load(owners: &HashMap<String, String>, agent: &str) -> usize {
    owners.values().filter(|a| a.as_str() == agent).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_loaded_spreads_conversations_over_online_agents() {
    let tb = desk("least_loaded").await;
    assert_eq!(tb.presence(ANN, "online").await.0, 200);
    assert_eq!(tb.presence(BEN, "online").await.0, 200);
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(tb.open_conv(N3, &customer(), &format!("hi {i}")).await);
    }
    let owners = all_assigned(&tb, &ids).await;
    assert_eq!(
        (load(&owners, "ann"), load(&owners, "ben")),
        (2, 2),
        "{owners:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_takes_turns_and_skips_full_agents() {
    let tb = desk("round_robin").await;
    tb.presence(ANN, "online").await;
    tb.presence(BEN, "online").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(tb.open_conv(N3, &customer(), &format!("hi {i}")).await);
    }
    let owners = all_assigned(&tb, &ids).await;
    // ann holds at most 2, so ben takes the rest.
    assert_eq!(
        (load(&owners, "ann"), load(&owners, "ben")),
        (2, 3),
        "{owners:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_agents_get_nothing_and_the_backlog_drains_when_one_comes_online() {
    let tb = desk("least_loaded").await;
    let a = tb.open_conv(N3, &customer(), "first").await;
    let b = tb.open_conv(N3, &customer(), "second").await;
    // Nobody is online: both wait.
    for id in [&a, &b] {
        let c = tb.conversation(id).await;
        assert_eq!(c["status"], "queued", "{c}");
        assert_eq!(c["assignee"], Value::Null);
    }
    tb.presence(ANN, "away").await;
    let c = tb.conversation(&a).await;
    assert_eq!(c["status"], "queued", "away is not online: {c}");
    tb.presence(BEN, "online").await;
    let owners = all_assigned(&tb, &[a, b]).await;
    assert!(owners.values().all(|o| o == "ben"), "{owners:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_is_respected_and_a_freed_slot_takes_the_next_waiting() {
    let tb = desk("least_loaded").await;
    tb.presence(ANN, "online").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(tb.open_conv(N3, &customer(), &format!("hi {i}")).await);
    }
    let owners = all_assigned(&tb, &ids[..2]).await;
    assert_eq!(load(&owners, "ann"), 2);
    let third = tb.conversation(&ids[2]).await;
    assert_eq!(third["status"], "queued", "ann is full (max 2): {third}");
    let (code, body) = tb
        .post(
            ANN,
            &format!("/api/v1/conversations/{}/resolve", ids[0]),
            json!({}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let owners = all_assigned(&tb, &ids[2..]).await;
    assert_eq!(owners[&ids[2]], "ann");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_teams_assign_nothing_even_to_online_agents() {
    let tb = TB::start().await;
    tb.presence(BOB, "online").await;
    let id = tb.open_conv(N1, &customer(), "hello").await;
    // Pull proves the conversation was still waiting (a manual team never assigned it).
    let (code, conv) = tb.post(BOB, "/api/v1/teams/support/next", json!({})).await;
    assert_eq!(code, 200, "{conv}");
    assert_eq!(conv["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignee_going_offline_hands_the_conversation_to_another_agent() {
    let tb = desk("least_loaded").await;
    tb.presence(ANN, "online").await;
    let id = tb.open_conv(N3, &customer(), "help").await;
    let owners = all_assigned(&tb, std::slice::from_ref(&id)).await;
    assert_eq!(owners[&id], "ann");
    tb.presence(BEN, "online").await;
    tb.presence(ANN, "offline").await;
    let c = eventually("reassignment to ben", WAIT, || async {
        let c = tb.conversation(&id).await;
        if c["assignee"] == "ben" {
            Ok(c)
        } else {
            Err(c.to_string())
        }
    })
    .await;
    let note = c["messages"]
        .as_array()
        .and_then(|ms| {
            ms.iter()
                .find(|m| m["direction"] == "note" && m["author"] == "system")
        })
        .cloned()
        .unwrap_or(Value::Null);
    assert!(
        note["text"]
            .as_str()
            .is_some_and(|t| t.contains("ann") && t.contains("offline")),
        "the reassignment and its reason are recorded: {c}"
    );
    // ann's slot was freed: she can take work again once back online.
    let (_, me) = tb.get(ANN, "/api/v1/agents/me").await;
    assert_eq!(me["open_conversations"], 0, "{me}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_taken_from_the_only_agent_goes_back_to_her_when_she_returns() {
    let tb = desk("least_loaded").await;
    tb.presence(ANN, "online").await;
    let id = tb.open_conv(N3, &customer(), "help").await;
    let owners = all_assigned(&tb, std::slice::from_ref(&id)).await;
    assert_eq!(owners[&id], "ann");
    tb.presence(ANN, "offline").await;
    eventually("hand-back to the queue", WAIT, || async {
        let c = tb.conversation(&id).await;
        if c["status"] == "queued" {
            Ok(())
        } else {
            Err(c.to_string())
        }
    })
    .await;
    // Nobody else is online: back online, ann is the only one who can take it.
    tb.presence(ANN, "online").await;
    let owners = all_assigned(&tb, std::slice::from_ref(&id)).await;
    assert_eq!(owners[&id], "ann");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_teams_keep_the_owner_when_they_go_offline() {
    let tb = TB::start().await;
    let id = tb.open_conv(N1, &customer(), "hello").await;
    tb.presence(BOB, "online").await;
    tb.must_claim(BOB, &id).await;
    tb.presence(BOB, "offline").await;
    // The hand-back runs in the background; for a manual team it must leave the owner alone, and
    // ownership still works for bob afterwards.
    let (code, _) = tb.note(BOB, &id, "still mine").await;
    assert_eq!(code, 201);
    let c = tb.conversation(&id).await;
    assert_eq!(c["assignee"], "bob", "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_an_auto_assigning_team_follows_that_teams_policy() {
    let tb = desk("least_loaded").await;
    tb.presence(BEN, "online").await;
    let id = tb.open_conv(N1, &customer(), "I need the desk").await;
    tb.must_claim(BOB, &id).await;
    let (code, body) = tb
        .transfer(
            BOB,
            &id,
            json!({"team": "desk", "note": "billing question"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let owners = all_assigned(&tb, std::slice::from_ref(&id)).await;
    assert_eq!(owners[&id], "ben");
    let c = tb.conversation(&id).await;
    assert_eq!(c["team"], "desk");
    let texts: Vec<&str> = c["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(
        texts,
        vec!["I need the desk", "billing question"],
        "history kept: {c}"
    );
}

/// Conversations arrive while an agent goes offline: whatever the interleaving, the offline
/// agent ends up owning nothing, nobody exceeds max_concurrent, and the rest waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_going_offline_during_assignment_ends_up_owning_nothing() {
    for _ in 0..3 {
        let tb = desk("round_robin").await;
        tb.presence(ANN, "online").await;
        tb.presence(BEN, "online").await;
        let customers: Vec<String> = (0..5).map(|_| customer()).collect();
        let sends = customers
            .iter()
            .map(|c| tb.send_text(N3, c, "hello"))
            .collect::<Vec<_>>();
        let (_, (code, _)) = tokio::join!(
            futures_util::future::join_all(sends),
            tb.presence(ANN, "offline")
        );
        assert_eq!(code, 200);
        let mut ids = Vec::new();
        for c in &customers {
            ids.push(tb.conv_id(N3, c).await);
        }
        // ben (max 3) ends with three; ann with none; two wait.
        let state = eventually("assignments to settle", WAIT, || async {
            let mut owners = HashMap::new();
            let mut queued = 0;
            for id in &ids {
                let c = tb.conversation(id).await;
                match (c["status"].as_str(), c["assignee"].as_str()) {
                    (Some("assigned"), Some(a)) => {
                        owners.insert(id.clone(), a.to_string());
                    }
                    (Some("queued"), None) => queued += 1,
                    other => return Err(format!("{id}: {other:?}")),
                }
            }
            if load(&owners, "ann") == 0 && load(&owners, "ben") == 3 && queued == 2 {
                Ok(owners)
            } else {
                Err(format!("owners {owners:?}, queued {queued}"))
            }
        })
        .await;
        assert_eq!(state.len(), 3);
        let (_, me) = tb.get(ANN, "/api/v1/agents/me").await;
        assert_eq!(me["open_conversations"], 0, "{me}");
    }
}

/// Automatic assignment and manual claims race on the same conversations: each ends with exactly
/// one owner and the agents' loads agree with what they own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_assignment_never_races_a_manual_claim_into_two_owners() {
    let tb = desk("least_loaded").await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(tb.open_conv(N3, &customer(), &format!("hi {i}")).await);
    }
    // ben claims by hand while ann coming online starts automatic assignment of the backlog.
    let claims = ids.iter().map(|id| tb.claim(BEN, id)).collect::<Vec<_>>();
    let (results, _) = tokio::join!(
        futures_util::future::join_all(claims),
        tb.presence(ANN, "online")
    );
    let ben_won = results.iter().filter(|(code, _)| *code == 200).count();
    for (code, body) in &results {
        assert!(
            *code == 200
                || err_code(body) == "already_assigned"
                || err_code(body) == "capacity_reached",
            "{code} {body}"
        );
    }
    // ben (max 3) wins at least two, so ann (max 2) can always take the rest.
    let owners = all_assigned(&tb, &ids).await;
    assert_eq!(load(&owners, "ben"), ben_won, "{owners:?}");
    assert!(
        load(&owners, "ann") <= 2,
        "ann's max_concurrent is 2: {owners:?}"
    );
    for (token, agent) in [(ANN, "ann"), (BEN, "ben")] {
        let (_, me) = tb.get(token, "/api/v1/agents/me").await;
        assert_eq!(me["open_conversations"], load(&owners, agent), "{me}");
    }
}

/// `switchboard_claims_total` counts what agents ask for; a team handing a conversation to an
/// agent on its own is not a claim. (The real binary, so its counters are this broker's alone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_assignments_are_not_counted_as_claims() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cfg = Cfg::new(&dir.path().join("db"), "http://127.0.0.1:9/v25.0");
    cfg.listen = format!("127.0.0.1:{port}");
    cfg.extra.push_str(&desk_toml("least_loaded"));
    let path = dir.path().join("desk.toml");
    std::fs::write(&path, cfg.toml()).unwrap();
    let p = BinProc::spawn(&path, port, &dir.path().join("log.txt")).await;
    let claims = || async {
        metric_sum(&p.api.metrics().await, "switchboard_claims_total", &[]).unwrap_or(0.0)
    };

    assert_eq!(p.api.presence(ANN, "online").await.0, 200);
    let id = p.api.open_conv(N3, &customer(), "hello").await;
    let owners = all_assigned(&p.api, std::slice::from_ref(&id)).await;
    assert_eq!(owners[&id], "ann");
    assert_eq!(
        claims().await,
        0.0,
        "an automatic assignment counted as a claim"
    );
    let text = p.api.metrics().await;
    assert_eq!(
        metric_sum(&text, "switchboard_assignments_total", &[]),
        Some(1.0),
        "{text}"
    );

    // An agent's claim is counted, whatever its outcome.
    assert_eq!(p.api.claim(BEN, &id).await.0, 409);
    assert_eq!(claims().await, 1.0);
}
