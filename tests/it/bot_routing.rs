//! Intent as a routing condition (issue 22 item 2): a `when.intent` rule matches the bot's
//! detected intent when it hands a conversation over, and, with `[automation]` configured, the
//! built-in classifier's intent of the message that opens a conversation (whatever team it lands
//! in, bot or not).

use crate::common::*;

const DEMO: &str = include_str!("../../config/automation-demo.toml");

/// The demo automation (a bot for `support` only) and one intent rule sending `intent` to sales.
async fn broker(intent: &str) -> TB {
    let rule = format!(
        "\n[[routing.rules]]\nname = \"{intent} to sales\"\nwhen = {{ intent = [\"{intent}\"] }}\nthen = {{ team = \"sales\", labels = [\"by-intent\"] }}\n"
    );
    TB::start_with(|c| c.extra = format!("\n{DEMO}\n{rule}")).await
}

#[tokio::test]
async fn the_bots_intent_routes_the_hand_over() {
    let tb = broker("complaint").await;
    let customer = customer();
    // A greeting matches no rule: support, whose bot answers.
    let id = tb.open_conv(N1, &customer, "hello").await;
    tb.graph.wait_sends(1, WAIT).await;
    assert_eq!(tb.conversation(&id).await["team"], "support");
    // A complaint is sensitive: the bot hands over, and routing sees its intent.
    tb.send_text(N1, &customer, "this is unacceptable, terrible service")
        .await;
    let c = wait_status(&tb, &id, "queued").await;
    assert_eq!(c["team"], "sales", "{c}");
    assert!(
        c["labels"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l == "by-intent")),
        "{c}"
    );
}

#[tokio::test]
async fn the_opening_messages_intent_routes_a_new_conversation() {
    let tb = broker("refund").await;
    // Matched on the first message: it never reaches support's bot.
    let id = tb
        .open_conv(N1, &customer(), "I want my money back please")
        .await;
    let c = tb.conversation(&id).await;
    assert_eq!(
        (c["team"].as_str(), c["status"].as_str()),
        (Some("sales"), Some("queued")),
        "{c}"
    );
    // Another intent: the rule does not match, support's bot has it.
    let other = tb.open_conv(N1, &customer(), "hello").await;
    let c = tb.conversation(&other).await;
    assert_eq!(
        (c["team"].as_str(), c["status"].as_str()),
        (Some("support"), Some("bot")),
        "{c}"
    );
    // A team without the bot (N2 lands in sales) is routed the same way.
    let third = tb
        .open_conv(N2, &customer(), "quiero un reembolso por favor")
        .await;
    let c = tb.conversation(&third).await;
    assert!(
        c["labels"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l == "by-intent")),
        "{c}"
    );
}
