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
