//! The standard test configuration: its numbers, agents and tokens, and `Cfg`, which renders it
//! as the TOML the broker reads (with per-test extras).

use std::path::{Path, PathBuf};

pub const APP_SECRET: &str = "test-secret";
pub const VERIFY_TOKEN: &str = "test-verify";
pub const ACCESS_TOKEN: &str = "test-access";
pub const WABA_ID: &str = "102290129340398";

/// Number 1: default team "support", no explicit mps (default 80).
pub const N1: &str = "106540352242922";
pub const N1_DISPLAY: &str = "15550783881";
/// Number 2: default team "sales", mps 80.
pub const N2: &str = "206540352242933";
pub const N2_DISPLAY: &str = "15550783882";

pub const ALICE: &str = "t-alice"; // agent, support, max_concurrent 2
pub const BOB: &str = "t-bob"; // agent, support, max 5
pub const CAROL: &str = "t-carol"; // supervisor, support
pub const DAVE: &str = "t-dave"; // agent, sales
pub const ROOT: &str = "t-root"; // admin, support + sales

/// Prefix of the graph API path (graph_api_base = http://127.0.0.1:PORT/v25.0).
pub const GRAPH_VERSION: &str = "v25.0";

pub const SECS_PER_DAY: i64 = 86_400;

pub fn display_of(number: &str) -> &'static str {
    match number {
        N1 => N1_DISPLAY,
        N2 => N2_DISPLAY,
        _ => "15550000000",
    }
}

#[derive(Clone, Debug)]
pub struct Cfg {
    pub listen: String,
    /// Extra lines inside `[server]` (e.g. `max_inflight_webhooks = 1`).
    pub server_extra: String,
    pub storage_path: PathBuf,
    pub sync: bool,
    /// Extra lines inside `[storage]` (e.g. `stall_after_ms = 100`).
    pub storage_extra: String,
    pub graph_base: String,
    /// Extra lines inside `[whatsapp]` (e.g. `messaging_limit = 2`).
    pub whatsapp_extra: String,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub max_attempts: u64,
    /// Extra lines inside `[outbox]` (e.g. `queue_capacity = 1`).
    pub outbox_extra: String,
    pub idle_timeout_ms: u64,
    /// Extra lines inside `[conversations]` (e.g. `max_live = 2`).
    pub conversations_extra: String,
    /// Appended verbatim at the end (e.g. more `[[agents]]`).
    pub extra: String,
    /// Extra keys inside the `support` / `sales` `[[teams]]` tables (hours, sla, …).
    pub support_extra: String,
    pub sales_extra: String,
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Cfg {
    pub fn new(storage_path: &Path, graph_base: &str) -> Cfg {
        Cfg {
            listen: "127.0.0.1:0".into(),
            server_extra: String::new(),
            storage_path: storage_path.to_path_buf(),
            sync: true,
            storage_extra: String::new(),
            graph_base: graph_base.into(),
            whatsapp_extra: String::new(),
            retry_base_ms: 10,
            retry_max_ms: 100,
            max_attempts: 5,
            outbox_extra: String::new(),
            idle_timeout_ms: 60_000,
            conversations_extra: String::new(),
            extra: String::new(),
            support_extra: String::new(),
            sales_extra: String::new(),
        }
    }

    pub fn toml(&self) -> String {
        format!(
            r#"[server]
listen = {listen}
{server_extra}

[storage]
path = {path}
sync = {sync}
{storage_extra}

[whatsapp]
app_secret = "{APP_SECRET}"
verify_token = "{VERIFY_TOKEN}"
access_token = "{ACCESS_TOKEN}"
waba_id = "{WABA_ID}"
graph_api_base = {graph}
{whatsapp_extra}

[outbox]
retry_base_ms = {rb}
retry_max_ms = {rm}
max_attempts = {ma}
{outbox_extra}

[conversations]
idle_timeout_ms = {idle}
{conversations_extra}

[[numbers]]
phone_number_id = "{N1}"
display_phone_number = "{N1_DISPLAY}"
default_team = "support"

[[numbers]]
phone_number_id = "{N2}"
display_phone_number = "{N2_DISPLAY}"
default_team = "sales"
mps = 80

[[teams]]
id = "support"
name = "Support"
{support_extra}

[[teams]]
id = "sales"
name = "Sales"
{sales_extra}

[[agents]]
id = "alice"
name = "Alice"
token = "t-alice"
teams = ["support"]
role = "agent"
max_concurrent = 2

[[agents]]
id = "bob"
name = "Bob"
token = "t-bob"
teams = ["support"]
role = "agent"
max_concurrent = 5

[[agents]]
id = "carol"
name = "Carol"
token = "t-carol"
teams = ["support"]
role = "supervisor"
max_concurrent = 5

[[agents]]
id = "dave"
name = "Dave"
token = "t-dave"
teams = ["sales"]
role = "agent"
max_concurrent = 5

[[agents]]
id = "root"
name = "Root"
token = "t-root"
teams = ["support", "sales"]
role = "admin"
max_concurrent = 5
{extra}
"#,
            listen = toml_str(&self.listen),
            server_extra = self.server_extra,
            path = toml_str(&self.storage_path.to_string_lossy()),
            sync = self.sync,
            storage_extra = self.storage_extra,
            graph = toml_str(&self.graph_base),
            whatsapp_extra = self.whatsapp_extra,
            rb = self.retry_base_ms,
            rm = self.retry_max_ms,
            ma = self.max_attempts,
            outbox_extra = self.outbox_extra,
            idle = self.idle_timeout_ms,
            conversations_extra = self.conversations_extra,
            extra = self.extra,
            support_extra = self.support_extra,
            sales_extra = self.sales_extra,
        )
    }
}

/// TOML for `n` extra support agents `racer0..racer{n-1}` with tokens `t-racer{i}`.
pub fn racer_agents(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "\n[[agents]]\nid = \"racer{i}\"\nname = \"Racer {i}\"\ntoken = \"t-racer{i}\"\nteams = [\"support\"]\nrole = \"agent\"\nmax_concurrent = 5\n"
        ));
    }
    s
}
