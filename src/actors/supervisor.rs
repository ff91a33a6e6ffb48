//! Parent of every conversation actor.
//!
//! It keeps the registry truthful when an actor ends (passivation or failure) and restarts an
//! actor that panicked from its last durable state — the state it would have had after a crash of
//! the whole process — so one bad message cannot take the broker down or leave a conversation
//! without its writer. Each restart is counted in `switchboard_actor_restarts_total`.

use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::Ctx;
use crate::metrics as m;

pub struct ConversationSupervisor {
    pub ctx: Arc<Ctx>,
}

impl ConversationSupervisor {
    /// Removes a finished actor from the registry; returns its conversation id if it was live.
    fn forget(&self, cell: &ActorCell) -> Option<String> {
        let (_, id) = self.ctx.actor_ids.remove(&cell.get_id())?;
        self.ctx.forget(&id, cell.get_id());
        metrics::gauge!(m::LIVE_ACTORS).decrement(1.0);
        Some(id)
    }
}

impl Actor for ConversationSupervisor {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                self.forget(&cell);
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(id) = self.forget(&cell) {
                    metrics::counter!(m::ACTOR_RESTARTS).increment(1);
                    tracing::error!(conversation = %id, error = %err, "conversation actor failed; restarting from storage");
                    if let Err(e) = self.ctx.activate(&id, None).await {
                        tracing::error!(conversation = %id, error = %e, "restart failed; next command re-activates");
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::actors::ConversationMsg;
    use crate::config::{Config, Role};
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
        let n = crate::whatsapp::webhook::parse(&webhook("491", "w1")).expect("parse");
        crate::ingest::ingest(&ctx, n).await.expect("ingest");
        let id = conversation_id("111", "491");
        let first = ctx
            .conversations
            .get(&id)
            .map(|r| r.clone())
            .expect("live actor");
        let _ = first.cast(ConversationMsg::Crash);
        eventually("restart", || {
            ctx.conversations
                .get(&id)
                .is_some_and(|r| r.get_id() != first.get_id())
        })
        .await;
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
        let n = crate::whatsapp::webhook::parse(&webhook("492", "w2")).expect("parse");
        crate::ingest::ingest(&ctx, n).await.expect("ingest");
        let id = conversation_id("111", "492");
        ctx.ask(&id, None, |reply| ConversationMsg::Claim {
            caller: alice(),
            reply,
        })
        .await
        .expect("claim");
        eventually("passivation", || ctx.conversations.get(&id).is_none()).await;
        // Redelivery after passivation is still recognised, and ownership is intact.
        let n = crate::whatsapp::webhook::parse(&webhook("492", "w2")).expect("parse");
        let report = crate::ingest::ingest(&ctx, n).await.expect("ingest again");
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
}
