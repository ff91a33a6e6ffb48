//! Regressions of what the fuzz targets (fuzz/) and the parser's property tests
//! (`webhook_props`) found, one test per finding, each failing on the code before its fix.

use crate::common::*;

/// A body whose bytes are not UTF-8 is not JSON: 400 `invalid_json` and nothing stored, even
/// when the bad byte sits in a field the parser ignores. The fast path
/// (`whatsapp::typed_webhook`) once read bytes with serde_json, which skips ignored strings
/// without checking them, and took such a body the lenient parser refuses (found by
/// `webhook_props::any_body_is_parsed_by_the_rules`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_utf8_is_400_even_in_an_ignored_field() {
    let tb = TB::start().await;
    let cust = customer();
    let good = text_webhook(N1, &cust, &wamid(), now(), "hello").to_string();
    let marker = "\"whatsapp_business_account\"";
    assert!(good.contains(marker), "{good}");
    let mut body = good.replacen(marker, "\"whatsapp_\u{1}\"", 1).into_bytes();
    let at = body.iter().position(|b| *b == 1).expect("marker byte");
    body[at] = 0x80;
    assert!(std::str::from_utf8(&body).is_err());
    let (status, v) = tb.webhook_bytes(body).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(err_code(&v), "invalid_json", "{v}");
    assert!(tb.conv_of(N1, &cust).await.is_none());
    // The same body with the byte put right is taken.
    let (status, v) = tb.webhook_bytes(good.into_bytes()).await;
    assert_eq!(status, 200, "{v}");
}

/// A config error is one line whatever the file says: a quoted TOML key may hold a line break,
/// and an unknown key in a `[[teams]]` table was named as written (found by reading the code
/// for the `config` fuzz target's one-line check).
#[test]
fn an_unknown_key_with_a_line_break_is_named_on_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut toml = Cfg::new(&dir.path().join("db"), "http://127.0.0.1:9/v25.0").toml();
    toml.push_str("\n[[teams]]\nid = \"night\"\n\"assign\\nment\\u2028\" = \"x\"\n");
    let e = switchboard::Config::from_toml_str(&toml).expect_err("unknown key");
    let line = e.to_string();
    assert_eq!(line.lines().count(), 1, "{line:?}");
    assert!(!line.contains('\u{2028}'), "{line:?}");
    assert!(
        line.contains("].assign\\nment\\u{2028}: unknown key"),
        "{line:?}"
    );
}
