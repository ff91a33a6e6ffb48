//! Fuzz target: the webhook parser, through the entry point `http::webhook` calls
//! ([`switchboard::whatsapp::webhook::parse`]) on a body whose signature checked out.
//!
//! Beyond "never panics", what the parser promises (see its module docs) is checked on every
//! input:
//! - a body serde_json reads as a JSON value is never refused, and one that is not JSON at all
//!   (not UTF-8, or not JSON's grammar) is never taken. Between the two lie bodies that are JSON
//!   but not a `serde_json::Value` (a lone surrogate escape, a number beyond `f64`): the fast
//!   path takes those when they are in a field it ignores, the lenient parser refuses them;
//!   either answer passes here;
//! - what it keeps verbatim (`other[].raw`) and each message's and status's `raw` is JSON;
//! - every status's callback data can be read without a panic (the ingest path does that for
//!   statuses of unknown wamids).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use switchboard::whatsapp::webhook;

fuzz_target!(|body: &[u8]| {
    let value = serde_json::from_slice::<serde_json::Value>(body).is_ok();
    let grammar = std::str::from_utf8(body)
        .is_ok_and(|text| serde_json::from_str::<IgnoredAny>(text).is_ok());
    let notification = match webhook::parse(body) {
        Ok(n) => n,
        Err(e) => {
            assert!(!value, "refused a JSON body: {e}");
            return;
        }
    };
    assert!(grammar, "accepted a body that is not JSON");
    let json = |s: &str| serde_json::from_str::<IgnoredAny>(s).is_ok();
    for m in &notification.messages {
        assert!(json(&m.raw), "message raw is not JSON: {}", m.raw);
    }
    for s in &notification.statuses {
        assert!(json(&s.raw), "status raw is not JSON: {}", s.raw);
        let _ = webhook::callback_message(s);
    }
    for o in &notification.other {
        assert!(json(&o.raw), "kept change is not JSON: {}", o.raw);
    }
});
