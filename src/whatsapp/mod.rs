//! Meta's formats: webhook signatures, webhook payloads, the Graph API client and its error codes.
//!
//! Nothing here knows about actors or HTTP servers; it turns Meta's bytes into typed values and
//! typed values into Meta's requests.

pub mod coexistence;
pub mod graph;
pub mod interactive;
pub mod media;
pub mod message_body;
pub mod signature;
mod typed_webhook;
pub mod webhook;
