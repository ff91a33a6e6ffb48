//! Generation of the broker's TOML config for a run we start ourselves.
//!
//! The config follows the contract's keys plus the extensions the broker supports
//! (`server.max_inflight_webhooks`, `server.api_listen`, `[outbox]` retry tuning). Invariants:
//! `listen`, `api_listen` and `graph_api_base` are loopback addresses chosen by the caller, the
//! numbers are the same `webhook::numbers(m)` the generator uses, agents `agent1..K` have tokens
//! `lt-token-1..K`, and an extra `admin` agent (token from `--admin-token`) exists for the audit;
//! a `--mixed` run adds agents `campaign1..C` with tokens `lt-campaign-1..C` that own its
//! campaign's conversations (see [`campaign_owner_token`]).
//! Strings are escaped by the TOML serializer, never by hand.

use serde::Serialize;

use crate::webhook::{numbers, WABA_ID};

/// Inputs of the generated config.
pub struct BrokerConfigSpec<'a> {
    pub listen: String,
    /// `server.api_listen`: the agents' own listener, if any.
    pub api_listen: Option<String>,
    pub storage_path: String,
    pub app_secret: &'a str,
    pub verify_token: &'a str,
    pub access_token: &'a str,
    pub graph_api_base: String,
    pub numbers: usize,
    pub mps: u32,
    pub agent_ids: &'a [String],
    pub agent_tokens: &'a [String],
    pub admin_token: &'a str,
    pub max_concurrent: u32,
    /// `[automation]` for every team (`--bot`, see `crate::bot`).
    pub automation: bool,
    /// `--sse-agents` runs: teams `team1..T` beside `support`, number i routed to
    /// `team{(i % T) + 1}` (see [`team_of_number`]); 0 = every number routes to `support`.
    pub fanout_teams: usize,
    /// Event streams the run opens (`server.max_event_streams` is raised to fit them).
    pub event_streams: usize,
    /// `--mixed`: agents `campaign1..C` of their own (tokens [`campaign_owner_token`]), in team
    /// `support`, that take the campaign's conversations and send its templates; 0 = none.
    pub campaign_owners: usize,
    /// `max_concurrent` of each campaign owner: room for its share of the campaign.
    pub campaign_room: u32,
}

/// The token of campaign owner `i` (1-based) of a `--mixed` run.
pub fn campaign_owner_token(i: usize) -> String {
    format!("lt-campaign-{i}")
}

/// The team a `--sse-agents` run routes number index `i` (0-based) to, of `teams` teams.
pub fn team_of_number(i: usize, teams: usize) -> usize {
    i % teams.max(1)
}

/// The id of fan-out team `t` (0-based).
pub fn fanout_team_id(t: usize) -> String {
    format!("team{}", t + 1)
}

#[derive(Serialize)]
struct Config {
    server: Server,
    storage: Storage,
    whatsapp: Whatsapp,
    outbox: Outbox,
    numbers: Vec<NumberCfg>,
    teams: Vec<Team>,
    agents: Vec<Agent>,
}

#[derive(Serialize)]
struct Server {
    listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_listen: Option<String>,
    max_inflight_webhooks: u32,
    max_event_streams: usize,
}

#[derive(Serialize)]
struct Storage {
    path: String,
    sync: bool,
}

#[derive(Serialize)]
struct Whatsapp {
    app_secret: String,
    verify_token: String,
    access_token: String,
    waba_id: String,
    graph_api_base: String,
}

#[derive(Serialize)]
struct Outbox {
    retry_base_ms: u64,
    retry_max_ms: u64,
    max_attempts: u32,
}

#[derive(Serialize)]
struct NumberCfg {
    phone_number_id: String,
    display_phone_number: String,
    default_team: String,
    mps: u32,
}

#[derive(Serialize)]
struct Team {
    id: String,
    name: String,
}

#[derive(Serialize)]
struct Agent {
    id: String,
    name: String,
    token: String,
    teams: Vec<String>,
    role: String,
    max_concurrent: u32,
}

/// Renders the config as TOML.
pub fn render(spec: &BrokerConfigSpec<'_>) -> anyhow::Result<String> {
    let mut agents: Vec<Agent> = spec
        .agent_ids
        .iter()
        .zip(spec.agent_tokens)
        .map(|(id, token)| Agent {
            id: id.clone(),
            name: format!("Load Agent {}", id.trim_start_matches("agent")),
            token: token.clone(),
            teams: vec!["support".into()],
            role: "agent".into(),
            max_concurrent: spec.max_concurrent,
        })
        .collect();
    agents.extend((1..=spec.campaign_owners).map(|i| Agent {
        id: format!("campaign{i}"),
        name: format!("Load Campaign {i}"),
        token: campaign_owner_token(i),
        teams: vec!["support".into()],
        role: "agent".into(),
        max_concurrent: spec.campaign_room,
    }));
    agents.push(Agent {
        id: "admin".into(),
        name: "Load Test Admin".into(),
        token: spec.admin_token.to_string(),
        teams: vec!["support".into()],
        role: "admin".into(),
        max_concurrent: 1,
    });
    let cfg = Config {
        server: Server {
            listen: spec.listen.clone(),
            api_listen: spec.api_listen.clone(),
            max_inflight_webhooks: 4096,
            // The broker's default (1,024) plus room for a fan-out run's streams.
            max_event_streams: 1024 + spec.event_streams,
        },
        storage: Storage {
            path: spec.storage_path.clone(),
            sync: true,
        },
        whatsapp: Whatsapp {
            app_secret: spec.app_secret.to_string(),
            verify_token: spec.verify_token.to_string(),
            access_token: spec.access_token.to_string(),
            waba_id: WABA_ID.to_string(),
            graph_api_base: spec.graph_api_base.clone(),
        },
        outbox: Outbox {
            retry_base_ms: 50,
            retry_max_ms: 2000,
            max_attempts: 8,
        },
        numbers: numbers(spec.numbers)
            .into_iter()
            .enumerate()
            .map(|(i, n)| NumberCfg {
                phone_number_id: n.phone_number_id,
                display_phone_number: n.display_phone_number,
                default_team: if spec.fanout_teams > 0 {
                    fanout_team_id(team_of_number(i, spec.fanout_teams))
                } else {
                    "support".into()
                },
                mps: spec.mps,
            })
            .collect(),
        teams: std::iter::once(Team {
            id: "support".into(),
            name: "Support".into(),
        })
        .chain((0..spec.fanout_teams).map(|t| Team {
            id: fanout_team_id(t),
            name: format!("Fan-out team {}", t + 1),
        }))
        .collect(),
        agents,
    };
    let body = toml::to_string(&cfg)?;
    let automation = if spec.automation {
        crate::bot::AUTOMATION
    } else {
        ""
    };
    Ok(format!(
        "# Generated by switchboard-loadtest. Agents agent1..K use tokens lt-token-1..K.\n{body}{automation}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_parseable_config() {
        let ids = vec!["agent1".to_string(), "agent2".to_string()];
        let toks = vec!["lt-token-1".to_string(), "lt-token-2".to_string()];
        let spec = BrokerConfigSpec {
            listen: "127.0.0.1:4000".into(),
            api_listen: Some("127.0.0.1:4002".into()),
            storage_path: "/tmp/x \"y\"".into(),
            app_secret: "s",
            verify_token: "v",
            access_token: "a",
            graph_api_base: "http://127.0.0.1:4001".into(),
            numbers: 3,
            mps: 1000,
            agent_ids: &ids,
            agent_tokens: &toks,
            admin_token: "lt-admin",
            max_concurrent: 50,
            automation: true,
            fanout_teams: 2,
            event_streams: 100,
            campaign_owners: 1,
            campaign_room: 5000,
        };
        let text = match render(&spec) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        let v: toml::Value = match toml::from_str(&text) {
            Ok(v) => v,
            Err(e) => panic!("{e}\n{text}"),
        };
        assert_eq!(v["server"]["listen"].as_str(), Some("127.0.0.1:4000"));
        assert_eq!(v["server"]["api_listen"].as_str(), Some("127.0.0.1:4002"));
        assert_eq!(v["storage"]["path"].as_str(), Some("/tmp/x \"y\""));
        assert_eq!(v["storage"]["sync"].as_bool(), Some(true));
        assert_eq!(v["whatsapp"]["waba_id"].as_str(), Some(WABA_ID));
        assert_eq!(v["outbox"]["max_attempts"].as_integer(), Some(8));
        let nums = v["numbers"].as_array().map(Vec::len);
        assert_eq!(nums, Some(3));
        assert_eq!(
            v["numbers"][0]["phone_number_id"].as_str(),
            Some("106540352242921")
        );
        let agents = v["agents"].as_array().cloned().unwrap_or_default();
        assert_eq!(agents.len(), 4);
        assert_eq!(agents[2]["token"].as_str(), Some("lt-campaign-1"));
        assert_eq!(agents[2]["max_concurrent"].as_integer(), Some(5000));
        assert_eq!(agents[3]["role"].as_str(), Some("admin"));
        assert_eq!(agents[1]["token"].as_str(), Some("lt-token-2"));
        assert_eq!(v["teams"][0]["id"].as_str(), Some("support"));
        assert_eq!(v["automation"]["teams"][0].as_str(), Some("support"));
        assert_eq!(v["teams"][2]["id"].as_str(), Some("team2"));
        assert_eq!(v["numbers"][0]["default_team"].as_str(), Some("team1"));
        assert_eq!(v["numbers"][1]["default_team"].as_str(), Some("team2"));
        assert_eq!(v["numbers"][2]["default_team"].as_str(), Some("team1"));
        assert_eq!(v["server"]["max_event_streams"].as_integer(), Some(1124));
    }
}
