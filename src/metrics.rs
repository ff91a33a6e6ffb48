//! Metric names, their descriptions and the Prometheus recorder.
//!
//! Every name is a constant here, described once at start-up. Label values come from bounded
//! sets only: outcomes are fixed strings, statuses are the four conversation statuses, teams and
//! numbers come from the config. Never a customer, message or conversation id.

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const WEBHOOK_REQUESTS: &str = "switchboard_webhook_requests_total";
pub const WEBHOOK_DURATION: &str = "switchboard_webhook_duration_seconds";
pub const INBOUND_MESSAGES: &str = "switchboard_inbound_messages_total";
pub const INBOUND_DUPLICATES: &str = "switchboard_inbound_duplicates_total";
pub const INBOUND_WAMID_CONFLICTS: &str = "switchboard_inbound_wamid_conflicts_total";
pub const INBOUND_FUTURE_TIMESTAMPS: &str = "switchboard_inbound_future_timestamps_total";
pub const INBOUND_NO_CUSTOMER: &str = "switchboard_inbound_no_customer_total";
pub const INBOUND_SYSTEM: &str = "switchboard_inbound_system_messages_total";
pub const UNKNOWN_NUMBER: &str = "switchboard_unknown_number_total";
pub const APP_ECHOES: &str = "switchboard_app_echoes_total";
pub const HISTORY_IMPORTED: &str = "switchboard_history_messages_total";
pub const APP_CONTACT_SYNC: &str = "switchboard_app_contact_sync_total";
pub const CONTACT_CONFLICTS: &str = "switchboard_contact_conflicts_total";
pub const STATUS_UPDATES: &str = "switchboard_status_updates_total";
pub const INBOUND_REACTIONS: &str = "switchboard_inbound_reactions_total";
pub const BILLABLE_MESSAGES: &str = "switchboard_billable_messages_total";
pub const OUTBOUND_MESSAGES: &str = "switchboard_outbound_messages_total";
pub const OUTBOUND_RETRIES: &str = "switchboard_outbound_retries_total";
pub const OUTBOUND_DELAY: &str = "switchboard_outbound_delay_seconds";
pub const OUTBOX_SPILLED: &str = "switchboard_outbox_spilled_total";
pub const OUTBOX_PENDING: &str = "switchboard_outbox_pending";
pub const OUTBOX_AMBIGUOUS: &str = "switchboard_outbox_ambiguous_total";
pub const OUTBOX_ADOPTED: &str = "switchboard_outbox_adopted_total";
pub const OUTBOX_SENDS: &str = "switchboard_outbox_sends_total";
pub const OUTBOX_PAIR_PACED: &str = "switchboard_outbox_pair_paced_total";
pub const OUTBOX_PAIR_LIMITED: &str = "switchboard_outbox_pair_limited_total";
pub const READ_RECEIPTS: &str = "switchboard_read_receipts_total";
pub const BROKER_RESTARTS: &str = "switchboard_broker_restarts_total";
pub const API_REFUSED: &str = "switchboard_api_requests_refused_total";
pub const GRAPH_DURATION: &str = "switchboard_graph_request_duration_seconds";
pub const CLAIMS: &str = "switchboard_claims_total";
pub const BOT_TURNS: &str = "switchboard_bot_turns_total";
pub const BOT_HANDOVERS: &str = "switchboard_bot_handovers_total";
pub const BOT_INTENT_HANDOVERS: &str = "switchboard_bot_intent_handovers_total";
pub const BOT_CYCLES: &str = "switchboard_bot_cycles_total";
pub const BOT_PROVIDER_SECONDS: &str = "switchboard_bot_provider_seconds";
pub const BOT_PROVIDER_FAILURES: &str = "switchboard_bot_provider_failures_total";
pub const CONVERSATIONS: &str = "switchboard_conversations";
pub const LIVE_ACTORS: &str = "switchboard_live_conversation_actors";
pub const ACTOR_RESTARTS: &str = "switchboard_actor_restarts_total";
pub const SUPERVISED_RESTARTS: &str = "switchboard_supervised_restarts_total";
pub const ACTOR_ACTIVATIONS: &str = "switchboard_actor_activations_total";
pub const ACTOR_PASSIVATIONS: &str = "switchboard_actor_passivations_total";
/// `reason` of [`ACTOR_PASSIVATIONS`]: idle for `conversations.idle_timeout_ms`, or among the
/// idlest when the live actors passed `conversations.max_live`.
pub const PASSIVATION_REASONS: [&str; 2] = ["idle", "bound"];
pub const MAILBOX_FULL: &str = "switchboard_mailbox_full_total";
pub const STORE_MEMORY: &str = "switchboard_store_memory_bytes";
pub const HTTP_DURATION: &str = "switchboard_http_request_duration_seconds";
pub const STORE_COMMIT_SECONDS: &str = "switchboard_store_commit_duration_seconds";
pub const STORE_GROUP_SIZE: &str = "switchboard_store_group_commit_size";
pub const STORE_READS: &str = "switchboard_store_reads_total";
pub const WEBHOOKS_IN_FLIGHT: &str = "switchboard_webhooks_in_flight";
pub const API_IN_FLIGHT: &str = "switchboard_api_requests_in_flight";
pub const EVENT_STREAMS: &str = "switchboard_event_streams";
pub const API_REQUESTS: &str = "switchboard_api_requests_total";
pub const ASSIGNMENTS: &str = "switchboard_assignments_total";
pub const ROUTED: &str = "switchboard_routed_conversations_total";
pub const QUEUE_DEPTH: &str = "switchboard_queue_depth";
pub const QUEUE_OLDEST_WAIT: &str = "switchboard_queue_oldest_wait_seconds";
pub const SLA: &str = "switchboard_sla_total";
pub const FALLBACKS: &str = "switchboard_fallback_moves_total";
pub const CONNECTIONS: &str = "switchboard_connections";
pub const CONNECTIONS_REFUSED: &str = "switchboard_connections_refused_total";
pub const CONNECTIONS_TIMED_OUT: &str = "switchboard_connections_timed_out_total";
pub const AUTH_FAILURES: &str = "switchboard_auth_failures_total";
pub const AGENT_REFUSED: &str = "switchboard_agent_requests_refused_total";
pub const MEDIA_FETCHES: &str = "switchboard_media_fetches_total";
pub const MEDIA_FETCH_PENDING: &str = "switchboard_media_fetch_pending";
pub const TEMPLATE_SYNCS: &str = "switchboard_template_syncs_total";
pub const NUMBER_MPS: &str = "switchboard_number_mps";
pub const MESSAGING_LIMIT: &str = "switchboard_messaging_limit";
pub const BUSINESS_INITIATED_24H: &str = "switchboard_business_initiated_conversations_24h";
pub const MEDIA_UPLOADS: &str = "switchboard_media_uploads_total";
pub const FIRST_RESPONSE: &str = "switchboard_first_response_seconds";
pub const RESOLUTION: &str = "switchboard_resolution_seconds";
pub const CSAT_ANSWERS: &str = "switchboard_csat_answers_total";

/// Buckets of the per-team first-response and resolution histograms: from seconds to days
/// (a conversation resolved after a weekend takes ~3 days).
const HUMAN_BUCKETS: [f64; 14] = [
    5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0,
    259200.0,
];

/// Records a first response (wall-clock) in its team's histogram.
pub fn record_first_response(team: &str, wall_ms: i64) {
    metrics::histogram!(FIRST_RESPONSE, "team" => team.to_string()).record(wall_ms as f64 / 1000.0);
}

/// Records a resolution (wall-clock, from opening) in its team's histogram.
pub fn record_resolution(team: &str, wall_ms: i64) {
    metrics::histogram!(RESOLUTION, "team" => team.to_string()).record(wall_ms as f64 / 1000.0);
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once (tests start several brokers in one process) and
/// returns the handle that renders `/metrics`.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".to_string()),
                    &[
                        0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0,
                    ],
                )
                .and_then(|b| {
                    // Throttled numbers and Graph outages hold replies for minutes.
                    b.set_buckets_for_metric(
                        Matcher::Full(OUTBOUND_DELAY.to_string()),
                        &[
                            0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                            3600.0,
                        ],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(FIRST_RESPONSE.to_string()),
                        &HUMAN_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(RESOLUTION.to_string()), &HUMAN_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(STORE_GROUP_SIZE.to_string()),
                        &[
                            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                        ],
                    )
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(WEBHOOK_REQUESTS, "Webhook POSTs by outcome (ok, invalid_signature, invalid_json, too_large, timeout, overloaded, error).");
    describe_histogram!(
        WEBHOOK_DURATION,
        Unit::Seconds,
        "Time from webhook request to its answer."
    );
    describe_counter!(
        INBOUND_MESSAGES,
        "Inbound customer messages stored (duplicates excluded)."
    );
    describe_counter!(
        INBOUND_DUPLICATES,
        "Redelivered inbound messages recognised by wamid and not stored again."
    );
    describe_counter!(
        INBOUND_WAMID_CONFLICTS,
        "Inbound messages whose wamid one webhook had already listed under another customer or number (the first listing is stored, not these; also counted as duplicates)."
    );
    describe_counter!(
        INBOUND_FUTURE_TIMESTAMPS,
        "Inbound messages whose Meta timestamp lay more than 5 minutes ahead of the broker's clock, dated when they arrived instead."
    );
    describe_counter!(
        INBOUND_NO_CUSTOMER,
        "Inbound messages naming neither a phone nor a user id (in the message or its contacts): kept verbatim, never a conversation."
    );
    describe_counter!(
        UNKNOWN_NUMBER,
        "Webhook items (messages, echoes, history chunks, contact syncs) for a phone_number_id missing from [[numbers]]: answered 200 and kept verbatim, never a conversation."
    );
    describe_counter!(
        APP_ECHOES,
        "Messages, edits and revokes the business made in the WhatsApp Business App (smb_message_echoes) applied to their conversations (redeliveries excluded)."
    );
    describe_counter!(
        HISTORY_IMPORTED,
        "WhatsApp Business App chat history messages (history webhook) imported into their conversations (redeliveries excluded)."
    );
    describe_counter!(
        APP_CONTACT_SYNC,
        "WhatsApp Business App contact changes (smb_app_state_sync) that renamed a known customer."
    );
    describe_counter!(
        INBOUND_SYSTEM,
        "Inbound `system` messages (user_changed_number, user_changed_user_id, …): kept verbatim, they move the contact's ids and never open a conversation."
    );
    describe_counter!(
        CONTACT_CONFLICTS,
        "Inbound messages naming a phone and a user id already known as two different contacts (each created from a webhook naming one id): the message goes to the phone's contact, which takes the user id."
    );
    describe_counter!(
        STATUS_UPDATES,
        "Outbound status callbacks by outcome (applied, stale, orphan)."
    );
    describe_counter!(
        INBOUND_REACTIONS,
        "Customer reactions by outcome (applied: set on the message they name; removed: an empty emoji took the customer's reaction off; unknown_target: the message named is not one of the conversation's, the reaction is kept verbatim). Redeliveries are not counted again."
    );
    describe_counter!(
        BILLABLE_MESSAGES,
        "Messages Meta charges for, counted once each on the first status callback with their pricing (billable unless Meta says billable: false or a free type), per number and Meta's category (authentication, authentication_international, marketing, marketing_lite, referral_conversion, service, utility; any other: other)."
    );
    describe_counter!(
        OUTBOUND_MESSAGES,
        "Outbound messages by outcome (queued, accepted, failed, window_closed)."
    );
    describe_counter!(
        OUTBOUND_RETRIES,
        "Graph API send attempts retried after a transient error."
    );
    describe_counter!(
        API_REFUSED,
        "Agent API requests answered 503 because server.max_inflight_api were in flight."
    );
    describe_gauge!(CONNECTIONS, "Open client connections.");
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections closed at once by reason (total_cap: server.max_connections and the ops reserve full; peer_cap: server.max_connections_per_peer)."
    );
    describe_counter!(
        CONNECTIONS_TIMED_OUT,
        "Connections closed or requests failed by a read timeout, by phase (idle, head, body)."
    );
    describe_counter!(
        AUTH_FAILURES,
        "Requests with a wrong token (unauthorized) and requests refused 429 because their address failed too often (throttled)."
    );
    describe_counter!(
        AGENT_REFUSED,
        "Agent requests answered 503 because one agent's cap was reached (kind: requests = server.max_inflight_per_agent, streams = server.max_streams_per_agent)."
    );
    describe_counter!(
        BROKER_RESTARTS,
        "Times the broker was restarted in-process because its storage kept failing."
    );
    describe_counter!(
        OUTBOX_AMBIGUOUS,
        "Graph API sends whose outcome was unknown, per number and cause (timeout, connection, \
         no_message_id, restart), each then held for a status callback before being sent again."
    );
    describe_counter!(
        OUTBOX_ADOPTED,
        "Outbound messages, per number, that took their wamid from a status callback naming them \
         (biz_opaque_callback_data) instead of from the Graph API's answer."
    );
    describe_counter!(
        OUTBOX_SENDS,
        "Graph API send attempts the outbox started, per number and lane: reply (agents' and the \
         bot's messages, served first) or campaign (template sends), sharing the number's mps."
    );
    describe_counter!(
        OUTBOX_PAIR_PACED,
        "Outbound sends, per number, that waited for Meta's pair rate (one message to the same \
         user per outbox.pair_interval_ms, bursts of outbox.pair_burst) while other users' sends went on."
    );
    describe_counter!(
        OUTBOX_PAIR_LIMITED,
        "Graph API answers 131056 (pair rate limit hit), per number: the pair then backs off 4^n \
         seconds (n: its consecutive 131056 answers, at most 5), other pairs unaffected."
    );
    describe_counter!(
        READ_RECEIPTS,
        "Read receipts with typing indicator (POST /api/v1/conversations/{id}/read) by outcome: \
         queued, replaced (a newer one took a pending one's place), refused (the number's read \
         queue was full), sent, failed (refused by Meta, its outcome unknown, or out of tries)."
    );
    describe_counter!(
        OUTBOX_SPILLED,
        "Outbound messages kept on disk only because their number's outbox queue was full; the outbox reads them back in order."
    );
    describe_histogram!(
        GRAPH_DURATION,
        Unit::Seconds,
        "Graph API send request duration."
    );
    describe_counter!(
        CLAIMS,
        "Claims by outcome (won, already_assigned, capacity_reached, not_found)."
    );
    describe_counter!(
        BOT_TURNS,
        "Bot turns applied by outcome (answered, resolved, fallback, handover, held: a hand-over waiting for a closed team's opening) or dropped (computed for a state that changed meanwhile, e.g. after a claim)."
    );
    describe_counter!(
        BOT_HANDOVERS,
        "Conversations the bot handed to humans, by reason (keyword, low_confidence, sensitive_intent, max_failed_turns, order_lookup_failed, intent_handover, busy, claimed, window_closed, cod_confirm_failed, hot_lead, team_opened, transferred)."
    );
    describe_counter!(
        BOT_INTENT_HANDOVERS,
        "Conversations the bot handed to humans, by intent (a configured intent id, knowledge or unknown) and reason."
    );
    describe_counter!(
        BOT_CYCLES,
        "Bot cycles ended, by intent (a configured intent id, knowledge or unknown) and outcome: resolved by the bot (contained) or handed_over. Containment rate per intent: resolved / (resolved + handed_over)."
    );
    describe_histogram!(
        BOT_PROVIDER_SECONDS,
        Unit::Seconds,
        "Calls to the OpenAI-compatible intent provider, from request to parsed answer (timeouts and errors included; calls refused for overload are not made and not timed)."
    );
    describe_counter!(
        BOT_PROVIDER_FAILURES,
        "Intent provider calls that gave no usable intent, by reason (timeout, error, garbage, overload); the built-in classifier decided instead."
    );
    describe_gauge!(CONVERSATIONS, "Conversations by status and team.");
    describe_gauge!(LIVE_ACTORS, "Conversation actors currently in memory.");
    describe_counter!(
        SUPERVISED_RESTARTS,
        "Agent and team actors restarted by their guardian after a failure, by kind (agent, team)."
    );
    describe_counter!(
        ACTOR_RESTARTS,
        "Conversation actors restarted from durable state after a panic."
    );
    describe_counter!(
        ACTOR_ACTIVATIONS,
        "Conversation actors activated from storage."
    );
    describe_counter!(
        ACTOR_PASSIVATIONS,
        "Conversation actors stopped while idle (state stays on disk), by reason: idle (conversations.idle_timeout_ms), bound (the idlest, beyond conversations.max_live)."
    );
    describe_histogram!(
        HTTP_DURATION,
        "Time to answer a routed HTTP request, by route template and method (SSE: until the stream opens)."
    );
    describe_gauge!(
        STORE_MEMORY,
        "RocksDB memory by kind (memtables, block_cache, table_readers), set at scrape."
    );
    describe_counter!(
        MAILBOX_FULL,
        "Commands refused because a conversation's mailbox was full (answered unavailable)."
    );
    describe_histogram!(
        STORE_COMMIT_SECONDS,
        Unit::Seconds,
        "Duration of one group commit (write + fsync)."
    );
    describe_histogram!(STORE_GROUP_SIZE, "Commits merged into one group commit.");
    describe_counter!(
        STORE_READS,
        "Storage reads, each one hop to the blocking pool (a thread wake-up and back): what a \
         webhook, a request or an activation waits for besides the group commit."
    );
    describe_gauge!(WEBHOOKS_IN_FLIGHT, "Webhook requests being processed.");
    describe_gauge!(
        API_IN_FLIGHT,
        "Agent API requests being processed (bounded by server.max_inflight_api)."
    );
    describe_gauge!(EVENT_STREAMS, "Open SSE event streams.");
    describe_counter!(API_REQUESTS, "Agent API requests by outcome code.");
    describe_counter!(
        ASSIGNMENTS,
        "Automatic assignments (reason auto) and reassignments (assignee_offline, no_answer, sla_escalation, agent_disabled), by team."
    );
    describe_counter!(
        ROUTED,
        "Conversations placed on a team at creation or reopen, by routing rule (\"default\": no rule matched) and team. Rule names come from the configured rule set."
    );
    describe_gauge!(QUEUE_DEPTH, "Conversations waiting in a team's queue.");
    describe_histogram!(
        OUTBOUND_DELAY,
        Unit::Seconds,
        "From a reply's acceptance (the 202) to the Graph API's outcome for it (accepted or failed), per number: queueing, the number's rate limit and retries included."
    );
    describe_gauge!(
        OUTBOX_PENDING,
        "Replies accepted (durable) and not yet settled with the Graph API, per number: queued, \
         in flight, retrying or waiting on disk."
    );
    describe_gauge!(
        QUEUE_OLDEST_WAIT,
        Unit::Seconds,
        "How long the longest-waiting conversation of a team has waited (0 when none waits)."
    );
    describe_counter!(
        SLA,
        "SLA clocks settled, by team, kind (first_response, next_response, resolution) and outcome (hit, miss)."
    );
    describe_histogram!(
        FIRST_RESPONSE,
        Unit::Seconds,
        "Wall-clock time from a human becoming responsible (creation, reopen) to the first human reply, by team (the team of the reply)."
    );
    describe_histogram!(
        RESOLUTION,
        Unit::Seconds,
        "Wall-clock time from opening (creation or the latest reopen) to resolve, by team (the team it was resolved in)."
    );
    describe_counter!(
        CSAT_ANSWERS,
        "Customer-satisfaction answers (1-5) stored, by team and score."
    );
    describe_counter!(
        MEDIA_FETCHES,
        "Inbound media fetch attempts by outcome: stored, retried (a transient failure or a hash mismatch; tried again later), failed (404 at Meta, id expired, refused, or the bytes never matched their hash)."
    );
    describe_counter!(
        TEMPLATE_SYNCS,
        "Template registry syncs from Meta (start-up and periodic) by outcome: ok, failed (Meta unreachable or refusing; the next sync tries again)."
    );
    describe_gauge!(
        NUMBER_MPS,
        "Outbound messages per second configured for each number (`mps`; default 80, 20 for a coexistence number)."
    );
    describe_gauge!(
        MESSAGING_LIMIT,
        "The portfolio's messaging limit: business-initiated conversations allowed in a rolling 24 h (`whatsapp.messaging_limit`)."
    );
    describe_gauge!(
        BUSINESS_INITIATED_24H,
        "Business-initiated conversations opened in the last 24 h (templates to customers whose customer-service window was closed, once per customer), including sends being committed; at the limit further ones are refused with 429."
    );
    describe_gauge!(
        MEDIA_FETCH_PENDING,
        "Inbound media waiting to be fetched (durable queue), including fetches in progress and retries waiting."
    );
    describe_counter!(
        MEDIA_UPLOADS,
        "Agents' media uploads (POST /api/v1/media) by outcome: stored, too_large, unsupported, error."
    );
    describe_counter!(
        FALLBACKS,
        "Waiting conversations moved from a team that closed to its first open fallback team, by from and to team."
    );
}

/// Every outcome a webhook POST is counted under (`WEBHOOK_REQUESTS`).
pub const WEBHOOK_OUTCOMES: [&str; 7] = [
    "ok",
    "invalid_signature",
    "invalid_json",
    "too_large",
    "timeout",
    "overloaded",
    "error",
];
/// `CLAIMS` outcomes.
pub const CLAIM_OUTCOMES: [&str; 4] = ["won", "already_assigned", "capacity_reached", "not_found"];
/// `BOT_TURNS` outcomes.
pub const BOT_TURN_OUTCOMES: [&str; 6] = [
    "answered", "resolved", "fallback", "handover", "held", "dropped",
];
/// `BOT_HANDOVERS` reasons (`automation::HandoverReason::as_str`).
pub const BOT_HANDOVER_REASONS: [&str; 13] = [
    "keyword",
    "low_confidence",
    "sensitive_intent",
    "max_failed_turns",
    "order_lookup_failed",
    "intent_handover",
    "busy",
    "claimed",
    "window_closed",
    "cod_confirm_failed",
    "hot_lead",
    "team_opened",
    "transferred",
];
/// `BOT_PROVIDER_FAILURES` reasons (`automation::provider::Failure::as_str`).
pub const BOT_PROVIDER_FAILURE_REASONS: [&str; 4] = ["timeout", "error", "garbage", "overload"];
/// `OUTBOUND_MESSAGES` outcomes.
pub const OUTBOUND_OUTCOMES: [&str; 4] = ["queued", "accepted", "failed", "window_closed"];
/// `READ_RECEIPTS` outcomes.
pub const READ_OUTCOMES: [&str; 5] = ["queued", "replaced", "refused", "sent", "failed"];
/// `STATUS_UPDATES` outcomes.
pub const STATUS_OUTCOMES: [&str; 3] = ["applied", "stale", "orphan"];
/// Meta's pricing categories (`BILLABLE_MESSAGES`); any other is counted as [`OTHER_CATEGORY`],
/// so the label stays within a fixed set whatever a webhook says.
pub const PRICING_CATEGORIES: [&str; 7] = [
    "authentication",
    "authentication_international",
    "marketing",
    "marketing_lite",
    "referral_conversion",
    "service",
    "utility",
];
pub const OTHER_CATEGORY: &str = "other";

/// `category` as a `BILLABLE_MESSAGES` label: one of [`PRICING_CATEGORIES`] or
/// [`OTHER_CATEGORY`].
pub fn pricing_category(category: &str) -> &'static str {
    PRICING_CATEGORIES
        .into_iter()
        .find(|c| *c == category)
        .unwrap_or(OTHER_CATEGORY)
}

/// `INBOUND_REACTIONS` outcomes.
pub const REACTION_OUTCOMES: [&str; 3] = ["applied", "removed", "unknown_target"];

/// Every outcome of an inbound media fetch (`MEDIA_FETCHES`).
pub const MEDIA_FETCH_OUTCOMES: [&str; 3] = ["stored", "retried", "failed"];

/// Every outcome of a template sync (`TEMPLATE_SYNCS`).
pub const TEMPLATE_SYNC_OUTCOMES: [&str; 2] = ["ok", "failed"];

/// Every outcome of an agent's upload (`MEDIA_UPLOADS`).
pub const MEDIA_UPLOAD_OUTCOMES: [&str; 4] = ["stored", "too_large", "unsupported", "error"];
/// `ASSIGNMENTS` reasons, per team.
pub const ASSIGNMENT_REASONS: [&str; 5] = [
    "auto",
    "assignee_offline",
    "no_answer",
    "sla_escalation",
    "agent_disabled",
];
/// `SLA` kinds and outcomes, per team.
pub const SLA_KINDS: [&str; 3] = ["first_response", "next_response", "resolution"];
pub const SLA_OUTCOMES: [&str; 2] = ["hit", "miss"];
/// `OUTBOX_AMBIGUOUS` causes, per number.
pub const AMBIGUOUS_CAUSES: [&str; 4] = ["timeout", "connection", "no_message_id", "restart"];
/// `OUTBOX_SENDS` lanes, per number.
pub const OUTBOX_LANES: [&str; 2] = ["reply", "campaign"];
/// `AGENT_REFUSED` kinds.
pub const AGENT_REFUSED_KINDS: [&str; 2] = ["requests", "streams"];

/// Registers every counter and histogram whose label values are known at start-up (fixed sets,
/// every error code in `api_codes`, i.e. `error::Code::ALL`, and the configured `teams` and
/// `numbers`), so `/metrics` shows each series at 0 before the first event: after a restart a
/// dashboard sees the series from the first scrape, and `rate()` has the zero to start from
/// instead of missing the first increment. Idempotent (several
/// brokers share the process-wide recorder in tests). Series whose labels depend on traffic
/// (routing rules, fallback moves, HTTP routes) still appear on first use.
pub fn zero_known_series(api_codes: &[&'static str], teams: &[&str], numbers: &[&str]) {
    use metrics::{counter, histogram};
    for name in [
        INBOUND_MESSAGES,
        INBOUND_DUPLICATES,
        INBOUND_WAMID_CONFLICTS,
        INBOUND_FUTURE_TIMESTAMPS,
        INBOUND_NO_CUSTOMER,
        INBOUND_SYSTEM,
        UNKNOWN_NUMBER,
        APP_ECHOES,
        HISTORY_IMPORTED,
        APP_CONTACT_SYNC,
        CONTACT_CONFLICTS,
        OUTBOUND_RETRIES,
        OUTBOX_SPILLED,
        BROKER_RESTARTS,
        API_REFUSED,
        ACTOR_RESTARTS,
        ACTOR_ACTIVATIONS,
        MAILBOX_FULL,
    ] {
        counter!(name).increment(0);
    }
    for (name, outcomes) in [
        (WEBHOOK_REQUESTS, &WEBHOOK_OUTCOMES[..]),
        (API_REQUESTS, api_codes),
        (CLAIMS, &CLAIM_OUTCOMES[..]),
        (OUTBOUND_MESSAGES, &OUTBOUND_OUTCOMES[..]),
        (STATUS_UPDATES, &STATUS_OUTCOMES[..]),
        (INBOUND_REACTIONS, &REACTION_OUTCOMES[..]),
        (READ_RECEIPTS, &READ_OUTCOMES[..]),
        (MEDIA_FETCHES, &MEDIA_FETCH_OUTCOMES[..]),
        (TEMPLATE_SYNCS, &TEMPLATE_SYNC_OUTCOMES[..]),
        (MEDIA_UPLOADS, &MEDIA_UPLOAD_OUTCOMES[..]),
        (BOT_TURNS, &BOT_TURN_OUTCOMES[..]),
    ] {
        for &outcome in outcomes {
            counter!(name, "outcome" => outcome).increment(0);
        }
    }
    for &reason in &BOT_HANDOVER_REASONS {
        counter!(BOT_HANDOVERS, "reason" => reason).increment(0);
    }
    for &reason in &PASSIVATION_REASONS {
        counter!(ACTOR_PASSIVATIONS, "reason" => reason).increment(0);
    }
    for &reason in &BOT_PROVIDER_FAILURE_REASONS {
        counter!(BOT_PROVIDER_FAILURES, "reason" => reason).increment(0);
    }
    for &kind in &AGENT_REFUSED_KINDS {
        counter!(AGENT_REFUSED, "kind" => kind).increment(0);
    }
    for &team in teams {
        let _ = histogram!(FIRST_RESPONSE, "team" => team.to_owned());
        let _ = histogram!(RESOLUTION, "team" => team.to_owned());
        for &reason in &ASSIGNMENT_REASONS {
            counter!(ASSIGNMENTS, "team" => team.to_owned(), "reason" => reason).increment(0);
        }
        for &kind in &SLA_KINDS {
            for &outcome in &SLA_OUTCOMES {
                counter!(SLA, "team" => team.to_owned(), "kind" => kind, "outcome" => outcome)
                    .increment(0);
            }
        }
    }
    for &number in numbers {
        for &cause in &AMBIGUOUS_CAUSES {
            counter!(OUTBOX_AMBIGUOUS, "number" => number.to_owned(), "cause" => cause)
                .increment(0);
        }
        counter!(OUTBOX_ADOPTED, "number" => number.to_owned()).increment(0);
        counter!(OUTBOX_PAIR_PACED, "number" => number.to_owned()).increment(0);
        counter!(OUTBOX_PAIR_LIMITED, "number" => number.to_owned()).increment(0);
        for lane in OUTBOX_LANES {
            counter!(OUTBOX_SENDS, "number" => number.to_owned(), "lane" => lane).increment(0);
        }
        for category in PRICING_CATEGORIES.into_iter().chain([OTHER_CATEGORY]) {
            counter!(BILLABLE_MESSAGES, "number" => number.to_owned(), "category" => category)
                .increment(0);
        }
        // A registered histogram renders with zero counts until its first sample.
        let _ = histogram!(OUTBOUND_DELAY, "number" => number.to_owned());
    }
    for name in [
        WEBHOOK_DURATION,
        GRAPH_DURATION,
        STORE_COMMIT_SECONDS,
        STORE_GROUP_SIZE,
    ] {
        let _ = histogram!(name);
    }
}
