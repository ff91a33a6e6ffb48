//! Command-line interface and argument validation.
//!
//! `Cli` is what clap parses (its doc comments are the `--help` text); `Settings` is the validated,
//! typed form the rest of the crate uses. Invariants established here and relied on elsewhere:
//! every ratio is in `[0, 1]`, durations are finite and positive, the target is either a broker we
//! start (`Target::Spawn`) or one that is already running at a loopback URL (`Target::External`),
//! never both, and no URL we will send traffic to points outside the loopback range.
//! Validation failures are reported as `UsageError` and become exit code 2.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::agents::ClaimMode;
use crate::baseline::BaselineMode;

/// Upper bound of --baseline-rounds: each round is two slices of at least duration/N.
const MAX_BASELINE_ROUNDS: u32 = 100;

const LONG_ABOUT: &str = "\
Load generator, chaos driver and auditor for the Switchboard broker.

It sends Meta-style signed WhatsApp webhooks (new messages, batches, Meta redeliveries and status
callbacks) at an open-loop target rate, runs simulated agents that follow the broker's SSE event
stream and race to claim, answer and resolve conversations, serves a fake Graph API that receives
the broker's replies (optionally throttling them with Meta's 130429 error), can SIGKILL and restart
the broker mid-run, and finally audits the broker's stored state through its API.

Latency of webhooks is measured from each request's *intended* send time (no coordinated
omission). --rate 0 switches to closed-loop maximum throughput with --connections workers.
--campaign N measures template campaigns instead (no webhook load, no audit); --mixed runs the
campaign beside the inbound run, a peak hour on one broker.

Target: either --broker-bin PATH (the load test generates a config, picks free loopback ports,
starts the broker, waits for /healthz and kills it at the end) or --url of a running broker
(loopback only) plus --app-secret, --admin-token and --agent-token values matching its config;
--print-config writes a matching config for that case.

Exit status: 0 when the audit passes, 1 when it fails (or the run could not complete),
2 for bad arguments.";

const EXAMPLES: &str = "\
Examples:
  # CI smoke: start the broker, crash it halfway, audit
  switchboard-loadtest --broker-bin target/debug/switchboard --rate 200 --duration 3 \\
      --agents 4 --customers 50 --numbers 2 --crash-after 1.5 --json /tmp/x.json

  # throughput against a trivial HTTP server, closed loop
  switchboard-loadtest --broker-bin target/release/switchboard --rate 0 --duration 10 --baseline

  # the same in 5 alternating rounds (baseline 4 s, broker 4 s, ...), steadier on a noisy machine
  switchboard-loadtest --broker-bin target/release/switchboard --rate 0 --duration 20 \\
      --agents 0 --baseline --baseline-rounds 5

  # a peak hour on one broker: webhooks, agents claiming and replying, a campaign over 20 numbers
  switchboard-loadtest --broker-bin target/release/switchboard --mixed --rate 2000 --duration 30 \\
      --agents 20 --campaign 20000 --numbers 20 --mps 100

  # a broker you started yourself
  switchboard-loadtest --print-config --graph-port 18090 > lt.toml
  switchboard --config lt.toml &
  switchboard-loadtest --url http://127.0.0.1:8080 --graph-port 18090 \\
      --agent-token lt-token-1 --agent-token lt-token-2";

/// Parsed command line (see `--help`).
#[derive(Parser, Debug, Clone)]
#[command(name = "switchboard-loadtest", version, about = "Load generator, chaos driver and auditor for the Switchboard broker", long_about = LONG_ABOUT, after_help = EXAMPLES)]
pub struct Cli {
    /// Base URL of an already running broker, e.g. http://127.0.0.1:8080 (loopback addresses only).
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "broker_bin",
        help_heading = "Target"
    )]
    pub url: Option<String>,

    /// Base URL the simulated agents use, when the broker serves them on a listener of their own
    /// (`server.api_listen`); default: --url. With --broker-bin the generated config always
    /// gives the agents their own listener.
    #[arg(long, value_name = "URL", requires = "url", help_heading = "Target")]
    pub agent_url: Option<String>,

    /// Path of the `switchboard` binary: the load test generates a config, starts it on a free
    /// loopback port, waits for GET /healthz and kills it at the end.
    #[arg(long, value_name = "PATH", help_heading = "Target")]
    pub broker_bin: Option<PathBuf>,

    /// Storage directory for a broker started with --broker-bin (default: a fresh temporary
    /// directory, deleted at the end unless --keep-data or the audit fails). The generated config
    /// and the broker's log (broker.log) are written there too; RocksDB goes to DIR/db.
    #[arg(long, value_name = "DIR", help_heading = "Target")]
    pub data_dir: Option<PathBuf>,

    /// Keep the temporary data directory (config, RocksDB files, broker.log) after the run.
    #[arg(long, help_heading = "Target")]
    pub keep_data: bool,

    /// HMAC key used to sign webhooks (must equal the broker's whatsapp.app_secret).
    #[arg(long, default_value = "lt-app-secret", help_heading = "Target")]
    pub app_secret: String,

    /// Verify token written into a generated config.
    #[arg(long, default_value = "lt-verify-token", help_heading = "Target")]
    pub verify_token: String,

    /// Graph API bearer token: written into a generated config and required by the fake Graph API.
    #[arg(long, default_value = "lt-access-token", help_heading = "Target")]
    pub access_token: String,

    /// Bearer token of an `admin` agent, used for the end-of-run audit.
    #[arg(long, default_value = "lt-admin", help_heading = "Target")]
    pub admin_token: String,

    /// Bearer token of a simulated agent (repeat for several). Only with --url; a started broker
    /// gets generated tokens lt-token-1..K.
    #[arg(long = "agent-token", value_name = "TOKEN", help_heading = "Target")]
    pub agent_tokens: Vec<String>,

    /// Loopback port of the built-in fake Graph API (0 = any free port). With --url, the broker's
    /// graph_api_base must point at http://127.0.0.1:PORT.
    #[arg(long, default_value_t = 0, help_heading = "Target")]
    pub graph_port: u16,

    /// Print the broker config this run would generate (for --url runs) and exit.
    #[arg(long, help_heading = "Target")]
    pub print_config: bool,

    /// Target webhook rate in requests per second (open loop); 0 = closed-loop maximum throughput
    /// with --connections workers.
    #[arg(long, default_value_t = 100.0, help_heading = "Load")]
    pub rate: f64,

    /// How long to generate load, in seconds.
    #[arg(long, default_value_t = 10.0, help_heading = "Load")]
    pub duration: f64,

    /// Most webhook requests in flight at once. When all are busy, requests wait; their latency
    /// still counts from their intended send time.
    #[arg(long, default_value_t = 64, help_heading = "Load")]
    pub connections: usize,

    /// Number of simulated customers (each writes to one business number). Default: a real
    /// peak's, where a customer writes at most every few seconds: `--rate` x
    /// 5 s (10,000/s means 50,000 customers), at least 1,000; 1,000 with `--rate 0`.
    #[arg(long, help_heading = "Load")]
    pub customers: Option<usize>,

    /// Number of business phone numbers the customers are spread across.
    #[arg(long, default_value_t = 2, help_heading = "Load")]
    pub numbers: usize,

    /// Share of webhooks that are Meta redeliveries: an already acknowledged body re-sent byte for
    /// byte.
    #[arg(long, default_value_t = 0.05, help_heading = "Load")]
    pub duplicate_ratio: f64,

    /// Share of customers who are username-only: Meta gives their business-scoped user id
    /// (`from_user_id`, the contact's `user_id` and `profile.username`) and no phone; the broker
    /// keys their conversation by that id and replies to it by `recipient`.
    #[arg(long, default_value_t = 0.0, help_heading = "Load")]
    pub username_share: f64,

    /// Share of webhooks that carry several messages (possibly for several customers and numbers,
    /// across several entries/changes).
    #[arg(long, default_value_t = 0.1, help_heading = "Load")]
    pub batch_ratio: f64,

    /// Most messages in one batched webhook.
    #[arg(long, default_value_t = 5, help_heading = "Load")]
    pub max_batch: usize,

    /// Share of new messages that are images (e.g. 0.1): the broker fetches each one's media
    /// from the built-in fake Graph API (`GET /{media-id}`, then its URL) and checks its sha256.
    #[arg(long, default_value_t = 0.0, help_heading = "Load")]
    pub media_share: f64,

    /// Bot traffic: `[automation]` on for every team of the generated config, and customer texts
    /// drawn from the bot's intents (most answered by the bot, some handed over to agents).
    #[arg(long, help_heading = "Load")]
    pub bot: bool,

    /// With --bot: the same texts, but the config without `[automation]` (the comparison run).
    #[arg(long, requires = "bot", help_heading = "Load")]
    pub no_automation: bool,

    /// How many times a webhook that was not acknowledged (connection error, 503, timeout) is
    /// delivered again with back-off, as Meta does.
    #[arg(long, default_value_t = 6, help_heading = "Load")]
    pub redeliveries: u32,

    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 10.0, help_heading = "Load")]
    pub request_timeout: f64,

    /// Seed for the payload generator (default: random).
    #[arg(long, help_heading = "Load")]
    pub seed: Option<u64>,

    /// Number of simulated agents (default: the number of --agent-token values, or 8 when the
    /// broker is started by the load test).
    #[arg(long, help_heading = "Agents")]
    pub agents: Option<usize>,

    /// How many agents race to claim each queued conversation.
    #[arg(long, default_value_t = 3, help_heading = "Agents")]
    pub claim_race: usize,

    /// How agents claim: `paced` (one claim at a time per agent, oldest queued conversation
    /// first, pausing while the broker says the agent is at capacity, as a person working a
    /// queue does) or `eager` (every queued conversation claimed the moment the event arrives,
    /// all at once: a stress mode whose bursts of mostly refused claims dominate claim latency).
    #[arg(long, value_enum, default_value_t = ClaimMode::Paced, help_heading = "Agents")]
    pub claim_mode: ClaimMode,

    /// How long the winning agent waits after its reply before resolving, in milliseconds.
    #[arg(long, default_value_t = 200, help_heading = "Agents")]
    pub resolve_after_ms: u64,

    /// Event types the agents subscribe to (the broker's `GET /api/v1/events?types=`), e.g.
    /// `conversation.*,message.status` to skip every inbound message's event, as a console that
    /// only watches the queue would. Default: the full stream.
    #[arg(long, help_heading = "Agents")]
    pub event_types: Option<String>,

    /// Share of replies the agent sends a second time with the same idempotency key, checking the
    /// broker answers with the same message and sends nothing.
    #[arg(long, default_value_t = 0.1, help_heading = "Agents")]
    pub replay_ratio: f64,

    /// max_concurrent of each generated agent.
    #[arg(long, default_value_t = 50, help_heading = "Agents")]
    pub max_concurrent: u32,

    /// Open this many event streams (`GET /api/v1/events`) of agents created through the admin
    /// API at the start, spread evenly over `--teams` teams, on one connection pool; each checks
    /// it saw every inbound message its team may see, with latency from the webhook's 200 (see
    /// `fanout`). Needs `--agents 0` (the default with this flag): nobody claims, so every
    /// conversation stays queued and visible to its whole team.
    #[arg(long, value_name = "N", default_value_t = 0, help_heading = "Agents")]
    pub sse_agents: usize,

    /// Teams of a `--sse-agents` run: numbers route to `team1..T` in turn (their count is
    /// raised to T when below), so each message's team is known from its customer.
    #[arg(long, value_name = "T", default_value_t = 10, help_heading = "Agents")]
    pub teams: usize,

    /// Share of fake Graph API sends answered with HTTP 400 and Meta's 130429 rate-limit error.
    #[arg(long, default_value_t = 0.0, help_heading = "Fake Graph API")]
    pub throttle_ratio: f64,

    /// Milliseconds between the fake Graph API accepting a send and the first status callback
    /// (`sent`) for it; `delivered` and `read` follow 30 and 70 ms later. 0 makes callbacks race
    /// the broker's handling of the send's answer.
    #[arg(long, default_value_t = 30, help_heading = "Fake Graph API")]
    pub status_delay_ms: u64,

    /// Campaign mode: this many business-initiated template sends (one per distinct customer)
    /// spread over --numbers, while an agent on the first number replies at --reply-rate; reports
    /// sends/s per number against --mps, the fake Graph API's pair-rate violations and the
    /// replies' 202 -> Graph latency (needs --broker-bin; no webhook load, no audit; with
    /// --mixed, beside the inbound run instead). 0 = off.
    #[arg(long, value_name = "N", default_value_t = 0, help_heading = "Load")]
    pub campaign: usize,

    /// Mixed mode, a peak hour on one broker: the inbound run (webhooks at --rate, --agents
    /// claiming, replying and resolving, the end-of-run audit) and, at the same time, the
    /// --campaign's template sends over --numbers at --mps through the bulk route, sent by agents
    /// of their own (campaign1..4). One report: the inbound run's, plus the campaign's sends/s
    /// per number, pair-rate violations and the agents' replies 202 -> Graph while it drained.
    /// Exit 0 only when the audit passes and the campaign drained with no refused send and no
    /// pair-rate violation. Needs --broker-bin, --campaign N, --rate above 0 and --agents 1 or
    /// more; not with --sse-agents, --crash-after, --baseline or --reply-rate.
    #[arg(long, help_heading = "Load")]
    pub mixed: bool,

    /// `mps` of each generated business number.
    #[arg(long, default_value_t = 1000, help_heading = "Fake Graph API")]
    pub mps: u32,

    /// Campaign mode: agents' replies a second on the first number, beside its templates
    /// (default: half its --mps, at most 50; 0 = none).
    #[arg(long, value_name = "PER_SECOND", help_heading = "Load")]
    pub reply_rate: Option<f64>,

    /// Campaign mode: template sends per request of the bulk route
    /// (`POST /api/v1/templates/{name}/sends`, 1 to 1000); 0 = one
    /// `POST /api/v1/conversations/{id}/messages` per send.
    #[arg(
        long,
        default_value_t = 500,
        value_name = "SENDS",
        help_heading = "Load"
    )]
    pub campaign_batch: usize,

    /// SIGKILL the started broker this many seconds into the load, restart it on the same data
    /// directory and config, and carry on (requires --broker-bin; must be below --duration).
    #[arg(long, value_name = "SECONDS", help_heading = "Chaos")]
    pub crash_after: Option<f64>,

    /// Also drive a trivial HTTP server (reads the body, answers 200) with the same generator,
    /// mode and duration, and print broker throughput / baseline throughput.
    #[arg(long, help_heading = "Output")]
    pub baseline: bool,

    /// Where the --baseline server runs: `process` (its own process, as the broker is) or
    /// `in-process` (on the generator's own runtime, sharing its threads).
    #[arg(long, value_enum, default_value_t = BaselineMode::Process, help_heading = "Output")]
    pub baseline_mode: BaselineMode,

    /// Split --duration into this many rounds, each driving the baseline and then the broker for
    /// duration/N, so both see the same moments of a machine whose speed drifts (needs
    /// --baseline, no agents and no --crash-after; 1 = baseline for the whole duration first).
    #[arg(long, value_name = "N", default_value_t = 1, help_heading = "Output")]
    pub baseline_rounds: u32,

    /// Internal: serve the trivial baseline server and print its address (used by --baseline).
    #[arg(long, hide = true)]
    pub serve_baseline: bool,

    /// Write the results (rates, latency percentiles, errors by kind, audit) as JSON to FILE.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub json: Option<PathBuf>,

    /// Seconds to wait after the load for redeliveries, agents and outbound sends to settle.
    #[arg(long, default_value_t = 30.0, help_heading = "Output")]
    pub drain_timeout: f64,

    /// Seconds to wait for a started broker's /healthz to answer 200.
    #[arg(long, default_value_t = 30.0, help_heading = "Output")]
    pub startup_timeout: f64,
}

/// Where the broker under test comes from.
#[derive(Debug, Clone)]
pub enum Target {
    /// Start `bin` ourselves; `data_dir` `None` means a fresh temporary directory.
    Spawn {
        bin: PathBuf,
        data_dir: Option<PathBuf>,
        keep_data: bool,
    },
    /// A broker already listening at `url` (no trailing slash); agents use `agent_url`.
    External { url: String, agent_url: String },
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub target: Target,
    pub app_secret: String,
    pub verify_token: String,
    pub access_token: String,
    pub admin_token: String,
    /// One token per simulated agent (length == number of agents).
    pub agent_tokens: Vec<String>,
    /// Agent ids when we know them (generated config); empty for an external broker.
    pub agent_ids: Vec<String>,
    pub graph_port: u16,
    /// `None` = closed loop.
    pub rate: Option<f64>,
    pub duration: Duration,
    pub connections: usize,
    pub customers: usize,
    pub numbers: usize,
    /// `--sse-agents` (0 = none) and the teams they spread over (1 when none).
    pub sse_agents: usize,
    pub teams: usize,
    pub duplicate_ratio: f64,
    /// Share of username-only customers (see `--username-share`).
    pub username_share: f64,
    pub batch_ratio: f64,
    pub max_batch: usize,
    pub media_share: f64,
    /// `--bot`: texts drawn from the bot's intents.
    pub bot_texts: bool,
    /// `--bot` without `--no-automation`: the generated config has `[automation]`.
    pub automation: bool,
    pub redeliveries: u32,
    pub request_timeout: Duration,
    pub seed: Option<u64>,
    pub claim_race: usize,
    pub claim_mode: ClaimMode,
    pub event_types: Option<String>,
    pub resolve_after: Duration,
    pub replay_ratio: f64,
    pub max_concurrent: u32,
    pub throttle_ratio: f64,
    pub status_delay: Duration,
    pub mps: u32,
    /// Template sends of campaign mode (0: the usual inbound run).
    pub campaign: usize,
    /// `--mixed`: the campaign runs beside the inbound run, on the same broker (see `mixed`).
    pub mixed: bool,
    /// Campaign mode's replies a second (None: half the mps, at most 50).
    pub reply_rate: Option<f64>,
    /// Campaign mode's sends per bulk request (0: one reply-route request per send).
    pub campaign_batch: usize,
    pub crash_after: Option<Duration>,
    pub baseline: bool,
    pub baseline_mode: BaselineMode,
    pub baseline_rounds: u32,
    pub json: Option<PathBuf>,
    pub drain_timeout: Duration,
    pub startup_timeout: Duration,
}

/// A problem with the command line (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn bad(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

fn ratio(name: &str, v: f64) -> Result<f64, UsageError> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(bad(format!("--{name} must be between 0 and 1, got {v}")))
    }
}

fn seconds(name: &str, v: f64) -> Result<Duration, UsageError> {
    if v.is_finite() && v > 0.0 && v < 1.0e7 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(bad(format!(
            "--{name} must be a positive number of seconds, got {v}"
        )))
    }
}

/// Accepts only `http://` URLs whose host is in 127.0.0.0/8, `localhost` or `[::1]`, and returns
/// it without a trailing slash.
pub fn loopback_url(raw: &str) -> Result<String, UsageError> {
    let url = reqwest::Url::parse(raw).map_err(|e| bad(format!("--url {raw:?}: {e}")))?;
    if url.scheme() != "http" {
        return Err(bad(format!("--url {raw:?}: only http:// is supported")));
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    };
    if !loopback {
        return Err(bad(format!(
            "--url {raw:?}: the load test only sends traffic to loopback addresses (127.0.0.0/8, localhost, [::1])"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(format!(
            "--url {raw:?}: give the base URL without query or fragment"
        )));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Customers of a peak at `rate` messages/s when none are given: each writes every
/// [`PEAK_SECONDS_PER_CUSTOMER`] s, and never fewer than 1,000.
pub fn peak_customers(rate: f64) -> usize {
    ((rate * PEAK_SECONDS_PER_CUSTOMER).ceil() as usize).clamp(1000, 10_000_000)
}

/// How often one customer writes at a peak: every few seconds (people type, read, wait).
const PEAK_SECONDS_PER_CUSTOMER: f64 = 5.0;

/// What `--mixed` needs beside `--broker-bin` (checked with `--campaign`): a campaign, an open
/// loop, agents to claim and reply, and none of the flags whose runs a campaign would confuse.
fn mixed_combination(
    cli: &Cli,
    rate: Option<f64>,
    agents: usize,
    crash: bool,
) -> Result<(), UsageError> {
    let refused = [
        (cli.campaign == 0, "--mixed needs --campaign N (its template sends)"),
        (rate.is_none(), "--mixed needs an open-loop --rate above 0"),
        (
            agents == 0,
            "--mixed needs --agents 1 or more (they claim and reply)",
        ),
        (
            cli.sse_agents > 0,
            "--mixed cannot be combined with --sse-agents",
        ),
        (
            crash,
            "--mixed cannot be combined with --crash-after (the campaign's rates would span a restart)",
        ),
        (cli.baseline, "--mixed cannot be combined with --baseline"),
        (
            cli.reply_rate.is_some(),
            "--reply-rate is campaign mode's scripted replier; with --mixed the agents reply",
        ),
    ];
    match refused.into_iter().find(|(bad_here, _)| *bad_here) {
        Some((_, msg)) => Err(bad(msg)),
        None => Ok(()),
    }
}

impl Cli {
    /// Checks the arguments and turns them into `Settings`.
    pub fn validate(self) -> Result<Settings, UsageError> {
        let target = match (&self.url, &self.broker_bin) {
            (Some(_), Some(_)) => return Err(bad("give either --url or --broker-bin, not both")),
            (Some(url), None) => {
                if self.data_dir.is_some() || self.keep_data {
                    return Err(bad(
                        "--data-dir and --keep-data only apply with --broker-bin",
                    ));
                }
                let url = loopback_url(url)?;
                let agent_url = match &self.agent_url {
                    Some(a) => loopback_url(a)?,
                    None => url.clone(),
                };
                Target::External { url, agent_url }
            }
            (None, Some(bin)) => Target::Spawn {
                bin: bin.clone(),
                data_dir: self.data_dir.clone(),
                keep_data: self.keep_data,
            },
            (None, None) if self.print_config => Target::External {
                url: "http://127.0.0.1:8080".to_string(),
                agent_url: "http://127.0.0.1:8080".to_string(),
            },
            (None, None) => {
                return Err(bad(
                    "give --broker-bin PATH (start a broker) or --url URL (drive a running one)",
                ))
            }
        };

        let rate = if !self.rate.is_finite() || self.rate < 0.0 {
            return Err(bad(format!(
                "--rate must be >= 0 (0 = closed loop), got {}",
                self.rate
            )));
        } else if self.rate == 0.0 {
            None
        } else {
            Some(self.rate)
        };
        let duration = seconds("duration", self.duration)?;
        if self.connections == 0 || self.connections > 100_000 {
            return Err(bad("--connections must be between 1 and 100000"));
        }
        let customers = match (self.customers, rate) {
            (Some(c), _) => c,
            (None, Some(r)) => peak_customers(r),
            (None, None) => 1000,
        };
        if customers == 0 || customers > 10_000_000 {
            return Err(bad("--customers must be between 1 and 10000000"));
        }
        if self.numbers == 0 || self.numbers > 1000 {
            return Err(bad("--numbers must be between 1 and 1000"));
        }
        if self.sse_agents > 10_000 {
            return Err(bad("--sse-agents must be at most 10000"));
        }
        let (teams, numbers) = if self.sse_agents > 0 {
            if self.teams == 0 || self.teams > 100 || self.teams > self.sse_agents {
                return Err(bad(
                    "--teams must be between 1 and 100 and at most --sse-agents",
                ));
            }
            (self.teams, self.numbers.max(self.teams))
        } else {
            (1, self.numbers)
        };
        if self.max_batch < 2 || self.max_batch > 1000 {
            return Err(bad("--max-batch must be between 2 and 1000"));
        }
        if let Some(r) = rate {
            if r * duration.as_secs_f64() > 1.0e9 {
                return Err(bad("--rate x --duration is too large"));
            }
        }

        let spawn = matches!(target, Target::Spawn { .. }) || self.print_config;
        let (agent_tokens, agent_ids) = if spawn {
            if !self.agent_tokens.is_empty() && !self.print_config {
                return Err(bad(
                    "--agent-token is for --url; a started broker gets generated agents",
                ));
            }
            let k = match self.agents {
                Some(k) if k > 0 && self.sse_agents > 0 => {
                    return Err(bad(
                        "--sse-agents needs --agents 0: claims would hide conversations from the teams that are due their events",
                    ))
                }
                Some(k) => k,
                None if self.sse_agents > 0 => 0,
                None => 8,
            };
            if k > 10_000 {
                return Err(bad("--agents must be at most 10000"));
            }
            (
                (1..=k).map(|i| format!("lt-token-{i}")).collect(),
                (1..=k).map(|i| format!("agent{i}")).collect(),
            )
        } else {
            let k = self.agents.unwrap_or(self.agent_tokens.len());
            if k > self.agent_tokens.len() {
                return Err(bad(format!(
                    "--agents {k} needs as many --agent-token values (got {})",
                    self.agent_tokens.len()
                )));
            }
            if self.sse_agents > 0 {
                return Err(bad(
                    "--sse-agents needs --broker-bin (its config routes numbers to the teams)",
                ));
            }
            (self.agent_tokens[..k].to_vec(), Vec::new())
        };
        if self.claim_race == 0 {
            return Err(bad("--claim-race must be at least 1"));
        }

        let crash_after = match self.crash_after {
            None => None,
            Some(s) => {
                if !matches!(target, Target::Spawn { .. }) {
                    return Err(bad(
                        "--crash-after needs --broker-bin (only a broker we started can be killed)",
                    ));
                }
                let d = seconds("crash-after", s)?;
                if d >= duration {
                    return Err(bad("--crash-after must be below --duration"));
                }
                Some(d)
            }
        };
        if self.mps == 0 {
            return Err(bad("--mps must be at least 1"));
        }
        if self
            .reply_rate
            .is_some_and(|r| !r.is_finite() || !(0.0..=10_000.0).contains(&r))
        {
            return Err(bad("--reply-rate must be between 0 and 10000"));
        }
        if self.campaign > 0 && !matches!(target, Target::Spawn { .. }) {
            return Err(bad(
                "--campaign needs --broker-bin (its config lists the template and the numbers)",
            ));
        }
        if self.mixed {
            mixed_combination(&self, rate, agent_tokens.len(), crash_after.is_some())?;
        }
        if self.campaign_batch > 1000 {
            return Err(bad("--campaign-batch must be between 0 and 1000"));
        }
        if !(1..=MAX_BASELINE_ROUNDS).contains(&self.baseline_rounds) {
            return Err(bad(format!(
                "--baseline-rounds must be between 1 and {MAX_BASELINE_ROUNDS}"
            )));
        }
        if self.baseline_rounds > 1 {
            // Agents and a crash span the whole broker run; a baseline slice in between would
            // share the machine with them (or with a restarting broker) and not be comparable.
            if !self.baseline {
                return Err(bad("--baseline-rounds needs --baseline"));
            }
            if !agent_tokens.is_empty() {
                return Err(bad("--baseline-rounds above 1 needs --agents 0"));
            }
            if crash_after.is_some() {
                return Err(bad(
                    "--baseline-rounds above 1 cannot be combined with --crash-after",
                ));
            }
        }
        for (name, v) in [
            ("app-secret", &self.app_secret),
            ("admin-token", &self.admin_token),
        ] {
            if v.is_empty() {
                return Err(bad(format!("--{name} must not be empty")));
            }
        }

        Ok(Settings {
            target,
            app_secret: self.app_secret,
            verify_token: self.verify_token,
            access_token: self.access_token,
            admin_token: self.admin_token,
            agent_tokens,
            agent_ids,
            graph_port: self.graph_port,
            rate,
            duration,
            connections: self.connections,
            customers,
            numbers,
            sse_agents: self.sse_agents,
            teams,
            duplicate_ratio: ratio("duplicate-ratio", self.duplicate_ratio)?,
            username_share: ratio("username-share", self.username_share)?,
            batch_ratio: ratio("batch-ratio", self.batch_ratio)?,
            max_batch: self.max_batch,
            media_share: ratio("media-share", self.media_share)?,
            bot_texts: self.bot,
            automation: self.bot && !self.no_automation,
            redeliveries: self.redeliveries,
            request_timeout: seconds("request-timeout", self.request_timeout)?,
            seed: self.seed,
            claim_race: self.claim_race,
            claim_mode: self.claim_mode,
            event_types: self.event_types.clone(),
            resolve_after: Duration::from_millis(self.resolve_after_ms),
            replay_ratio: ratio("replay-ratio", self.replay_ratio)?,
            max_concurrent: self.max_concurrent,
            throttle_ratio: ratio("throttle-ratio", self.throttle_ratio)?,
            status_delay: Duration::from_millis(self.status_delay_ms),
            mps: self.mps,
            campaign: self.campaign,
            mixed: self.mixed,
            reply_rate: self.reply_rate,
            campaign_batch: self.campaign_batch,
            crash_after,
            baseline: self.baseline,
            baseline_mode: self.baseline_mode,
            baseline_rounds: self.baseline_rounds,
            json: self.json,
            drain_timeout: seconds("drain-timeout", self.drain_timeout)?,
            startup_timeout: seconds("startup-timeout", self.startup_timeout)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, UsageError> {
        let mut v = vec!["switchboard-loadtest"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v)
            .map_err(|e| UsageError(e.to_string()))?
            .validate()
    }

    #[test]
    fn loopback_only() {
        assert!(loopback_url("http://127.0.0.1:8080/").is_ok());
        assert!(loopback_url("http://127.3.2.1:1").is_ok());
        assert!(loopback_url("http://localhost:1").is_ok());
        assert!(loopback_url("http://[::1]:1").is_ok());
        assert!(loopback_url("http://10.0.0.1:8080").is_err());
        assert!(loopback_url("http://example.com").is_err());
        assert!(loopback_url("https://127.0.0.1").is_err());
        assert_eq!(
            loopback_url("http://127.0.0.1:8080/").ok().as_deref(),
            Some("http://127.0.0.1:8080")
        );
    }

    #[test]
    fn smoke_command_validates() {
        let s = parse(&[
            "--broker-bin",
            "target/debug/switchboard",
            "--rate",
            "200",
            "--duration",
            "3",
            "--agents",
            "4",
            "--customers",
            "50",
            "--numbers",
            "2",
            "--crash-after",
            "1.5",
            "--json",
            "/tmp/x.json",
        ]);
        let s = match s {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(s.agent_tokens.len(), 4);
        assert_eq!(s.rate, Some(200.0));
        assert_eq!(s.crash_after, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn baseline_rounds_need_a_baseline_without_agents_or_crash() {
        let bin = [
            "--broker-bin",
            "target/debug/switchboard",
            "--duration",
            "4",
        ];
        let with = |extra: &[&str]| {
            let mut v = bin.to_vec();
            v.extend_from_slice(extra);
            parse(&v)
        };
        match with(&["--agents", "0", "--baseline", "--baseline-rounds", "4"]) {
            Ok(s) => assert_eq!(s.baseline_rounds, 4),
            Err(e) => panic!("{e}"),
        }
        let err = |extra: &[&str]| match with(extra) {
            Ok(_) => panic!("{extra:?} should be refused"),
            Err(e) => e.0,
        };
        assert!(err(&["--agents", "0", "--baseline-rounds", "2"]).contains("needs --baseline"));
        assert!(err(&["--baseline", "--baseline-rounds", "2"]).contains("--agents 0"));
        assert!(err(&[
            "--agents",
            "0",
            "--baseline",
            "--baseline-rounds",
            "2",
            "--crash-after",
            "1"
        ])
        .contains("--crash-after"));
        assert!(
            err(&["--agents", "0", "--baseline", "--baseline-rounds", "0"]).contains("between 1")
        );
        assert!(
            err(&["--agents", "0", "--baseline", "--baseline-rounds", "101"]).contains("between 1")
        );
        // One round is the default and combines with anything.
        assert!(with(&["--baseline", "--crash-after", "1"]).is_ok());
    }

    #[test]
    fn rejects_bad_combinations() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--url", "http://127.0.0.1:1", "--crash-after", "1"]).is_err());
        assert!(parse(&["--broker-bin", "x", "--duplicate-ratio", "1.5"]).is_err());
        assert!(parse(&["--broker-bin", "x", "--duration", "2", "--crash-after", "3"]).is_err());
        assert!(parse(&["--broker-bin", "x", "--rate", "-1"]).is_err());
        assert!(parse(&["--url", "http://127.0.0.1:1", "--agents", "2"]).is_err());
        assert!(parse(&["--url", "http://192.168.1.1:1"]).is_err());
    }

    #[test]
    fn customers_follow_the_rate_unless_given() {
        let c = |args: &[&str]| match parse(args) {
            Ok(s) => s.customers,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c(&["--broker-bin", "x", "--rate", "10000"]), 50_000);
        assert_eq!(c(&["--broker-bin", "x", "--rate", "10"]), 1000);
        assert_eq!(c(&["--broker-bin", "x", "--rate", "0"]), 1000);
        assert_eq!(
            c(&["--broker-bin", "x", "--rate", "10000", "--customers", "7"]),
            7
        );
    }

    #[test]
    fn sse_agents_spread_over_teams_without_claiming_agents() {
        let s = match parse(&["--broker-bin", "x", "--sse-agents", "1000", "--teams", "10"]) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!((s.sse_agents, s.teams, s.numbers), (1000, 10, 10));
        assert!(s.agent_tokens.is_empty(), "no claiming agents by default");
        assert!(parse(&["--broker-bin", "x", "--sse-agents", "10", "--agents", "2"]).is_err());
        assert!(parse(&["--broker-bin", "x", "--sse-agents", "5", "--teams", "6"]).is_err());
        assert!(parse(&["--url", "http://127.0.0.1:1", "--sse-agents", "5"]).is_err());
        let plain = parse(&["--broker-bin", "x"]);
        assert!(matches!(
            plain,
            Ok(Settings {
                sse_agents: 0,
                teams: 1,
                ..
            })
        ));
    }

    #[test]
    fn mixed_needs_a_campaign_an_open_loop_and_agents() {
        let base = [
            "--broker-bin",
            "x",
            "--mixed",
            "--rate",
            "200",
            "--agents",
            "2",
            "--campaign",
            "500",
        ];
        let with = |extra: &[&str]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            parse(&v)
        };
        match with(&[]) {
            Ok(s) => assert!(s.mixed && s.campaign == 500 && s.agent_tokens.len() == 2),
            Err(e) => panic!("{e}"),
        }
        let err = |extra: &[&str]| match with(extra) {
            Ok(_) => panic!("{extra:?} should be refused"),
            Err(e) => e.0,
        };
        let no_campaign = parse(&base[..base.len() - 2]);
        assert!(no_campaign.is_err_and(|e| e.0.contains("--campaign N")));
        let closed_loop = parse(&[&base[..3], &["--rate", "0"], &base[5..]].concat());
        assert!(closed_loop.is_err_and(|e| e.0.contains("open-loop")));
        let no_agents = parse(&[&base[..5], &["--agents", "0"], &base[7..]].concat());
        assert!(no_agents.is_err_and(|e| e.0.contains("--agents 1")));
        assert!(err(&["--crash-after", "1"]).contains("--crash-after"));
        assert!(err(&["--baseline"]).contains("--baseline"));
        assert!(err(&["--reply-rate", "5"]).contains("--reply-rate"));
        assert!(err(&["--sse-agents", "10"]).contains("--sse-agents"));
        // Campaign mode is unchanged: --campaign alone is not mixed.
        let campaign = parse(&["--broker-bin", "x", "--campaign", "10"]);
        assert!(matches!(campaign, Ok(Settings { mixed: false, .. })));
        let url = parse(&["--url", "http://127.0.0.1:1", "--mixed", "--campaign", "10"]);
        assert!(url.is_err_and(|e| e.0.contains("--broker-bin")));
    }

    #[test]
    fn rate_zero_is_closed_loop() {
        let s = parse(&["--broker-bin", "x", "--rate", "0"]);
        assert!(matches!(s, Ok(Settings { rate: None, .. })));
    }
}
