//! Shared harness for Switchboard's black-box integration tests.
//!
//! Everything talks to 127.0.0.1 only: the broker under test (in-process or the real binary) and
//! a `FakeGraph` that stands in for Meta's Graph API. The tests import the whole harness with
//! `use crate::common::*`; each part lives in a module of its own:
//!
//! - `config`: the standard configuration (numbers, agents, tokens) and its TOML builder `Cfg`;
//! - `util`: unique ids, signatures, `eventually`;
//! - `webhook`: Meta notification payload builders;
//! - `api`: the HTTP client for the API, webhook and /metrics, and `metric_sum`;
//! - `fake_graph`: the scripted Graph API;
//! - `broker`: `TB`, a broker started in-process, and common starting conversations;
//! - `sse`: the event-stream client;
//! - `process`: the broker as a real process (`BinProc`);
//! - `alone`: running one test in a process of its own, for tests that read process-wide metrics.

mod alone;
mod api;
mod broker;
mod config;
mod fake_graph;
mod process;
mod sse;
mod util;
mod webhook;

pub use alone::*;
pub use api::*;
pub use broker::*;
pub use config::*;
pub use fake_graph::*;
pub use process::*;
pub use sse::*;
pub use util::*;
pub use webhook::*;
