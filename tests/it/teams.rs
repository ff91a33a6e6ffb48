//! Team queues: `GET /api/v1/teams/{id}/queue` and `POST /api/v1/teams/{id}/next`.

use std::collections::HashSet;

use crate::common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_hands_out_the_oldest_waiting_conversation_then_204() {
    let tb = TB::start().await;
    let first = tb.open_conv(N1, &customer(), "first").await;
    let second = tb.open_conv(N1, &customer(), "second").await;
    let (code, conv) = tb.post(BOB, "/api/v1/teams/support/next", json!({})).await;
    assert_eq!(code, 200, "{conv}");
    assert_eq!(conv["id"], first.as_str(), "oldest first");
    assert_eq!(conv["assignee"], "bob");
    assert_eq!(conv["status"], "assigned");
    let (code, conv) = tb.post(BOB, "/api/v1/teams/support/next", json!({})).await;
    assert_eq!(code, 200);
    assert_eq!(conv["id"], second.as_str());
    let (code, _) = tb.post(BOB, "/api/v1/teams/support/next", json!({})).await;
    assert_eq!(code, 204, "nothing waits any more");
    let (code, body) = tb.post(DAVE, "/api/v1/teams/support/next", json!({})).await;
    assert_eq!(code, 403, "not a member of support: {body}");
    let (code, body) = tb.post(BOB, "/api/v1/teams/nope/next", json!({})).await;
    assert_eq!((code, err_code(&body)), (404, "not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_next_never_hands_one_conversation_to_two_callers() {
    let tb = TB::start().await;
    let mut queued = HashSet::new();
    for i in 0..6 {
        queued.insert(tb.open_conv(N1, &customer(), &format!("m{i}")).await);
    }
    // bob (max 5), carol (supervisor, max 5) and root (admin, max 5) pull 4 times each: 12 pulls
    // for 6 conversations.
    let mut pulls = Vec::new();
    for token in [BOB, CAROL, ROOT] {
        for _ in 0..4 {
            let api = tb.api.clone();
            pulls.push(tokio::spawn(async move {
                api.post(token, "/api/v1/teams/support/next", json!({}))
                    .await
            }));
        }
    }
    let mut handed = Vec::new();
    for p in pulls {
        let (code, body) = p.await.expect("task");
        match code {
            200 => handed.push(body["id"].as_str().unwrap_or_default().to_string()),
            204 => {}
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let unique: HashSet<_> = handed.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        handed.len(),
        "a conversation went to two callers: {handed:?}"
    );
    assert_eq!(
        unique, queued,
        "every waiting conversation was handed out once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_at_capacity_leaves_the_conversation_waiting() {
    let tb = TB::start().await;
    let a = tb.open_conv(N1, &customer(), "a").await;
    let b = tb.open_conv(N1, &customer(), "b").await;
    let c = tb.open_conv(N1, &customer(), "c").await;
    tb.must_claim(ALICE, &a).await;
    tb.must_claim(ALICE, &b).await;
    let (code, body) = tb
        .post(ALICE, "/api/v1/teams/support/next", json!({}))
        .await;
    assert_eq!((code, err_code(&body)), (409, "capacity_reached"));
    let (code, q) = tb.get(CAROL, "/api/v1/teams/support/queue").await;
    assert_eq!(code, 200, "{q}");
    assert_eq!(q["depth"], 1);
    assert_eq!(
        q["conversations"][0]["id"],
        c.as_str(),
        "still waiting: {q}"
    );
    assert!(q["oldest_wait_seconds"].as_i64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_view_is_for_supervisors_and_admins() {
    let tb = TB::start().await;
    let c = tb.open_conv(N1, &customer(), "x").await;
    let (code, body) = tb.get(BOB, "/api/v1/teams/support/queue").await;
    assert_eq!((code, err_code(&body)), (403, "forbidden"));
    for token in [CAROL, ROOT] {
        let (code, q) = tb.get(token, "/api/v1/teams/support/queue").await;
        assert_eq!(code, 200);
        assert_eq!(q["depth"], 1);
        assert_eq!(q["conversations"][0]["id"], c.as_str());
    }
    tb.must_claim(BOB, &c).await;
    let q = eventually("claimed conversation leaves the queue", WAIT, || async {
        let (_, q) = tb.get(CAROL, "/api/v1/teams/support/queue").await;
        if q["depth"] == 0 {
            Ok(q)
        } else {
            Err(q.to_string())
        }
    })
    .await;
    assert_eq!(q["conversations"].as_array().map(Vec::len), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_or_agent_actor_that_panics_is_restarted_from_storage() {
    use switchboard::actors::{AgentMsg, TeamMsg};
    let tb = TB::start().await;
    let ctx = tb.broker.as_ref().unwrap().ctx().clone();
    let waiting = tb.open_conv(N1, &customer(), "still waiting?").await;
    let owned = tb.open_conv(N1, &customer(), "mine").await;
    tb.must_claim(BOB, &owned).await;
    assert_eq!(tb.presence(BOB, "online").await.0, 200);

    let team = ctx.team("support").unwrap();
    team.cast(TeamMsg::Crash).unwrap();
    let agent = ctx.agent("bob").unwrap();
    agent.cast(AgentMsg::Crash).unwrap();

    // New actors take the old ones' places, with what storage says: the team's queue ...
    let q = eventually("the team actor to be back with its queue", WAIT, || async {
        let now = ctx.team("support").unwrap();
        if now.get_id() == team.get_id() {
            return Err("not restarted yet".to_string());
        }
        match tb.get(CAROL, "/api/v1/teams/support/queue").await {
            (200, q) if q["conversations"].as_array().is_some_and(|c| !c.is_empty()) => Ok(q),
            (s, q) => Err(format!("{s} {q}")),
        }
    })
    .await;
    let ids: Vec<_> = q["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, vec![waiting.clone()], "{q}");
    // ... and the agent's load and presence.
    eventually("the agent actor to be back", WAIT, || async {
        if ctx.agent("bob").unwrap().get_id() == agent.get_id() {
            return Err("not restarted yet".to_string());
        }
        match tb.get(BOB, "/api/v1/agents/me").await {
            (200, me)
                if me["open_conversations"] == json!(1) && me["status"] == json!("online") =>
            {
                Ok(())
            }
            (s, me) => Err(format!("{s} {me}")),
        }
    })
    .await;
    // The restarted team serves `next` as before.
    let (s, c) = tb
        .post(ALICE, "/api/v1/teams/support/next", json!({}))
        .await;
    assert_eq!((s, c["id"].as_str()), (200, Some(waiting.as_str())), "{c}");
    let text = tb.metrics().await;
    for kind in ["team", "agent"] {
        let n = metric_sum(
            &text,
            "switchboard_supervised_restarts_total",
            &[&format!("kind=\"{kind}\"")],
        );
        assert!(n.unwrap_or(0.0) >= 1.0, "{kind}: {n:?}");
    }
}
