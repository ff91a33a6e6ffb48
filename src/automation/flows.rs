//! The bot's multi-turn flows: cash-on-delivery confirmation and lead qualification.
//!
//! [`Automation::decide_in`] is [`Automation::decide`] with the conversation's current
//! [`Flow`] (from its durable [`super::memory::BotMemory`]); it answers the turn and the flow the
//! memory keeps if the actor applies the turn (a dropped turn changes neither).
//!
//! - **`cod_confirm`**: the order id comes from the text (or the bot asks for it, then
//!   [`Flow::CodAwaitingId`]); the order is fetched from `[automation.orders] url` like a lookup;
//!   the customer gets an interactive message with two reply buttons, ids `cod:confirm:{id}` and
//!   `cod:cancel:{id}` ([`Flow::CodPending`]). Their button reply (or the button's title typed as
//!   text) POSTs to `confirm_url` / `cancel_url`; a 2xx is answered (`confirmed_answer` /
//!   `cancelled_answer`) and the conversation resolved; anything else hands over
//!   (`cod_confirm_failed`). Any other text while buttons are pending is a normal turn and the
//!   buttons stay valid.
//! - **Leads**: an intent of `[automation.leads] intents` starts the questions; each later text
//!   is the answer to the current question (a hand-over keyword still hands over). After the
//!   last one the answers are scored by `scoring` and the turn is a [`Turn::Lead`].
//!
//! Bounds: the buttons' body is cut to Meta's 1024 characters; a lead answer is kept to
//! [`MAX_ANSWER_CHARS`] characters; a confirm/cancel POST takes at most the orders'
//! `timeout_ms` (the same client as lookups).

use super::classifier::normalize;
use super::memory::{Flow, MAX_ANSWER_CHARS};
use super::{fill, order_id, Automation, HandoverReason, Turn};
use crate::automation::config::IntentConfig;

/// Meta's limit on an interactive button message's body text.
const MAX_BUTTON_BODY: usize = 1024;
const CONFIRM: &str = "Confirm";
const CANCEL: &str = "Cancel";

/// What the customer chose on the cash-on-delivery buttons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Confirm,
    Cancel,
}

impl Automation {
    /// The bot's turn for `text` (and the id or payload of the button it replies with, if it
    /// is a button reply) in a conversation currently in `flow`; answers the turn and the flow
    /// to keep once it is applied.
    pub async fn decide_in(&self, flow: &Flow, text: &str, button: Option<&str>) -> (Turn, Flow) {
        // The same bound as `decide`: a burst beyond it goes to humans.
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            let turn = Turn::HandOver {
                reason: HandoverReason::Busy,
                intent: None,
                order_id: order_id(text),
            };
            return (turn, flow.clone());
        };
        match flow {
            Flow::CodPending { order_id } => {
                if let Some(choice) = choice(order_id, text, button) {
                    return (self.cod_settle(order_id, choice).await, Flow::None);
                }
            }
            Flow::Lead { intent, answers } if !self.asks_for_human(text) => {
                return self.lead_step(intent, answers, text);
            }
            Flow::CodAwaitingId if !self.asks_for_human(text) => {
                if let (Some(id), Some(intent)) = (order_id(text), self.cod_intent()) {
                    let turn = self.cod_start(intent, &id).await;
                    return self.after(flow, turn);
                }
            }
            _ => {}
        }
        let turn = self.decide_now(text).await;
        self.after(flow, turn)
    }

    /// The flow a fresh decision leads to (and the turn, when the flow changes what is said).
    fn after(&self, flow: &Flow, turn: Turn) -> (Turn, Flow) {
        let is_cod = |i: &Option<String>| {
            i.as_deref()
                .and_then(|i| self.intent(i))
                .is_some_and(|i| i.action.as_deref() == Some("cod_confirm"))
        };
        let lead_intent = |i: &Option<String>| {
            self.cfg
                .leads
                .as_ref()
                .zip(i.as_deref())
                .is_some_and(|(l, i)| l.intents.iter().any(|x| x == i))
        };
        match turn {
            Turn::Buttons { ref order_id, .. } => {
                let pending = Flow::CodPending {
                    order_id: order_id.clone().unwrap_or_default(),
                };
                (turn, pending)
            }
            Turn::NoAnswer { intent, order_id } if is_cod(&intent) => {
                let text = self
                    .cfg
                    .orders
                    .as_ref()
                    .map(|o| o.ask_order_id.clone())
                    .unwrap_or_default();
                let turn = Turn::Answer {
                    intent,
                    order_id,
                    text,
                    resolve: false,
                };
                (turn, Flow::CodAwaitingId)
            }
            Turn::Answer {
                intent, order_id, ..
            }
            | Turn::NoAnswer { intent, order_id }
                if lead_intent(&intent) =>
            {
                let (Some(leads), Some(id)) = (&self.cfg.leads, intent.clone()) else {
                    return (Turn::NoAnswer { intent, order_id }, Flow::None);
                };
                let first = leads.questions[0].text.clone();
                let turn = Turn::Answer {
                    intent,
                    order_id,
                    text: first,
                    resolve: false,
                };
                let flow = Flow::Lead {
                    intent: id,
                    answers: Vec::new(),
                };
                (turn, flow)
            }
            // Pending buttons stay pressable while the customer talks of something else.
            turn @ (Turn::Answer { .. } | Turn::NoAnswer { .. }) => match flow {
                Flow::CodPending { .. } => (turn, flow.clone()),
                _ => (turn, Flow::None),
            },
            turn => (turn, Flow::None),
        }
    }

    fn intent(&self, id: &str) -> Option<&IntentConfig> {
        self.cfg.intents.iter().find(|i| i.id == id)
    }

    /// The first `cod_confirm` intent (the one a bare order id continues).
    fn cod_intent(&self) -> Option<&IntentConfig> {
        self.cfg
            .intents
            .iter()
            .find(|i| i.action.as_deref() == Some("cod_confirm"))
    }

    /// Fetches the order and builds the Confirm / Cancel buttons for it.
    pub(super) async fn cod_start(&self, intent: &IntentConfig, order: &str) -> Turn {
        let id = Some(intent.id.clone());
        let hand_over = |reason| Turn::HandOver {
            reason,
            intent: id.clone(),
            order_id: Some(order.to_string()),
        };
        let Some(orders) = &self.cfg.orders else {
            return hand_over(HandoverReason::OrderLookupFailed);
        };
        let fields = match self.fetch_order(order).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "order lookup for cash-on-delivery failed; handing over");
                return hand_over(HandoverReason::OrderLookupFailed);
            }
        };
        let template = intent.answer.as_deref().unwrap_or(&orders.confirm_question);
        let Ok(body) = fill(template, &fields) else {
            tracing::warn!("cash-on-delivery question names a field the order lacks; handing over");
            return hand_over(HandoverReason::OrderLookupFailed);
        };
        let body: String = body.chars().take(MAX_BUTTON_BODY).collect();
        let button = |choice: &str, title: &str| serde_json::json!({"type": "reply", "reply": {"id": format!("cod:{choice}:{order}"), "title": title}});
        let json = serde_json::json!({
            "type": "button",
            "body": {"text": body},
            "action": {"buttons": [button("confirm", CONFIRM), button("cancel", CANCEL)]},
        });
        Turn::Buttons {
            intent: id.clone(),
            order_id: Some(order.to_string()),
            json: json.to_string(),
            summary: body,
        }
    }

    /// POSTs the customer's choice to the business's endpoint and answers it.
    async fn cod_settle(&self, order: &str, choice: Choice) -> Turn {
        let intent = self.cod_intent().map(|i| i.id.clone());
        let failed = Turn::HandOver {
            reason: HandoverReason::CodFailed,
            intent: intent.clone(),
            order_id: Some(order.to_string()),
        };
        let Some(orders) = &self.cfg.orders else {
            return failed;
        };
        let (url, answer) = match choice {
            Choice::Confirm => (&orders.confirm_url, &orders.confirmed_answer),
            Choice::Cancel => (&orders.cancel_url, &orders.cancelled_answer),
        };
        let Some(url) = url else {
            return failed;
        };
        // The id is digits only (see `order_id`), so it needs no escaping in the URL.
        let url = url.replace("{order_id}", order);
        match self.http.post(url).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                tracing::warn!(
                    status = r.status().as_u16(),
                    "cash-on-delivery {choice:?} refused; handing over"
                );
                return failed;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cash-on-delivery {choice:?} failed; handing over");
                return failed;
            }
        }
        let mut fields = serde_json::Map::new();
        fields.insert("order_id".into(), serde_json::Value::String(order.into()));
        let text = fill(answer, &fields).unwrap_or_else(|_| answer.clone());
        Turn::Answer {
            intent,
            order_id: Some(order.to_string()),
            text,
            resolve: true,
        }
    }

    /// Records `text` as the answer to the current lead question; asks the next one, or
    /// scores the lead when it answered them all.
    fn lead_step(&self, intent: &str, answers: &[String], text: &str) -> (Turn, Flow) {
        let Some(leads) = &self.cfg.leads else {
            return (
                Turn::NoAnswer {
                    intent: Some(intent.to_string()),
                    order_id: None,
                },
                Flow::None,
            );
        };
        let mut answers = answers.to_vec();
        answers.push(text.chars().take(MAX_ANSWER_CHARS).collect());
        if let Some(next) = leads.questions.get(answers.len()) {
            let turn = Turn::Answer {
                intent: Some(intent.to_string()),
                order_id: None,
                text: next.text.clone(),
                resolve: false,
            };
            let flow = Flow::Lead {
                intent: intent.to_string(),
                answers,
            };
            return (turn, flow);
        }
        let named: Vec<(String, String)> = leads
            .questions
            .iter()
            .map(|q| q.id.clone())
            .zip(answers)
            .collect();
        let score = score(leads, &named);
        let turn = Turn::Lead {
            intent: intent.to_string(),
            score,
            hot: score >= leads.hot_threshold,
            answers: named,
        };
        (turn, Flow::None)
    }

    /// The team hot leads go to.
    pub fn leads_team(&self) -> Option<&str> {
        self.cfg.leads.as_ref().map(|l| l.team.as_str())
    }

    /// What a lead that is not hot is told (before the bot resolves).
    pub fn lead_answer(&self) -> &str {
        self.cfg.leads.as_ref().map_or("", |l| l.answer.as_str())
    }

    /// Whether the bot takes conversations placed in closed teams (`after_hours`).
    pub fn after_hours(&self) -> bool {
        self.cfg.after_hours
    }

    /// What the bot says when a hand-over waits for the team's opening.
    pub fn closed_reply(&self) -> &str {
        &self.cfg.closed_reply
    }

    /// The intent as a metric label: a configured intent id, `knowledge`, or `unknown`, so
    /// the label set is bounded by the config.
    pub fn intent_label(&self, intent: Option<&str>) -> String {
        match intent {
            Some("knowledge") => "knowledge".into(),
            Some(i) if self.intent(i).is_some() => i.to_string(),
            _ => "unknown".into(),
        }
    }
}

/// The customer's choice on the buttons for `order`: the button's id (or a template button's
/// payload), else its title typed or sent as the reply's text.
fn choice(order: &str, text: &str, button: Option<&str>) -> Option<Choice> {
    if let Some(b) = button {
        if b == format!("cod:confirm:{order}") {
            return Some(Choice::Confirm);
        }
        if b == format!("cod:cancel:{order}") {
            return Some(Choice::Cancel);
        }
    }
    let t = normalize(text);
    if t == normalize(CONFIRM) {
        Some(Choice::Confirm)
    } else if t == normalize(CANCEL) {
        Some(Choice::Cancel)
    } else {
        None
    }
}

/// The lead's score: the points of every rule its answers meet.
pub(super) fn score(leads: &super::config::LeadsConfig, answers: &[(String, String)]) -> i64 {
    leads
        .scoring
        .iter()
        .filter(|r| {
            let Some((_, a)) = answers.iter().find(|(q, _)| *q == r.question) else {
                return false;
            };
            match r.at_least {
                Some(min) => first_number(a).is_some_and(|n| n >= min),
                None => {
                    let a = format!(" {} ", normalize(a));
                    r.contains
                        .iter()
                        .map(|w| normalize(w))
                        .any(|w| !w.is_empty() && a.contains(&format!(" {w} ")))
                }
            }
        })
        .map(|r| r.points)
        .sum()
}

/// The first number in a text: digits with `,` as thousands separators and `.` as the decimal
/// point, then `k` (thousands) or `m` (millions) right after it, or after one space.
pub(super) fn first_number(text: &str) -> Option<f64> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ',' || c == '.'))
        .unwrap_or(rest.len());
    let digits: String = rest[..end]
        .trim_end_matches(['.', ','])
        .chars()
        .filter(|c| *c != ',')
        .collect();
    let n: f64 = digits.parse().ok()?;
    let after = rest[end..].strip_prefix(' ').unwrap_or(&rest[end..]);
    let unit = after.chars().next().map(|c| c.to_ascii_lowercase());
    let word_ends = after.chars().nth(1).is_none_or(|c| !c.is_alphabetic());
    Some(match unit {
        Some('k') if word_ends => n * 1_000.0,
        Some('m') if word_ends => n * 1_000_000.0,
        _ => n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::automation::AutomationConfig;

    fn bot() -> Automation {
        #[derive(serde::Deserialize)]
        struct File {
            automation: AutomationConfig,
        }
        let f: File = toml::from_str(include_str!("../../config/automation-demo.toml"))
            .expect("the demo config parses");
        f.automation.validate().expect("the demo config is valid");
        Automation::new(&f.automation).expect("bot")
    }

    #[test]
    fn numbers_read_with_separators_and_k_or_m() {
        assert_eq!(first_number("about 20k EUR"), Some(20_000.0));
        assert_eq!(first_number("20 K"), Some(20_000.0));
        assert_eq!(first_number("1.5m"), Some(1_500_000.0));
        assert_eq!(first_number("12,500 euros."), Some(12_500.0));
        assert_eq!(first_number("300 people"), Some(300.0));
        assert_eq!(first_number("5 kids"), Some(5.0));
        assert_eq!(first_number("none"), None);
    }

    #[tokio::test]
    async fn a_lead_is_asked_every_question_then_scored() {
        let b = bot();
        let (turn, mut flow) = b
            .decide_in(&Flow::None, "I want a quote for my company", None)
            .await;
        assert!(
            matches!(&turn, Turn::Answer { text, .. } if text.contains("budget")),
            "{turn:?}"
        );
        let answers = ["15000", "next year", "ten of us, 10", "sales"];
        let mut last = turn;
        for a in answers {
            (last, flow) = b.decide_in(&flow, a, None).await;
        }
        assert_eq!(flow, Flow::None);
        // 40 (budget) + 0 (timeline) + 0 (10 < 50) + 10 (use case) = 50 < 60.
        match last {
            Turn::Lead {
                score,
                hot,
                answers,
                ..
            } => {
                assert_eq!((score, hot), (50, false));
                assert_eq!(
                    answers[1],
                    ("timeline".to_string(), "next year".to_string())
                );
            }
            t => panic!("{t:?}"),
        }
    }

    #[tokio::test]
    async fn a_request_for_a_person_leaves_any_flow() {
        let b = bot();
        let flow = Flow::Lead {
            intent: "sales".into(),
            answers: vec![],
        };
        let (turn, _) = b.decide_in(&flow, "let me talk to a human", None).await;
        assert!(
            matches!(
                turn,
                Turn::HandOver {
                    reason: HandoverReason::Keyword,
                    ..
                }
            ),
            "{turn:?}"
        );
    }

    #[test]
    fn the_choice_is_the_button_for_this_order_or_its_title() {
        assert_eq!(
            choice("1234", "x", Some("cod:confirm:1234")),
            Some(Choice::Confirm)
        );
        assert_eq!(
            choice("1234", "x", Some("cod:cancel:1234")),
            Some(Choice::Cancel)
        );
        assert_eq!(choice("1234", "x", Some("cod:confirm:9999")), None);
        assert_eq!(choice("1234", " CANCEL ", None), Some(Choice::Cancel));
        assert_eq!(choice("1234", "confirm it later", None), None);
    }
}
