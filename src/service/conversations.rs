//! Conversations: the list a caller may see, reading one, starting one (the business writes
//! first, with a template), and the commands on one.
//!
//! Reads go to the store (every change is durable before it is visible) and show only what the
//! caller may see; commands become messages to the conversation's actor, which applies the rules
//! (ownership, visibility, capacity, the 24-hour window) and makes its change durable before it
//! answers.

use std::sync::Arc;

use crate::actors::{ConversationMsg, Ctx, OutboundMedia, Reply};
use crate::domain::message::{MediaInfo, Outgoing};
use crate::domain::{
    conversation_id, Caller, Conversation, ConversationStatus, CustomerIds, DomainError, Message,
    TransferTarget,
};
use crate::error::Code;
use crate::store::{ListQuery, MediaState, Store};
use crate::templates::SendRefusal;

use super::Result;

/// Most conversations one list answer holds; page on with `after`.
pub const MAX_LIST: usize = 10_000;

/// Most index entries or conversation records one list request reads (its work bound, whatever
/// the filters): a request that reaches it answers with what matched so far and a `next_after`.
pub const LIST_SCAN_BUDGET: usize = 10_000;

/// What a list request asks for; every filter is exact, and absent means any.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<ConversationStatus>,
    pub team: Option<String>,
    pub assignee: Option<String>,
    pub customer: Option<String>,
    pub number: Option<String>,
}

/// One page of a list.
pub struct ListPage {
    pub conversations: Vec<Conversation>,
    /// Where the next request continues (its `after`); `None` only when nothing is left.
    pub next_after: Option<String>,
}

/// What the caller may see among the conversations matching `filter`, in id order, at most
/// `limit` (`None`: [`MAX_LIST`]; at most that; 0 is refused), after the id `after`.
///
/// Each request reads at most [`LIST_SCAN_BUDGET`] index entries or records (merged from the
/// index ranges the filters and the caller's visibility need, see [`plan`]). Whenever it stops
/// before the end, on a full page or on that budget, `next_after` names where the next request
/// continues; it is `None` only when nothing is left. A page may therefore hold fewer than
/// `limit` conversations, even none, with a `next_after`: follow it until `None` to see
/// everything, each conversation once.
pub async fn list(
    store: &Store,
    caller: &Caller,
    filter: ListFilter,
    limit: Option<usize>,
    after: Option<String>,
) -> Result<ListPage> {
    // A page of none could only answer with a `next_after` that goes nowhere: 0 is refused
    // rather than silently raised to 1; above the most a page holds it is lowered to that.
    let limit = match limit {
        Some(0) => return Err(DomainError::Invalid("limit must be at least 1".to_string()).into()),
        Some(n) => n.min(MAX_LIST),
        None => MAX_LIST,
    };
    // A customer on one number is at most one conversation: the one its id is indexed to, or,
    // for one not indexed yet (stored before contacts existed), the one derived from it.
    let by_customer = match (&filter.customer, &filter.number) {
        (Some(c), Some(n)) => {
            let (by_phone, by_user) = store
                .contact_conversations(vec![(n.clone(), Some(c.clone()), Some(c.clone()))])
                .await?
                .pop()
                .unwrap_or_default();
            let mut ids: Vec<String> = [by_phone, by_user, Some(conversation_id(n, c))]
                .into_iter()
                .flatten()
                .collect();
            ids.sort_unstable();
            ids.dedup();
            Some(ids)
        }
        _ => None,
    };
    let queries = plan(caller, &filter, by_customer);
    let caller = caller.clone();
    let ListFilter {
        status,
        team,
        assignee,
        customer,
        number,
    } = filter;
    let keep = move |c: &Conversation| {
        c.visible_to(&caller)
            && status.is_none_or(|st| c.status == st)
            && team.as_deref().is_none_or(|t| c.team() == t)
            && assignee
                .as_deref()
                .is_none_or(|a| c.assignee.as_deref() == Some(a))
            && customer.as_deref().is_none_or(|x| {
                c.customer == x
                    || c.contact.phone.as_deref() == Some(x)
                    || c.contact.user_id.as_deref() == Some(x)
            })
            && number.as_deref().is_none_or(|x| c.number == x)
    };
    let page = store
        .list_page(queries, after, limit, LIST_SCAN_BUDGET, keep)
        .await?;
    Ok(ListPage {
        conversations: page.conversations,
        next_after: page.next_after,
    })
}

/// Chooses the index ranges that cover everything the filters and the caller's visibility allow
/// (the store merges them in id order).
/// `by_customer`: the conversations a customer filter on one number can be (see [`list`]).
fn plan(caller: &Caller, filter: &ListFilter, by_customer: Option<Vec<String>>) -> Vec<ListQuery> {
    let ListFilter {
        status,
        team,
        assignee,
        ..
    } = filter;
    let (status, team) = (*status, team.as_deref());
    if let Some(ids) = by_customer {
        // At most one conversation can match: read the candidates by id.
        return ids.into_iter().map(ListQuery::Id).collect();
    }
    if let Some(a) = assignee {
        return vec![ListQuery::Assignee(a.to_string())];
    }
    if caller.role == crate::domain::Role::Agent {
        // An agent sees queued and bot conversations of its teams plus its own.
        let mut qs = vec![ListQuery::Assignee(caller.id.clone())];
        for t in caller
            .teams
            .iter()
            .filter(|t| team.is_none_or(|x| x == t.as_str()))
        {
            for st in [ConversationStatus::Queued, ConversationStatus::Bot] {
                if status.is_none_or(|s| s == st) {
                    qs.push(ListQuery::Status {
                        status: st,
                        team: Some(t.clone()),
                    });
                }
            }
        }
        return qs;
    }
    if let Some(st) = status {
        return vec![ListQuery::Status {
            status: st,
            team: team.map(str::to_string),
        }];
    }
    if let Some(t) = team {
        return ConversationStatus::ALL
            .into_iter()
            .map(|st| ListQuery::Status {
                status: st,
                team: Some(t.to_string()),
            })
            .collect();
    }
    vec![ListQuery::All]
}

/// One conversation with its messages, if the caller may see it (else not found).
pub async fn show(
    store: &Store,
    caller: &Caller,
    id: &str,
) -> Result<(Conversation, Vec<Message>)> {
    let conv = store
        .get_conversation(id)
        .await?
        .filter(|c| c.visible_to(caller))
        .ok_or(DomainError::NotFound)?;
    let mut messages = store.messages(id).await?;
    crate::domain::message::in_display_order(&mut messages);
    Ok((conv, messages))
}

/// Sends a command to the conversation's actor and answers what it answers.
async fn command<R, F>(ctx: &Arc<Ctx>, id: &str, make: F) -> Result<R>
where
    R: Send + 'static,
    F: Fn(Reply<R>) -> ConversationMsg,
{
    Ok(ctx.ask(id, None, make).await?)
}

pub async fn claim(ctx: &Arc<Ctx>, caller: &Caller, id: &str) -> Result<Conversation> {
    let r = command(ctx, id, |reply| ConversationMsg::Claim {
        caller: caller.clone(),
        reply,
    })
    .await;
    // Other outcomes are counted by the conversation; an unknown one never reaches an actor.
    if r.as_ref().is_err_and(|e| e.code() == Code::NotFound) {
        metrics::counter!(crate::metrics::CLAIMS, "outcome" => Code::NotFound).increment(1);
    }
    r
}

pub async fn release(ctx: &Arc<Ctx>, caller: &Caller, id: &str) -> Result<Conversation> {
    command(ctx, id, |reply| ConversationMsg::Release {
        caller: caller.clone(),
        reply,
    })
    .await
}

pub async fn resolve(ctx: &Arc<Ctx>, caller: &Caller, id: &str) -> Result<Conversation> {
    command(ctx, id, |reply| ConversationMsg::Resolve {
        caller: caller.clone(),
        reply,
    })
    .await
}

/// Hands the conversation back to the bot (its owner, or a supervisor of the team or an admin;
/// the team must have automation on).
pub async fn hand_back(ctx: &Arc<Ctx>, caller: &Caller, id: &str) -> Result<Conversation> {
    command(ctx, id, |reply| ConversationMsg::HandBack {
        caller: caller.clone(),
        reply,
    })
    .await
}

/// Where a transfer goes, as the caller named it.
#[derive(Debug, Clone)]
pub enum TransferTo {
    Team(String),
    Agent(String),
}

/// Moves the conversation to a team or an agent (not found: an agent that does not exist or is
/// disabled).
pub async fn transfer(
    ctx: &Arc<Ctx>,
    people: &super::people::People,
    caller: &Caller,
    id: &str,
    to: TransferTo,
    note: Option<String>,
) -> Result<Conversation> {
    let target = match to {
        TransferTo::Team(team) => TransferTarget::Team(team),
        TransferTo::Agent(agent) => {
            let teams = people.agent_teams(&agent).ok_or(DomainError::NotFound)?;
            TransferTarget::Agent { id: agent, teams }
        }
    };
    command(ctx, id, |reply| ConversationMsg::Transfer {
        caller: caller.clone(),
        target: target.clone(),
        note: note.clone(),
        reply,
    })
    .await
}

/// Longest reply text WhatsApp accepts, in characters.
const MAX_TEXT: usize = 4096;

/// Longest idempotency key, in bytes.
const MAX_IDEMPOTENCY_KEY: usize = 256;

/// What a reply asks to send, as the request gave it: a text (optionally quoting one of the
/// conversation's messages by our id) or Meta's interactive object.
#[derive(Debug, Clone, Default)]
pub struct ReplyRequest {
    pub text: Option<String>,
    pub reply_to: Option<String>,
    pub interactive: Option<serde_json::Value>,
    pub template: Option<TemplateRequest>,
    pub idempotency_key: Option<String>,
}

/// A template send: its name, the language asked for, and the body's parameters in order.
#[derive(Debug, Clone)]
pub struct TemplateRequest {
    pub name: String,
    pub language: String,
    pub parameters: Vec<String>,
}

/// Resolves a template send against the registry (variant, approval, parameter count), before
/// anything is stored or sent.
fn template_body(ctx: &Ctx, t: &TemplateRequest) -> Result<Outgoing> {
    let registry = ctx
        .templates
        .get()
        .ok_or(super::ServiceError::Core(crate::error::Error::Unavailable))?;
    let prepared = registry
        .prepare_send(&t.name, &t.language, &t.parameters)
        .map_err(|e| match e {
            SendRefusal::Invalid(m) => DomainError::Invalid(m),
            SendRefusal::NotApproved(m) => DomainError::TemplateNotApproved(m),
        })?;
    Ok(Outgoing::Template {
        name: prepared.name,
        language: prepared.language,
        category: prepared.category,
        components_json: prepared.components_json,
        summary: prepared.summary,
    })
}

/// Queues a reply to the customer (the owner only, within the 24-hour window but for a
/// template); a repeated `idempotency_key` answers the message it first queued. A reply is a
/// text, which may quote (`reply_to`), an interactive message (buttons or a list, checked
/// against Meta's limits here, before anything is stored), or an approved template (resolved
/// against the registry here, so a wrong parameter count never reaches Meta).
pub async fn reply(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    id: &str,
    req: ReplyRequest,
) -> Result<Message> {
    let ReplyRequest {
        text,
        reply_to,
        interactive,
        template,
        idempotency_key,
    } = req;
    let body = match (text, interactive) {
        (text, interactive) if template.is_some() => {
            if text.is_some() || interactive.is_some() {
                return Err(invalid(
                    "give \"text\", \"interactive\" or \"template\", not two",
                ));
            }
            if reply_to.is_some() {
                return Err(invalid("\"reply_to\" quotes with a text only"));
            }
            let Some(t) = &template else {
                return Err(invalid("give \"template\""));
            };
            template_body(ctx, t)?
        }
        (Some(_), Some(_)) => {
            return Err(invalid("give \"text\" or \"interactive\", not both"));
        }
        (None, Some(object)) => {
            if reply_to.is_some() {
                return Err(invalid("\"reply_to\" quotes with a text only"));
            }
            let checked =
                crate::whatsapp::interactive::check(&object).map_err(DomainError::Invalid)?;
            Outgoing::Interactive {
                json: checked.json,
                summary: checked.summary,
            }
        }
        (text, None) => {
            let text = required_text(text)?;
            if text.chars().count() > MAX_TEXT {
                return Err(invalid("\"text\" is longer than 4096 characters"));
            }
            if reply_to.as_deref().is_some_and(str::is_empty) {
                return Err(invalid("\"reply_to\" must be a message id"));
            }
            Outgoing::Text {
                body: text,
                reply_to,
            }
        }
    };
    if idempotency_key
        .as_deref()
        .is_some_and(|k| k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY)
    {
        return Err(invalid("\"idempotency_key\" must be 1 to 256 bytes"));
    }
    command(ctx, id, |reply| ConversationMsg::Reply {
        caller: caller.clone(),
        body: body.clone(),
        idempotency_key: idempotency_key.clone(),
        media: None,
        reply,
    })
    .await
}

/// Most sends one bulk template request ([`send_templates`]) carries.
pub const MAX_BULK_SENDS: usize = 1_000;

/// Conversations of one bulk request whose sends are accepted at once: their commits reach the
/// store together and share its group commits (one write and one fsync for many sends).
const BULK_CONCURRENCY: usize = 256;

/// One send of a bulk template request: to which conversation, the body's parameters, and its
/// idempotency key (per conversation, as a reply's).
#[derive(Debug, Clone)]
pub struct BulkSend {
    pub conversation_id: String,
    pub parameters: Vec<String>,
    pub idempotency_key: Option<String>,
}

/// `POST /api/v1/templates/{name}/sends`: template `name` in `language` to many conversations
/// the caller owns, each exactly as [`reply`] with that template would send it (the same
/// checks, refusals, messaging limit and idempotency), answered per send in request order.
///
/// Sends to different conversations are accepted concurrently (at most [`BULK_CONCURRENCY`]
/// conversations at a time), so their durable commits share group commits; a conversation named
/// more than once gets its sends accepted one after another in request order, so the outbox
/// sends them in that order. The request as a whole is refused only when it is malformed: no
/// sends, more than [`MAX_BULK_SENDS`], or no template name or language.
pub async fn send_templates(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    name: &str,
    language: &str,
    sends: Vec<BulkSend>,
) -> Result<Vec<Result<Message>>> {
    use futures_util::stream::{self, StreamExt};

    if name.is_empty() || language.is_empty() {
        return Err(invalid("give the template's name and \"language\""));
    }
    if sends.is_empty() || sends.len() > MAX_BULK_SENDS {
        return Err(invalid("\"sends\" must hold 1 to 1000 sends"));
    }
    if sends.iter().any(|s| s.conversation_id.is_empty()) {
        return Err(invalid("each send needs a \"conversation_id\""));
    }
    // Each conversation's sends, in request order, with their places in the answer.
    let mut groups: Vec<Vec<(usize, BulkSend)>> = Vec::new();
    let mut group_of: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, send) in sends.into_iter().enumerate() {
        let g = *group_of
            .entry(send.conversation_id.clone())
            .or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
        groups[g].push((i, send));
    }
    let total = groups.iter().map(Vec::len).sum();
    let answered: Vec<Vec<(usize, Result<Message>)>> = stream::iter(groups)
        .map(|group| async move {
            let mut out = Vec::with_capacity(group.len());
            for (i, send) in group {
                let req = ReplyRequest {
                    text: None,
                    reply_to: None,
                    interactive: None,
                    template: Some(TemplateRequest {
                        name: name.to_string(),
                        language: language.to_string(),
                        parameters: send.parameters,
                    }),
                    idempotency_key: send.idempotency_key,
                };
                out.push((i, reply(ctx, caller, &send.conversation_id, req).await));
            }
            out
        })
        .buffer_unordered(BULK_CONCURRENCY)
        .collect()
        .await;
    let mut results: Vec<Option<Result<Message>>> = (0..total).map(|_| None).collect();
    for (i, r) in answered.into_iter().flatten() {
        if let Some(slot) = results.get_mut(i) {
            *slot = Some(r);
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(crate::error::Error::Unavailable.into())))
        .collect())
}

/// What `POST /api/v1/conversations` asks: from which number, to whom (a phone or a user id),
/// which template.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    pub number: Option<String>,
    pub customer: Option<String>,
    pub template: Option<TemplateRequest>,
    pub idempotency_key: Option<String>,
}

/// Fewest and most digits a customer's phone may have (E.164 allows at most 15; the shortest
/// numbers in use have 7).
const PHONE_DIGITS: std::ops::RangeInclusive<usize> = 7..=15;

/// The customer a start names: a BSUID by its shape, else a phone in international format
/// (digits, an optional leading `+` dropped, as Meta's `wa_id` has none).
fn customer_ids(customer: &str) -> Result<CustomerIds> {
    if crate::domain::customer::is_user_id(customer) {
        return Ok(CustomerIds {
            user_id: Some(customer.to_string()),
            ..CustomerIds::default()
        });
    }
    let digits = customer.strip_prefix('+').unwrap_or(customer);
    if PHONE_DIGITS.contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(CustomerIds {
            phone: Some(digits.to_string()),
            ..CustomerIds::default()
        });
    }
    Err(invalid(
        "\"customer\" must be a phone number in international format (7 to 15 digits) or a WhatsApp user id (such as US.13491208655302741918)",
    ))
}

/// Starts a conversation with a customer from one of the business's numbers with an approved
/// template; the caller owns it (see `Conversation::start` for a customer who already has a
/// conversation on the number). Everything that can be refused without the conversation is
/// refused first, before anything is stored or sent: the number (400 when not in
/// `[[numbers]]`), the customer (400), the template (400 / 422, as for a template reply). The
/// customer is resolved like a webhook's sender (`crate::identity`): the conversation its
/// phone or user id already leads to, else a new one. A repeated `idempotency_key` answers the
/// conversation and message it first made, and sends nothing.
pub async fn start(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    req: StartRequest,
) -> Result<(Conversation, Message)> {
    let StartRequest {
        number,
        customer,
        template,
        idempotency_key,
    } = req;
    let number = number
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("\"number\" (a phone_number_id of [[numbers]]) is required"))?;
    if ctx.config.number(&number).is_none() {
        return Err(invalid(&format!(
            "\"number\": {number:?} is not one of the business's numbers ([[numbers]])"
        )));
    }
    let customer = customer
        .filter(|c| !c.is_empty())
        .ok_or_else(|| invalid("\"customer\" (a phone or a user id) is required"))?;
    let ids = customer_ids(&customer)?;
    let template = template
        .ok_or_else(|| invalid("\"template\" is required: a conversation starts with one"))?;
    let body = template_body(ctx, &template)?;
    if idempotency_key
        .as_deref()
        .is_some_and(|k| k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY)
    {
        return Err(invalid("\"idempotency_key\" must be 1 to 256 bytes"));
    }
    let held = crate::identity::lock_customer(&number, &ids).await;
    let resolved = crate::identity::resolve_all(ctx, &[(number.as_str(), &ids)]).await?;
    // The ids stay pending (found by webhooks) until the start is durable or refused.
    drop(held);
    let id = resolved
        .ids
        .first()
        .cloned()
        .ok_or(super::ServiceError::Core(crate::error::Error::Unavailable))?;
    let seed = Conversation::for_customer(
        id.clone(),
        &number,
        &ids,
        &ctx.default_team(&number),
        ctx.now(),
    );
    let started = ctx
        .ask(&id, Some(&seed), |reply| ConversationMsg::Start {
            caller: caller.clone(),
            body: body.clone(),
            idempotency_key: idempotency_key.clone(),
            reply,
        })
        .await;
    if started.is_ok() {
        resolved.settle();
    }
    Ok(started?)
}

/// Longest media caption WhatsApp accepts, in characters.
const MAX_CAPTION: usize = 1024;

/// Queues a media message (an upload of the caller's, or media it may see) to the customer,
/// with the rules of a text reply; the outbox uploads it to Meta and sends it by Meta's id.
pub async fn reply_media(
    ctx: &Arc<Ctx>,
    media: &crate::media::Media,
    caller: &Caller,
    id: &str,
    media_id: &str,
    caption: Option<String>,
    idempotency_key: Option<String>,
) -> Result<Message> {
    if caption
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_CAPTION)
    {
        return Err(invalid("\"media.caption\" is longer than 1024 characters"));
    }
    if idempotency_key
        .as_deref()
        .is_some_and(|k| k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY)
    {
        return Err(invalid("\"idempotency_key\" must be 1 to 256 bytes"));
    }
    let unknown = || invalid("\"media.id\" names no stored media this agent may send");
    let record = match media.visible(caller, media_id).await {
        Ok(r) => r,
        Err(crate::media::MediaError::Store(e)) => return Err(e.into()),
        Err(_) => return Err(unknown()),
    };
    let MediaState::Stored { size, sha256 } = &record.state else {
        return Err(unknown());
    };
    let kind = crate::media::kind_of(&record.mime_type).ok_or_else(unknown)?;
    let outbound = OutboundMedia {
        kind: kind.as_str().to_string(),
        info: MediaInfo {
            id: record.id.clone(),
            mime_type: record.mime_type.clone(),
            sha256: Some(sha256.clone()),
            size: Some(*size),
            filename: record.filename.clone(),
            caption: None,
            downloaded: true,
        },
    };
    command(ctx, id, |reply| ConversationMsg::Reply {
        caller: caller.clone(),
        body: Outgoing::Text {
            body: caption.clone().unwrap_or_default(),
            reply_to: None,
        },
        idempotency_key: idempotency_key.clone(),
        media: Some(outbound.clone()),
        reply,
    })
    .await
}

/// Longest reaction, in characters (an emoji with its modifiers and joiners; Meta checks that
/// it is one emoji).
const MAX_EMOJI_CHARS: usize = 16;

/// Sets (or with `""` removes) the business's reaction to message `message_id` of the
/// conversation (the owner only, within the window) and queues it for Meta; answers the message
/// reacted to. Idempotent by state: a reaction the message already shows sends nothing.
pub async fn react(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    id: &str,
    message_id: &str,
    emoji: Option<String>,
) -> Result<Message> {
    let emoji = emoji.ok_or_else(|| invalid("\"emoji\" is required (\"\" removes)"))?;
    if emoji.chars().count() > MAX_EMOJI_CHARS
        || emoji.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid("\"emoji\" must be one emoji, or \"\" to remove"));
    }
    command(ctx, id, |reply| ConversationMsg::React {
        caller: caller.clone(),
        message_id: message_id.to_string(),
        emoji: emoji.clone(),
        reply,
    })
    .await
}

/// Marks the customer's latest message read at Meta with a typing indicator (the owner only);
/// answers our id of the message marked, or None when the customer has sent nothing to mark.
pub async fn mark_read(ctx: &Arc<Ctx>, caller: &Caller, id: &str) -> Result<Option<String>> {
    command(ctx, id, |reply| ConversationMsg::MarkRead {
        caller: caller.clone(),
        reply,
    })
    .await
}

/// Adds an internal note (never sent to the customer).
pub async fn note(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    id: &str,
    text: Option<String>,
) -> Result<Message> {
    let text = required_text(text)?;
    command(ctx, id, |reply| ConversationMsg::Note {
        caller: caller.clone(),
        text: text.clone(),
        reply,
    })
    .await
}

/// The text, unless absent or blank.
fn required_text(text: Option<String>) -> Result<String> {
    text.filter(|t| !t.trim().is_empty())
        .ok_or_else(|| invalid("\"text\" is required"))
}

fn invalid(message: &str) -> super::ServiceError {
    DomainError::Invalid(message.to_string()).into()
}
