//! Fuzz target: `X-Hub-Signature-256` verification ([`switchboard::whatsapp::signature`]) on
//! any secret, body and header value.
//!
//! Checked beyond "never panics": the broker's own signature of a body verifies (with the
//! whitespace a proxy may add around a header value), a header that verifies is exactly that
//! signature (hex case aside), and the signature of one secret does not verify under another.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::whatsapp::signature::{sign, verify};

fuzz_target!(|input: (Vec<u8>, Vec<u8>, Option<String>, Vec<u8>)| {
    let (secret, body, header, other_secret) = input;
    let expected = sign(&secret, &body);
    assert_eq!(expected.len(), 64, "not a SHA-256 HMAC in hex: {expected}");
    let own = format!("sha256={expected}");
    assert!(verify(&secret, &body, Some(&own)));
    assert!(verify(&secret, &body, Some(&format!(" {own}\t"))));
    assert!(!verify(&secret, &body, None));
    if verify(&secret, &body, header.as_deref()) {
        let given = header.as_deref().unwrap_or("").trim();
        assert!(
            given.eq_ignore_ascii_case(&own) && given.starts_with("sha256="),
            "verified a header that is not the signature: {given:?}"
        );
    }
    if sign(&other_secret, &body) != expected {
        assert!(!verify(&other_secret, &body, Some(&own)));
    }
});
