//! `X-Hub-Signature-256` verification.
//!
//! The HMAC is computed over the raw request bytes exactly as received (Meta escapes non-ASCII as
//! `\uXXXX`; re-serialising would change the bytes), and compared in constant time so the answer's
//! timing leaks nothing about the expected value.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Lowercase hex HMAC-SHA256 of `body` with `secret`, as Meta sends it after `sha256=`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this arm cannot be taken.
        Err(_) => return String::new(),
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `header` (`sha256=<hex>`) is the valid signature of `body`.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(given) = hex::decode(sig) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    given.len() == expected.len() && bool::from(expected.as_slice().ct_eq(&given))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_own_signature_rejects_others() {
        let body = br#"{"text":"Gr\u00fc\u00dfe"}"#;
        let sig = format!("sha256={}", sign(b"secret", body));
        assert!(verify(b"secret", body, Some(&sig)));
        assert!(!verify(b"other", body, Some(&sig)));
        assert!(!verify(b"secret", b"{}", Some(&sig)));
        assert!(!verify(b"secret", body, None));
        assert!(!verify(b"secret", body, Some("sha256=zz")));
        assert!(!verify(b"secret", body, Some(&sig[7..])));
    }
}
