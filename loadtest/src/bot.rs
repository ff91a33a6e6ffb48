//! Bot traffic (`--bot`): the `[automation]` table the generated broker config gets (the bot in
//! front of every team: the config has one, `support`) and the customer texts drawn from its
//! intents.
//!
//! The intents mirror the broker's demo (`config/automation-demo.toml`) without the order
//! service, so a run needs nothing but the broker: every intent the texts name is answered from
//! the config. The mix is chosen so the bot answers most texts and hands over some: of
//! [`TEXTS`], 2 in 16 ask for a person or complain (a hand-over: the conversation waits for an
//! agent from then on), 3 in 16 thank (the bot answers and resolves, so the customer's next text
//! reopens it to the bot), the rest are answered and keep the conversation with the bot.
//! With `--no-automation` the same texts go to a broker without the bot (the "off" figure).

/// Appended to the generated config when the bot is on.
pub const AUTOMATION: &str = r#"
[automation]
teams = ["support"]
provider = "builtin"
knowledge_min_score = 0.55

[automation.handover]
min_confidence = 0.3
keywords = ["human", "agent", "person", "operator", "humano", "persona", "agente", "humain", "conseiller"]
max_failed_turns = 2
sensitive_intents = ["complaint"]

[[automation.intents]]
id = "order_status"
answer = "Orders ship within 2 business days; the tracking link is in your confirmation email."
examples = ["where is my order", "track my order", "order status", "dónde está mi pedido", "où est ma commande"]

[[automation.intents]]
id = "returns"
answer = "You can return any item within 30 days: reply with your order number and we send a return label."
examples = ["I want to return an item", "return policy", "quiero devolver un producto", "je veux retourner un article"]

[[automation.intents]]
id = "refund"
answer = "Refunds go back to your original payment method within 5 business days of receiving the return."
examples = ["I want my money back", "refund please", "quiero un reembolso", "je veux être remboursé"]

[[automation.intents]]
id = "greeting"
answer = "Hello! I am the assistant. Ask me about your order, returns or refunds."
examples = ["hello", "hi", "good morning", "hola", "buenos días", "bonjour", "salut"]

[[automation.intents]]
id = "thanks"
answer = "You are welcome! Write again any time."
resolve = true
examples = ["thank you", "thanks a lot", "gracias", "merci beaucoup"]

[[automation.intents]]
id = "complaint"
examples = ["this is unacceptable", "I want to file a complaint", "terrible service", "pésimo servicio"]

[[automation.knowledge]]
question = "what are your opening hours"
answer = "We are open Monday to Friday, 9:00 to 18:00."
"#;

/// Customer texts of bot traffic (see the module doc for the mix).
pub const TEXTS: [&str; 16] = [
    "Hello there!",
    "Where is my order?",
    "¿Dónde está mi pedido?",
    "Où est ma commande ?",
    "How do I return this item?",
    "Quiero devolver un producto",
    "I want my money back",
    "Je veux être remboursée",
    "Buenos días",
    "What are your opening hours?",
    "Has my order shipped yet",
    "Thank you!",
    "Muchas gracias",
    "Merci beaucoup",
    "I want to talk to a person",
    "This is unacceptable, terrible service",
];

#[cfg(test)]
mod tests {
    #[test]
    fn the_automation_table_parses() {
        let v: toml::Value = match toml::from_str(super::AUTOMATION) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(v["automation"]["teams"][0].as_str(), Some("support"));
    }
}
