//! Meta's SHA-256 of a media, read in whichever form it comes.
//!
//! Meta writes the hash differently in different places: the webhook's `image.sha256` (and
//! the other media objects') is base64 of the 32-byte digest (e.g. the fixture's
//! `SfInY0gGKTsJlUWbwxC1k+FAD0FZHvzwfpvO0zX0GUI=`), while `GET /{media-id}` documents a plain
//! `<HASH>` that is hex in practice. Both are accepted (hex, standard or URL-safe base64, with
//! or without padding); anything that is not 32 bytes in one of them does not verify.

use base64::Engine;

/// The digest `text` names, if it is one in a form Meta uses.
pub fn decode(text: &str) -> Option<[u8; 32]> {
    let t = text.trim();
    if t.len() == 64 {
        if let Ok(b) = hex::decode(t) {
            return b.try_into().ok();
        }
    }
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(t).ok())
        .and_then(|b| b.try_into().ok())
}

/// Whether every hash given matches `digest` (None when none was given: nothing to check).
pub fn matches<'a>(digest: &[u8; 32], given: impl IntoIterator<Item = &'a str>) -> Option<bool> {
    let mut any = false;
    for g in given {
        any = true;
        if decode(g).as_ref() != Some(digest) {
            return Some(false);
        }
    }
    any.then_some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn hex_and_base64_forms_decode_to_the_same_digest() {
        let d: [u8; 32] = Sha256::digest(b"media bytes").into();
        let hex = hex::encode(d);
        let b64 = base64::engine::general_purpose::STANDARD.encode(d);
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d);
        assert_eq!(decode(&hex), Some(d));
        assert_eq!(decode(&hex.to_uppercase()), Some(d));
        assert_eq!(decode(&b64), Some(d));
        assert_eq!(decode(&b64url), Some(d));
        assert_eq!(
            decode("SfInY0gGKTsJlUWbwxC1k+FAD0FZHvzwfpvO0zX0GUI=").map(|d| d.len()),
            Some(32)
        );
        assert_eq!(decode("abc"), None);
        assert_eq!(matches(&d, [hex.as_str(), b64.as_str()]), Some(true));
        assert_eq!(matches(&d, [hex.as_str(), "abc"]), Some(false));
        assert_eq!(matches(&d, []), None);
    }
}
