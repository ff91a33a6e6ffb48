//! Switchboard: a durable, single-owner broker between the WhatsApp Business (Cloud) API and a
//! business's agents.
//!
//! ```text
//! Meta ──webhook──► http::webhook (admission, size, signature, parse all)
//!                       │ ingest: group by conversation
//!                       ▼
//!        ConversationActor (one per live conversation; single writer of its state)
//!          │  claim / release / transfer / resolve / reply / note / status
//! agents ──┤◄── http::conversations, http::agents, http::events (SSE)
//!          ├──► AgentActor (presence, capacity)   TeamActor (queue)
//!          ├──► store (RocksDB: typed CFs, atomic batches, group commit)
//!          └──► outbox (per number: token bucket, retries) ──► Graph API
//! ```
//!
//! Supervision tree: the [`actors::supervisor::ConversationSupervisor`] is the parent of every
//! conversation actor and restarts a failed one from storage; agent and team actors are
//! top-level and only fail if their mailbox owner (the broker) stops them. The core modules
//! (`domain`, `actors`, `store`, `outbox`, `ingest`) never depend on `http`.

pub mod actors;
pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod outbox;
pub mod store;
pub mod whatsapp;

pub use app::Broker;
pub use config::Config;
