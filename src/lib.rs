//! Switchboard: a durable, single-owner broker between the WhatsApp Business (Cloud) API and a
//! business's agents.
//!
//! ```text
//! Meta ──webhook──► http::webhook (admission, size, signature, parse all)
//!                       │ ingest: group by conversation
//!                       ▼
//!        ConversationActor (one per live conversation; single writer of its state)
//!          │  claim / release / transfer / resolve / reply / note / status
//! agents ──┤◄── service (use cases, permissions) ◄── http::conversations, teams, agents; events
//!          ├──► AgentActor (presence, capacity)   TeamActor (priority queue, assignment policy)
//!          ├──► timers (SLA and reassignment deadlines → Tick)  admin (routing rules, team settings)
//!          ├──► store (RocksDB: typed CFs, atomic batches, group commit)
//!          ├──► outbox (per number: token bucket, retries; media uploaded first) ──► Graph API
//!          └──► media (durable fetch queue → Graph media endpoints → object_store, sha256-checked)
//! ```
//!
//! The agent console ([`console`]) is static assets served beside the API and a client of it.
//!
//! Supervision: conversation actors run on [`mailbox`]; a handler that panics is caught,
//! its actor retired and restarted from storage (its last durable state); agent and team actors
//! (ractor) run linked to a guardian ([`actors::guardian`]) that restarts one that fails and
//! rebuilds its state from storage. Agents and teams are stored and changed at run time by
//! admins ([`service::people`], the live roster every request authenticates against; the
//! config seeds an empty store only). The timer service is a
//! plain task owned by the broker; the optional agents' listener ([`http::lane`]) is a thread
//! with a runtime of its own, stopped with the main listener. Above the broker, a [`Supervisor`]
//! starts it again on its journal when storage keeps failing. The core modules (`domain`, `actors`, `store`, `outbox`,
//! `ingest`, `identity`, `admin`, `service`, `media`, `automation`) never depend on `http`, and [`domain`] depends on no other module: `config`
//! and `whatsapp` translate into its types; time comes from an injectable [`clock::Clock`].
//! Components take the narrow ports they use ([`outbox::GraphSender`], [`outbox::OutcomeSink`],
//! [`actors::ports`]), wired once in [`app`]; no two top-level modules import each other, even
//! through a third (tests/it/layering.rs checks it).

pub mod actors;
pub mod admin;
pub mod alloc;
pub mod app;
pub mod automation;
pub mod clock;
pub mod coexistence;
pub mod config;
pub mod console;
pub mod domain;
pub mod error;
pub mod events;
pub mod http;
pub mod identity;
pub mod ingest;
pub mod log_limit;
pub mod mailbox;
pub mod media;
pub mod messaging_limit;
pub mod metrics;
pub mod outbox;
pub mod service;
pub mod store;
pub mod supervisor;
pub mod templates;
pub mod whatsapp;

pub use app::Broker;
pub use config::Config;
pub use supervisor::Supervisor;
