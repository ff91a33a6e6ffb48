//! Conversation actors end to end, in process: supervision (a panicking handler restarts from
//! durable state) and idle passivation (state survives it).

use std::time::Duration;

use crate::actors::ConversationMsg;
use crate::config::Config;
use crate::domain::Role;
use crate::domain::{conversation_id, Caller, ConversationStatus};
use crate::Broker;

fn config(dir: &std::path::Path, idle_ms: u64) -> Config {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
path = "{}"
[whatsapp]
app_secret = "s"
verify_token = "v"
access_token = "a"
waba_id = "w"
graph_api_base = "http://127.0.0.1:9"
[conversations]
idle_timeout_ms = {idle_ms}
[[numbers]]
phone_number_id = "111"
default_team = "support"
[[teams]]
id = "support"
[[agents]]
id = "alice"
token = "t"
teams = ["support"]
"#,
        dir.display()
    );
    Config::from_toml_str(&text).expect("test config")
}

fn webhook(customer: &str, wamid: &str) -> Vec<u8> {
    format!(
        r#"{{"entry":[{{"changes":[{{"field":"messages","value":{{"metadata":{{"phone_number_id":"111"}},"messages":[{{"from":"{customer}","id":"{wamid}","timestamp":"{}","type":"text","text":{{"body":"hi"}}}}]}}}}]}}]}}"#,
        chrono::Utc::now().timestamp()
    )
    .into_bytes()
}

/// Parses and ingests a one-message webhook from `customer`, as the webhook handler would.
async fn deliver(
    ctx: &std::sync::Arc<crate::actors::Ctx>,
    customer: &str,
    wamid: &str,
) -> Result<crate::ingest::IngestReport, crate::error::Error> {
    let n = crate::whatsapp::webhook::parse(&webhook(customer, wamid)).expect("parse");
    crate::ingest::ingest(ctx, n).await
}

async fn eventually<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn alice() -> Caller {
    Caller {
        id: "alice".into(),
        role: Role::Agent,
        teams: vec!["support".into()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_actor_restarts_from_durable_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(config(dir.path(), 60_000))
        .await
        .expect("start");
    let ctx = broker.ctx().clone();
    deliver(&ctx, "491", "w1").await.expect("ingest");
    let id = conversation_id("111", "491");
    let first = ctx
        .conversations
        .get(id.as_str())
        .map(|r| r.clone())
        .expect("live actor");
    assert!(first.send(ConversationMsg::Crash).is_ok());
    eventually("restart", || {
        ctx.conversations
            .get(id.as_str())
            .is_some_and(|r| !std::sync::Arc::ptr_eq(&r, &first))
    })
    .await;
    assert!(first.is_retired());
    let conv = ctx
        .ask(&id, None, |reply| ConversationMsg::Claim {
            caller: alice(),
            reply,
        })
        .await
        .expect("claim after restart");
    assert_eq!(conv.status, ConversationStatus::Assigned);
    assert_eq!(conv.next_seq, 1, "the stored message survived the restart");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actor_passivates_and_reactivates_with_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(config(dir.path(), 50)).await.expect("start");
    let ctx = broker.ctx().clone();
    deliver(&ctx, "492", "w2").await.expect("ingest");
    let id = conversation_id("111", "492");
    ctx.ask(&id, None, |reply| ConversationMsg::Claim {
        caller: alice(),
        reply,
    })
    .await
    .expect("claim");
    eventually("passivation", || {
        ctx.conversations.get(id.as_str()).is_none()
    })
    .await;
    // Redelivery after passivation is still recognised, and ownership is intact.
    let report = deliver(&ctx, "492", "w2").await.expect("ingest again");
    assert_eq!((report.stored, report.duplicates), (0, 1));
    let conv = ctx
        .ask(&id, None, |reply| ConversationMsg::Claim {
            caller: alice(),
            reply,
        })
        .await
        .expect("claim by owner is a no-op");
    assert_eq!(conv.assignee.as_deref(), Some("alice"));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_from_a_queue_take_only_conversations_still_waiting() {
    use crate::domain::DomainError;
    use crate::error::Error;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(config(dir.path(), 60_000))
        .await
        .expect("start");
    let ctx = broker.ctx().clone();
    deliver(&ctx, "493", "w3").await.expect("ingest");
    let id = conversation_id("111", "493");
    ctx.ask(&id, None, |reply| ConversationMsg::Claim {
        caller: alice(),
        reply,
    })
    .await
    .expect("claim");
    // Assigned: a queue's hand-out learns who has it.
    let queued = ctx
        .ask(&id, None, |reply| ConversationMsg::ClaimQueued {
            caller: alice(),
            reply,
        })
        .await;
    assert!(
        matches!(
            queued,
            Err(Error::Domain(DomainError::AlreadyAssigned { ref assignee })) if assignee == "alice"
        ),
        "{queued:?}"
    );
    ctx.ask(&id, None, |reply| ConversationMsg::Resolve {
        caller: alice(),
        reply,
    })
    .await
    .expect("resolve");
    // Resolved (the queue may not know yet): neither `next` nor automatic assignment takes it.
    let queued = ctx
        .ask(&id, None, |reply| ConversationMsg::ClaimQueued {
            caller: alice(),
            reply,
        })
        .await;
    assert!(
        matches!(queued, Err(Error::Domain(DomainError::NotWaiting))),
        "{queued:?}"
    );
    let auto = ctx
        .ask(&id, None, |reply| ConversationMsg::Assign {
            agent: alice(),
            reply,
        })
        .await;
    assert!(
        matches!(auto, Err(Error::Domain(DomainError::NotWaiting))),
        "{auto:?}"
    );
    // A direct claim of a resolved conversation is a follow-up, and still allowed.
    let conv = ctx
        .ask(&id, None, |reply| ConversationMsg::Claim {
            caller: alice(),
            reply,
        })
        .await
        .expect("direct claim");
    assert_eq!(conv.status, ConversationStatus::Assigned);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_inbound_messages_rewrite_the_record_at_least_every_max_unrecorded() {
    use crate::store::MAX_UNRECORDED;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(config(dir.path(), 60_000))
        .await
        .expect("start");
    let ctx = broker.ctx().clone();
    let id = conversation_id("111", "494");
    let total = MAX_UNRECORDED + 6;
    let mut most = 0;
    for i in 0..total {
        deliver(&ctx, "494", &format!("w4-{i}"))
            .await
            .expect("ingest");
        // What any reader of the record sees: every message so far, however many are unrecorded.
        let loaded = ctx
            .store
            .load_conversation(&id, 0)
            .await
            .expect("load")
            .expect("stored");
        assert_eq!(loaded.conv.next_seq, i + 1);
        assert!(loaded.unrecorded <= MAX_UNRECORDED, "{}", loaded.unrecorded);
        most = most.max(loaded.unrecorded);
    }
    assert_eq!(
        most, MAX_UNRECORDED,
        "plain messages skip the record, up to the bound"
    );
    broker.shutdown().await;

    // After a restart the sequence goes on from the last message, not from the record.
    let broker = Broker::start(config(dir.path(), 60_000))
        .await
        .expect("restart");
    let ctx = broker.ctx().clone();
    let report = deliver(&ctx, "494", "w4-last")
        .await
        .expect("ingest after restart");
    assert_eq!(report.stored, 1);
    let messages = ctx.store.messages(&id).await.expect("messages");
    let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (0..=total).collect::<Vec<_>>());
    assert_eq!(messages[total as usize].wamid.as_deref(), Some("w4-last"));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_actor_tells_redeliveries_without_reading_storage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(config(dir.path(), 60_000))
        .await
        .expect("start");
    let ctx = broker.ctx().clone();
    for wamid in ["w5a", "w5b"] {
        deliver(&ctx, "495", wamid).await.expect("ingest");
    }
    // With storage closed, only the actor's own set can answer for a redelivery.
    ctx.store.close().await;
    let report = deliver(&ctx, "495", "w5a")
        .await
        .expect("a redelivery needs no storage");
    assert_eq!((report.stored, report.duplicates), (0, 1));
    // A new message still has to be stored, and cannot be now.
    assert!(deliver(&ctx, "495", "w5c").await.is_err());
    broker.shutdown().await;
}

/// A conversation found free by a read taken before an actor left memory is read again at
/// activation, never started from its seed: here the conversation was stored (and passivated)
/// after the epoch was taken, and the second message must follow the first, not overwrite it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_fresh_hint_reads_storage_and_keeps_what_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(config(dir.path(), 60_000))
        .await
        .expect("start");
    let ctx = broker.ctx().clone();
    let epoch = ctx.removals();
    deliver(&ctx, "493", "w3").await.expect("ingest");
    let id = conversation_id("111", "493");
    assert!(ctx.passivate(&id), "the actor passivates");
    assert_ne!(ctx.removals(), epoch, "leaving memory moves the epoch");
    let n = crate::whatsapp::webhook::parse(&webhook("493", "w4")).expect("parse");
    let msg = n.messages.into_iter().next().expect("one message");
    let seed = crate::domain::Conversation::for_customer(
        id.clone(),
        "111",
        &msg.ids,
        "support",
        ctx.now(),
    );
    let ack = ctx
        .ask_fresh(&id, Some(&seed), Some(epoch), |reply| {
            ConversationMsg::Inbound {
                messages: vec![msg.clone()],
                reply,
            }
        })
        .await
        .expect("inbound");
    assert_eq!(ack.stored, 1);
    let stored = ctx.store.messages(&id).await.expect("messages");
    let wamids: Vec<_> = stored.iter().filter_map(|m| m.wamid.clone()).collect();
    assert_eq!(wamids, ["w3", "w4"], "both messages kept, in order");
    broker.shutdown().await;
}
