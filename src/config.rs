//! Typed, validated configuration.
//!
//! The broker reads one TOML file (`--config PATH`, default `config/default.toml`). Everything is
//! checked before anything starts: a bad file stops start-up with exit code 2 and exactly one line
//! that names the offending key, so an operator never has to read a backtrace. Invariants after a
//! successful [`Config::from_toml_str`]:
//! - `server.listen` (and `server.api_listen`, when given) parses as a socket address;
//! - number, team and agent ids and agent tokens are unique and non-empty;
//! - every `default_team` and every agent team names a configured team;
//! - every bound (`mps`, `max_concurrent`, in-flight limits, retry settings) is positive.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::agent::{Caller, Role};
use crate::domain::message::Author;
use crate::domain::policy::TeamPolicy;
use crate::domain::routing::{RuleConfig, RuleSet};
use crate::domain::team::TeamSettings;

/// Whether `c` would end or break the one line of a [`ConfigError`]: a control character, or
/// whitespace other than a plain space (`\u{2028}` ends a line in many terminals and logs).
fn breaks_line(c: char) -> bool {
    c.is_control() || (c.is_whitespace() && c != ' ')
}

/// One line naming the key and the problem.
#[derive(Debug, thiserror::Error)]
#[error("config error: {key}: {problem}")]
pub struct ConfigError {
    /// Dotted path of the offending key, e.g. `agents[1].teams`.
    pub key: String,
    /// What is wrong with it, on one line.
    pub problem: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        let problem: String = problem.into();
        // One line, always: serde and toml messages may carry newlines, and a key is the
        // file's own text (a quoted TOML key may hold any character), so its line breaks and
        // other control characters are written as escapes.
        let problem = problem.split_whitespace().collect::<Vec<_>>().join(" ");
        let key = key
            .into()
            .chars()
            .map(|c| match breaks_line(c) {
                true => c.escape_default().to_string(),
                false => c.to_string(),
            })
            .collect();
        Self { key, problem }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub whatsapp: WhatsAppConfig,
    #[serde(default)]
    pub numbers: Vec<NumberConfig>,
    #[serde(default)]
    pub teams: Vec<TeamConfig>,
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    #[serde(default)]
    pub outbox: OutboxConfig,
    #[serde(default)]
    pub conversations: ConversationsConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub media: MediaConfig,
    #[serde(default)]
    pub csat: CsatConfig,
    /// `[automation]`: the bot in front of the listed teams (absent: no bot).
    #[serde(default)]
    pub automation: Option<crate::automation::AutomationConfig>,
}

/// `[csat]`: after a resolve, ask the customer to rate the help (1–5).
///
/// With `template`, the question is that approved template (in `language`, with the registry's
/// language fallback), sent with a `csat:N` payload on each of its quick-reply buttons (N: the
/// button's title if it is a number 1–5, else its position); a template may go out after the
/// 24-hour window has closed. Without it, or when the template cannot be sent (unknown, not
/// approved, or its body takes parameters), the question is `text`, inside the window only. The
/// answer is the customer's next message if it is a number 1–5, a button reply whose id or
/// payload is `csat:N`, or a button titled `N`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsatConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_csat_text")]
    pub text: String,
    /// The rating template's name (none: the question is `text`).
    #[serde(default)]
    pub template: Option<String>,
    /// The rating template's language.
    #[serde(default = "default_csat_language")]
    pub language: String,
}

impl Default for CsatConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            text: default_csat_text(),
            template: None,
            language: default_csat_language(),
        }
    }
}

fn default_csat_language() -> String {
    "en_US".into()
}

fn default_csat_text() -> String {
    "How would you rate our help? Reply with a number from 1 (poor) to 5 (excellent).".into()
}

/// `[routing]`: rules evaluated in order on a conversation's first message and on reopen.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address for webhooks, the agent API, /metrics and /healthz.
    pub listen: String,
    /// Optional second address serving the same routes on a thread of its own, for agents'
    /// consoles: their claims and replies then never queue behind the webhook traffic on
    /// `listen`'s workers (see `http::lane`).
    #[serde(default)]
    pub api_listen: Option<String>,
    /// Most webhook requests processed at once; beyond it the broker answers 503 + Retry-After.
    #[serde(default = "default_max_inflight_webhooks")]
    pub max_inflight_webhooks: usize,
    /// Most SSE subscribers at once (each holds a buffered channel).
    #[serde(default = "default_max_event_streams")]
    pub max_event_streams: usize,
    /// Most agent-API requests processed at once (event streams, `/metrics` and `/healthz`
    /// apart); beyond it the broker answers 503 + Retry-After.
    #[serde(default = "default_max_inflight_api")]
    pub max_inflight_api: usize,
    /// Time from a request's first byte to the end of its headers (`http::server`).
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// Time a connection may wait for its next request (or its first) before it is closed.
    #[serde(default = "default_server_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Time a request body may take before it must keep up `min_body_rate`.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// Bytes per second a request body must keep up after `body_timeout_ms`.
    #[serde(default = "default_min_body_rate")]
    pub min_body_rate: u64,
    /// Most open client connections (lowered at start-up to fit the open-file limit).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most open connections from one remote address; 0 for no cap (behind a proxy).
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Most event streams one agent holds open at once.
    #[serde(default = "default_max_streams_per_agent")]
    pub max_streams_per_agent: usize,
    /// Most agent-API requests of one agent processed at once.
    #[serde(default = "default_max_inflight_per_agent")]
    pub max_inflight_per_agent: usize,
    /// Failed authentications allowed per remote address and minute (a burst of as many, then
    /// refilled evenly); beyond, requests from that address with a token get 429.
    #[serde(default = "default_auth_failures_per_minute")]
    pub auth_failures_per_minute: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// RocksDB directory, created if missing.
    pub path: PathBuf,
    /// fsync before acknowledging (default true).
    #[serde(default = "default_true")]
    pub sync: bool,
    /// Most commits merged into one write + fsync by the group-commit writer.
    #[serde(default = "default_max_commit_batch")]
    pub max_commit_batch: usize,
    /// A group commit in progress for longer than this makes `/healthz` answer 503 (a hung
    /// disk); it answers 200 again once the commit returns.
    #[serde(default = "default_stall_after_ms")]
    pub stall_after_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppConfig {
    pub app_secret: String,
    pub verify_token: String,
    pub access_token: String,
    pub waba_id: String,
    #[serde(default = "default_graph_api_base")]
    pub graph_api_base: String,
    /// How often the template registry is synced from Meta (and once at start-up).
    #[serde(default = "default_template_sync_interval_secs")]
    pub template_sync_interval_secs: u64,
    /// Business-initiated conversations allowed per rolling 24 h for the whole portfolio (Meta's
    /// messaging limit; see `crate::messaging_limit`).
    #[serde(default = "default_messaging_limit")]
    pub messaging_limit: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberConfig {
    pub phone_number_id: String,
    #[serde(default)]
    pub display_phone_number: String,
    pub default_team: String,
    /// `mps` as the file gives it (None: the default, which depends on `coexistence`).
    #[serde(default, rename = "mps")]
    pub mps_setting: Option<u32>,
    /// Outbound messages per second allowed for this number: `mps` when given, else
    /// [`COEXISTENCE_MPS`] for a coexistence number and [`DEFAULT_MPS`] for any other (set by
    /// [`Config::from_toml_str`] from the two keys; not a key itself).
    #[serde(skip)]
    pub mps: u32,
    /// The number is also used in the WhatsApp Business App (Meta's "coexistence"), where
    /// Meta allows it 20 messages per second.
    #[serde(default)]
    pub coexistence: bool,
    /// Where the number serves (ISO 3166-1 alpha-2, upper case once validated): routing's
    /// `country` for a customer whose own country is unknown (a user id without a country
    /// prefix, a number the phone metadata does not place).
    #[serde(default)]
    pub country: Option<String>,
    /// The number's IANA time zone (e.g. `Europe/Berlin`), validated at start-up.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// The languages the number serves (ISO 639-1, lower case once validated): routing's
    /// `language` when the message's own cannot be detected (no text, too short, a media).
    #[serde(default)]
    pub languages: Vec<String>,
}

/// A number's `mps` when the config gives none.
pub const DEFAULT_MPS: u32 = 80;
/// A coexistence number's `mps` when the config gives none (Meta's throughput for numbers also
/// used in the WhatsApp Business App).
pub const COEXISTENCE_MPS: u32 = 20;

impl NumberConfig {
    /// The `mps` in force: the explicit one, else the default for the kind of number.
    pub fn effective_mps(&self) -> u32 {
        self.mps_setting.unwrap_or(if self.coexistence {
            COEXISTENCE_MPS
        } else {
            DEFAULT_MPS
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct TeamConfig {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(flatten)]
    pub settings: TeamSettings,
    /// Keys neither of the above knows. serde cannot deny unknown keys through a flatten, so
    /// they are collected here (after `settings` took its own) and rejected by validation: a
    /// misspelt `asignment` must not quietly leave the team on the default.
    #[serde(flatten)]
    pub unknown: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub token: String,
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default = "default_role")]
    pub role: Role,
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: u32,
}

impl AgentConfig {
    /// The agent as the domain's permission rules see it.
    pub fn caller(&self) -> Caller {
        Caller {
            id: self.id.clone(),
            role: self.role,
            teams: self.teams.clone(),
        }
    }
}

/// Outbound delivery settings shared by every number's outbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// First retry delay; doubles each attempt, each delay drawn between half and all of it.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    /// Ceiling of the retry delay.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Attempts before a transiently failing message is marked failed.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Graph API requests in flight per number.
    #[serde(default = "default_outbox_in_flight")]
    pub max_in_flight: usize,
    /// Jobs queued in memory per number; beyond that they wait on disk and are read back.
    #[serde(default = "default_outbox_queue")]
    pub queue_capacity: usize,
    /// Timeout of one Graph API request.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// How long a send whose outcome is unknown (it may have reached Meta) waits for a status
    /// callback naming it before it is sent again.
    #[serde(default = "default_ambiguous_hold_ms")]
    pub ambiguous_hold_ms: u64,
    /// Meta's pair rate: one message to the same user per this many milliseconds…
    #[serde(default = "default_pair_interval_ms")]
    pub pair_interval_ms: u64,
    /// …with bursts of up to this many (`outbox::pairs`).
    #[serde(default = "default_pair_burst")]
    pub pair_burst: u32,
    /// A 131056 answer backs its pair off 4^n times this (n: consecutive 131056 answers).
    #[serde(default = "default_pair_backoff_ms")]
    pub pair_backoff_ms: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            retry_base_ms: default_retry_base_ms(),
            retry_max_ms: default_retry_max_ms(),
            max_attempts: default_max_attempts(),
            max_in_flight: default_outbox_in_flight(),
            queue_capacity: default_outbox_queue(),
            request_timeout_ms: default_request_timeout_ms(),
            ambiguous_hold_ms: default_ambiguous_hold_ms(),
            pair_interval_ms: default_pair_interval_ms(),
            pair_burst: default_pair_burst(),
            pair_backoff_ms: default_pair_backoff_ms(),
        }
    }
}

/// Where media bytes are kept and how inbound media is fetched (`crate::media`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// `local` (a directory) or `s3` (any S3-compatible store).
    #[serde(default)]
    pub backend: MediaBackend,
    /// `local`: the directory; default `<storage.path>/media`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `s3`: the bucket (required), and optionally the endpoint (for stores other than AWS),
    /// region, credentials (else the usual `AWS_*` environment) and whether plain HTTP is allowed.
    #[serde(default)]
    pub bucket: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub allow_http: bool,
    /// Inbound fetches running at once (each streams one file).
    #[serde(default = "default_media_fetches")]
    pub max_concurrent_fetches: usize,
    /// First retry delay of a failed fetch; doubles per attempt, with jitter.
    #[serde(default = "default_media_retry_base_ms")]
    pub retry_base_ms: u64,
    /// Ceiling of the fetch retry delay.
    #[serde(default = "default_media_retry_max_ms")]
    pub retry_max_ms: u64,
    /// A media request (Meta's media endpoints, a download, an upload) fails when no byte moves
    /// for this long; a large file may take longer in all.
    #[serde(default = "default_media_read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// Nice value (0 to 19) of the threads that download inbound media: above 0 they yield the
    /// cores to ingest and the API under load, and the durable queue absorbs the difference.
    #[serde(default = "default_media_fetch_nice")]
    pub fetch_nice: u8,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaBackend {
    #[default]
    Local,
    S3,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            backend: MediaBackend::Local,
            path: None,
            bucket: None,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
            max_concurrent_fetches: default_media_fetches(),
            retry_base_ms: default_media_retry_base_ms(),
            retry_max_ms: default_media_retry_max_ms(),
            read_timeout_ms: default_media_read_timeout_ms(),
            fetch_nice: default_media_fetch_nice(),
        }
    }
}

fn default_media_fetches() -> usize {
    8
}
fn default_media_retry_base_ms() -> u64 {
    1_000
}
/// An hour: a media id lives 7 days, so even a day-long outage leaves many tries.
fn default_media_retry_max_ms() -> u64 {
    3_600_000
}
fn default_media_read_timeout_ms() -> u64 {
    30_000
}
/// Weight 110 against ingest's 1024: about a tenth of a busy core, all of an idle one.
fn default_media_fetch_nice() -> u8 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationsConfig {
    /// A conversation actor with no activity for this long is stopped; its state stays on disk.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Most conversation actors in memory at once: beyond it the idlest are stopped first (down
    /// to nine tenths of it), however recently they were active (see `actors::Ctx::over_bound`).
    #[serde(default = "default_max_live")]
    pub max_live: usize,
}

impl Default for ConversationsConfig {
    fn default() -> Self {
        Self {
            idle_timeout_ms: default_idle_timeout_ms(),
            max_live: default_max_live(),
        }
    }
}

/// Sized for 1 GiB: ~1.2 KB of RSS a live actor (BENCHMARKS.md, memory) is ~0.25 GB, leaving
/// the rest to RocksDB's memtables and block cache and to passivated conversations (their
/// queue entries, contact cache), with a million distinct customers in ten minutes.
fn default_max_live() -> usize {
    200_000
}

fn default_true() -> bool {
    true
}
fn default_max_inflight_webhooks() -> usize {
    1024
}
fn default_max_event_streams() -> usize {
    1024
}
fn default_max_inflight_api() -> usize {
    1024
}
fn default_header_timeout_ms() -> u64 {
    10_000
}
fn default_server_idle_timeout_ms() -> u64 {
    60_000
}
fn default_body_timeout_ms() -> u64 {
    10_000
}
fn default_min_body_rate() -> u64 {
    1024
}
fn default_max_connections() -> usize {
    16_384
}
fn default_max_connections_per_peer() -> usize {
    2048
}
fn default_max_streams_per_agent() -> usize {
    16
}
fn default_max_inflight_per_agent() -> usize {
    64
}
fn default_auth_failures_per_minute() -> u32 {
    60
}
fn default_max_commit_batch() -> usize {
    2048
}
fn default_stall_after_ms() -> u64 {
    10_000
}
fn default_graph_api_base() -> String {
    "https://graph.facebook.com/v25.0".to_string()
}
fn default_template_sync_interval_secs() -> u64 {
    15 * 60
}
fn default_messaging_limit() -> u32 {
    1000
}
fn default_role() -> Role {
    Role::Agent
}
fn default_max_concurrent() -> u32 {
    5
}
fn default_retry_base_ms() -> u64 {
    500
}
fn default_retry_max_ms() -> u64 {
    60_000
}
fn default_max_attempts() -> u32 {
    // With the default back-off (0.5 s doubling to 60 s) about 70 minutes of retrying (at least
    // 46): a Graph outage or a long 130429 throttle fails no accepted reply unless it lasts
    // longer.
    100
}
fn default_outbox_in_flight() -> usize {
    64
}
fn default_outbox_queue() -> usize {
    10_000
}
/// Meta sends the `sent` callback within seconds of taking a message; half a minute leaves room
/// for its webhook retries while keeping a lost send's delay short.
fn default_ambiguous_hold_ms() -> u64 {
    30_000
}
/// Meta: about one message every 6 seconds to one user, bursts of up to 45 in 6 seconds
/// borrowed from the time that follows (`outbox::pairs`).
fn default_pair_interval_ms() -> u64 {
    6_000
}
fn default_pair_burst() -> u32 {
    45
}
/// Meta's advice for 131056: retry after 4^n seconds.
fn default_pair_backoff_ms() -> u64 {
    1_000
}
fn default_request_timeout_ms() -> u64 {
    10_000
}
fn default_idle_timeout_ms() -> u64 {
    300_000
}

/// A `[[teams]]` entry's settings are flattened into it, and serde loses the path inside a
/// flatten: an error in `assignment` is reported at `teams[2]`. When `key` is such a path, the
/// entry's settings are deserialized again on their own to name the key (`teams[2].assignment`).
fn team_setting_error(text: &str, key: &str) -> Option<ConfigError> {
    let index: usize = key
        .strip_prefix("teams[")?
        .strip_suffix(']')?
        .parse()
        .ok()?;
    let root: toml::Table = toml::from_str(text).ok()?;
    let mut team = root
        .get("teams")?
        .as_array()?
        .get(index)?
        .as_table()?
        .clone();
    team.remove("id");
    team.remove("name");
    let err =
        serde_path_to_error::deserialize::<_, TeamSettings>(toml::Value::Table(team)).err()?;
    let inner = err.path().to_string();
    (!inner.is_empty() && inner != ".")
        .then(|| ConfigError::new(format!("{key}.{inner}"), err.into_inner().to_string()))
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("--config", format!("cannot read {}: {e}", path.display()))
        })?;
        Self::from_toml_str(&text)
    }

    /// Parses and validates TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let syntax = |e: toml::de::Error| {
            let key = match e.span() {
                Some(span) => format!("line {}", line_of(text, span.start)),
                None => "(file)".to_string(),
            };
            ConfigError::new(key, e.message())
        };
        let de = toml::Deserializer::parse(text).map_err(syntax)?;
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let top = path.is_empty() || path == ".";
            let key = if top {
                match inner.span() {
                    Some(span) => format!("line {}", line_of(text, span.start)),
                    None => "(file)".to_string(),
                }
            } else {
                path
            };
            let e = team_setting_error(text, &key)
                .unwrap_or_else(|| ConfigError::new(key, inner.message()));
            match unknown_field(&e.problem) {
                // The path names the unknown key itself; at the top level there may be none.
                Some(field) if top => ConfigError::new(field, "unknown key"),
                Some(field) if !(e.key == field || e.key.ends_with(&format!(".{field}"))) => {
                    ConfigError::new(format!("{}.{field}", e.key), "unknown key")
                }
                Some(_) => ConfigError::new(e.key, "unknown key"),
                None => e,
            }
        })?;
        for n in &mut config.numbers {
            n.mps = n.effective_mps();
        }
        config.validate()?;
        // Codes compared as the detectors write them (validated above in any case).
        for n in &mut config.numbers {
            n.country = n.country.take().map(|c| c.to_ascii_uppercase());
            for l in &mut n.languages {
                l.make_ascii_lowercase();
            }
        }
        Ok(config)
    }

    /// The listen address, already validated.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|_| {
            ConfigError::new(
                "server.listen",
                format!("bad address {:?}", self.server.listen),
            )
        })
    }

    /// The agents' listen address, when configured; already validated.
    pub fn api_listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let Some(raw) = &self.server.api_listen else {
            return Ok(None);
        };
        raw.parse()
            .map(Some)
            .map_err(|_| ConfigError::new("server.api_listen", format!("bad address {raw:?}")))
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.conversations.idle_timeout_ms)
    }

    pub fn number(&self, phone_number_id: &str) -> Option<&NumberConfig> {
        self.numbers
            .iter()
            .find(|n| n.phone_number_id == phone_number_id)
    }

    pub fn team_exists(&self, id: &str) -> bool {
        self.teams.iter().any(|t| t.id == id)
    }

    pub fn agent(&self, id: &str) -> Option<&AgentConfig> {
        self.agents.iter().find(|a| a.id == id)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.api_listen_addr()?;
        if self.storage.path.as_os_str().is_empty() {
            return Err(ConfigError::new("storage.path", "must not be empty"));
        }
        positive(
            "storage.max_commit_batch",
            self.storage.max_commit_batch as u64,
        )?;
        positive("storage.stall_after_ms", self.storage.stall_after_ms)?;
        if let Some(a) = &self.automation {
            a.validate()
                .map_err(|(key, problem)| ConfigError::new(format!("automation.{key}"), problem))?;
            for (i, t) in a.teams.iter().enumerate() {
                if !self.team_exists(t) {
                    return Err(ConfigError::new(
                        format!("automation.teams[{i}]"),
                        format!("unknown team {t:?}"),
                    ));
                }
            }
            if let Some(l) = a.leads.as_ref().filter(|l| !self.team_exists(&l.team)) {
                return Err(ConfigError::new(
                    "automation.leads.team",
                    format!("unknown team {:?}", l.team),
                ));
            }
        }
        if self.csat.enabled && self.csat.text.trim().is_empty() {
            return Err(ConfigError::new("csat.text", "must not be blank"));
        }
        if let Some(t) = &self.csat.template {
            if t.is_empty()
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(ConfigError::new(
                    "csat.template",
                    "a template name: lowercase letters, digits and underscores",
                ));
            }
            if self.csat.language.trim().is_empty() {
                return Err(ConfigError::new("csat.language", "must not be blank"));
            }
        }
        positive(
            "media.max_concurrent_fetches",
            self.media.max_concurrent_fetches as u64,
        )?;
        positive("media.retry_base_ms", self.media.retry_base_ms)?;
        positive("media.retry_max_ms", self.media.retry_max_ms)?;
        positive("media.read_timeout_ms", self.media.read_timeout_ms)?;
        if self.media.fetch_nice > 19 {
            return Err(ConfigError::new("media.fetch_nice", "must be 0 to 19"));
        }
        if self.media.backend == MediaBackend::S3
            && self.media.bucket.as_deref().is_none_or(str::is_empty)
        {
            return Err(ConfigError::new(
                "media.bucket",
                "required when media.backend = \"s3\"",
            ));
        }
        positive(
            "server.max_inflight_webhooks",
            self.server.max_inflight_webhooks as u64,
        )?;
        positive(
            "server.max_event_streams",
            self.server.max_event_streams as u64,
        )?;
        positive(
            "server.max_inflight_api",
            self.server.max_inflight_api as u64,
        )?;
        positive("server.header_timeout_ms", self.server.header_timeout_ms)?;
        positive("server.idle_timeout_ms", self.server.idle_timeout_ms)?;
        positive("server.body_timeout_ms", self.server.body_timeout_ms)?;
        positive("server.min_body_rate", self.server.min_body_rate)?;
        positive("server.max_connections", self.server.max_connections as u64)?;
        positive(
            "server.max_streams_per_agent",
            self.server.max_streams_per_agent as u64,
        )?;
        positive(
            "server.max_inflight_per_agent",
            self.server.max_inflight_per_agent as u64,
        )?;
        positive(
            "server.auth_failures_per_minute",
            u64::from(self.server.auth_failures_per_minute),
        )?;
        if self.whatsapp.app_secret.is_empty() {
            return Err(ConfigError::new("whatsapp.app_secret", "must not be empty"));
        }
        if !(self.whatsapp.graph_api_base.starts_with("http://")
            || self.whatsapp.graph_api_base.starts_with("https://"))
        {
            return Err(ConfigError::new(
                "whatsapp.graph_api_base",
                format!("not an http(s) URL: {:?}", self.whatsapp.graph_api_base),
            ));
        }
        positive(
            "whatsapp.template_sync_interval_secs",
            self.whatsapp.template_sync_interval_secs,
        )?;
        positive(
            "whatsapp.messaging_limit",
            u64::from(self.whatsapp.messaging_limit),
        )?;
        positive("outbox.retry_base_ms", self.outbox.retry_base_ms)?;
        positive("outbox.retry_max_ms", self.outbox.retry_max_ms)?;
        positive("outbox.max_attempts", self.outbox.max_attempts as u64)?;
        positive("outbox.max_in_flight", self.outbox.max_in_flight as u64)?;
        positive("outbox.queue_capacity", self.outbox.queue_capacity as u64)?;
        positive("outbox.pair_interval_ms", self.outbox.pair_interval_ms)?;
        positive("outbox.pair_burst", u64::from(self.outbox.pair_burst))?;
        positive("outbox.pair_backoff_ms", self.outbox.pair_backoff_ms)?;
        positive("outbox.request_timeout_ms", self.outbox.request_timeout_ms)?;
        positive(
            "conversations.idle_timeout_ms",
            self.conversations.idle_timeout_ms,
        )?;
        positive("conversations.max_live", self.conversations.max_live as u64)?;

        let mut teams = HashSet::new();
        for (i, t) in self.teams.iter().enumerate() {
            id_ok(&format!("teams[{i}].id"), &t.id)?;
            if let Some(key) = t.unknown.keys().next() {
                return Err(ConfigError::new(format!("teams[{i}].{key}"), "unknown key"));
            }
            if !teams.insert(t.id.as_str()) {
                return Err(ConfigError::new(
                    format!("teams[{i}].id"),
                    format!("duplicate team id {:?}", t.id),
                ));
            }
        }
        let mut numbers = HashSet::new();
        for (i, n) in self.numbers.iter().enumerate() {
            id_ok(&format!("numbers[{i}].phone_number_id"), &n.phone_number_id)?;
            if !numbers.insert(n.phone_number_id.as_str()) {
                return Err(ConfigError::new(
                    format!("numbers[{i}].phone_number_id"),
                    format!("duplicate number {:?}", n.phone_number_id),
                ));
            }
            if !teams.contains(n.default_team.as_str()) {
                return Err(ConfigError::new(
                    format!("numbers[{i}].default_team"),
                    format!("unknown team {:?}", n.default_team),
                ));
            }
            positive(&format!("numbers[{i}].mps"), n.mps as u64)?;
            if let Some(country) = &n.country {
                if !crate::domain::detect::is_region(&country.to_ascii_uppercase()) {
                    return Err(ConfigError::new(
                        format!("numbers[{i}].country"),
                        format!("{country:?} is not an ISO 3166-1 alpha-2 country code"),
                    ));
                }
            }
            if let Some(tz) = &n.time_zone {
                if tz.parse::<chrono_tz::Tz>().is_err() {
                    return Err(ConfigError::new(
                        format!("numbers[{i}].time_zone"),
                        format!("{tz:?} is not an IANA time zone (e.g. \"Europe/Berlin\")"),
                    ));
                }
            }
            let supported = crate::domain::detect::supported_languages();
            for l in &n.languages {
                if !supported.contains(&l.to_ascii_lowercase().as_str()) {
                    return Err(ConfigError::new(
                        format!("numbers[{i}].languages"),
                        format!("{l:?} is not an ISO 639-1 code the language detector can produce"),
                    ));
                }
            }
        }
        let mut agents = HashSet::new();
        let mut tokens = HashSet::new();
        for (i, a) in self.agents.iter().enumerate() {
            id_ok(&format!("agents[{i}].id"), &a.id)?;
            if Author::is_reserved(&a.id) {
                // Messages name their author by id; this one would pass for the broker's own.
                return Err(ConfigError::new(
                    format!("agents[{i}].id"),
                    format!("{:?} is reserved for the broker's own messages", a.id),
                ));
            }
            if !agents.insert(a.id.as_str()) {
                return Err(ConfigError::new(
                    format!("agents[{i}].id"),
                    format!("duplicate agent id {:?}", a.id),
                ));
            }
            if a.token.is_empty() {
                return Err(ConfigError::new(
                    format!("agents[{i}].token"),
                    "must not be empty",
                ));
            }
            if !tokens.insert(a.token.as_str()) {
                return Err(ConfigError::new(
                    format!("agents[{i}].token"),
                    "duplicate token (every agent needs its own)",
                ));
            }
            for team in &a.teams {
                if !teams.contains(team.as_str()) {
                    return Err(ConfigError::new(
                        format!("agents[{i}].teams"),
                        format!("unknown team {team:?}"),
                    ));
                }
            }
            positive(
                &format!("agents[{i}].max_concurrent"),
                a.max_concurrent as u64,
            )?;
        }
        let team_exists = |t: &str| teams.contains(t);
        for (i, t) in self.teams.iter().enumerate() {
            TeamPolicy::compile(&t.settings, &team_exists)
                .map_err(|e| ConfigError::new(format!("teams[{i}].{}", e.key), e.problem))?;
        }
        RuleSet::compile(self.routing.rules.clone(), &team_exists).map_err(|e| {
            ConfigError::new(
                format!("routing.rules[{}].{}", e.index, e.key),
                format!("rule {:?}: {}", e.name, e.problem),
            )
        })?;
        Ok(())
    }
}

fn positive(key: &str, v: u64) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(ConfigError::new(key, "must be greater than 0"));
    }
    Ok(())
}

/// Ids become parts of storage keys separated by NUL, and appear in URLs.
fn id_ok(key: &str, id: &str) -> Result<(), ConfigError> {
    if id.is_empty() {
        return Err(ConfigError::new(key, "must not be empty"));
    }
    if id
        .chars()
        .any(|c| c.is_control() || c == '/' || c.is_whitespace())
    {
        return Err(ConfigError::new(
            key,
            format!("{id:?} may not contain spaces, '/' or control characters"),
        ));
    }
    Ok(())
}

/// The key serde's `deny_unknown_fields` refused (its message is "unknown field `snyc`,
/// expected one of …"): every table but `[[teams]]` (see [`TeamConfig::unknown`]) refuses keys
/// it does not know, so a misspelt `storage.snyc` never leaves a setting quietly on its default.
fn unknown_field(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split('`').next()
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map(|s| s.matches('\n').count() + 1)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[server]
listen = "127.0.0.1:0"
[storage]
path = "/tmp/x"
[whatsapp]
app_secret = "s"
verify_token = "v"
access_token = "a"
waba_id = "w"
[[numbers]]
phone_number_id = "1"
default_team = "support"
[[teams]]
id = "support"
"#;

    #[test]
    fn defaults_apply() {
        let c = Config::from_toml_str(BASE).expect("valid");
        assert!(c.storage.sync);
        assert_eq!(c.numbers[0].mps, 80);
        assert!(!c.numbers[0].coexistence);
    }

    #[test]
    fn a_coexistence_number_defaults_to_20_mps_and_an_explicit_mps_wins() {
        let number = |extra: &str| {
            let text = BASE.replace(
                "default_team = \"support\"\n",
                &format!("default_team = \"support\"\n{extra}\n"),
            );
            Config::from_toml_str(&text).map(|c| c.numbers[0].clone())
        };
        let n = number("coexistence = true").expect("valid");
        assert!(n.coexistence);
        assert_eq!(n.mps, 20);
        assert_eq!(
            number("coexistence = true\nmps = 35").expect("valid").mps,
            35
        );
        assert_eq!(number("coexistence = false").expect("valid").mps, 80);
        assert_eq!(number("mps = 7").expect("valid").mps, 7);
        let e = number("coexistence = true\nmps = 0").unwrap_err();
        assert_eq!(e.key, "numbers[0].mps");
        let e = number("coexistence = \"yes\"").unwrap_err();
        assert!(e.key.contains("coexistence"), "{e}");
    }

    #[test]
    fn unknown_team_in_agent_names_key() {
        let text = format!("{BASE}\n[[agents]]\nid = \"a\"\ntoken = \"t\"\nteams = [\"nope\"]\n");
        let e = Config::from_toml_str(&text).unwrap_err();
        assert_eq!(e.key, "agents[0].teams");
        assert!(e.to_string().contains("nope"));
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn missing_field_names_path() {
        let e = Config::from_toml_str("[server]\n").unwrap_err();
        assert!(
            e.to_string().contains("storage") || e.to_string().contains("listen"),
            "{e}"
        );
    }

    #[test]
    fn an_agent_may_not_take_the_system_authors_id() {
        let agent = |id: &str| format!("{BASE}\n[[agents]]\nid = \"{id}\"\ntoken = \"t\"\n");
        let e = Config::from_toml_str(&agent("system")).unwrap_err();
        assert_eq!(e.key, "agents[0].id");
        assert!(e.problem.contains("reserved"), "{e}");
        Config::from_toml_str(&agent("systems")).expect("only the exact id is reserved");
    }

    #[test]
    fn bad_listen() {
        let e = Config::from_toml_str(&BASE.replace("127.0.0.1:0", "nowhere")).unwrap_err();
        assert_eq!(e.key, "server.listen");
    }

    #[test]
    fn bad_api_listen() {
        let text = BASE.replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\napi_listen = \"agents\"",
        );
        let e = Config::from_toml_str(&text).unwrap_err();
        assert_eq!(e.key, "server.api_listen");
        assert!(!e.to_string().contains('\n'));
        let ok = BASE.replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"",
        );
        let c = Config::from_toml_str(&ok).expect("valid");
        assert!(matches!(c.api_listen_addr(), Ok(Some(_))));
    }

    #[test]
    fn wrong_type_names_key() {
        let e = Config::from_toml_str(
            &BASE.replace("path = \"/tmp/x\"", "path = \"/tmp/x\"\nsync = \"yes\""),
        )
        .unwrap_err();
        assert_eq!(e.key, "storage.sync");
    }
}
