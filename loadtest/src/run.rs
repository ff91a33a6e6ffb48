//! Orchestration of one run: set up, drive, drain, audit, tear down, report.
//!
//! Order (each waiting step is bounded):
//! 1. start the fake Graph API; start the broker (`--broker-bin`: generated config, free loopback
//!    port, wait for /healthz) or check the given `--url` answers /healthz;
//! 2. `--baseline`: drive a trivial server with the same generator, mode and duration (with
//!    `--baseline-rounds N` above 1: start it here, drive it in step 4, alternating with the
//!    broker in N slices each);
//! 3. `--mixed`: the campaign's set-up (`crate::mixed`); start the agents (presence + event
//!    stream) and the status-callback poster;
//! 4. drive the broker for `--duration` (with `--crash-after`: SIGKILL, restart, wait healthy;
//!    with `--mixed`: the campaign posts its templates from the start and drains meanwhile);
//! 5. drain, within `--drain-timeout` in total: redeliveries, agents' in-flight work (then stop
//!    them), outbound sends reaching the fake Graph API, status callbacks;
//! 6. audit through the admin API; stop the broker (SIGTERM, then SIGKILL after 10 s);
//! 7. print the summary, write `--json`.
//!
//! The temporary data directory is deleted unless `--keep-data` or the run failed, in which case
//! its path is printed so the broker log and RocksDB files can be inspected.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;
use tokio::sync::{mpsc, Mutex as AsyncMutex};
use tokio::time::{sleep, sleep_until, Instant};

use crate::agents::{Agents, AgentsConfig, AgentsShared};
use crate::api::ApiClient;
use crate::audit::{self, Audit, Observed, ReplyLatency};
use crate::baseline::Baseline;
use crate::broker_config::{render, BrokerConfigSpec};
use crate::broker_process::{cpu_seconds, free_loopback_port, BrokerProcess, Shutdown};
use crate::broker_view::{wait_media_drained, Scrape};
use crate::cli::{Settings, Target};
use crate::fake_graph::FakeGraph;
use crate::fanout::Fanout;
use crate::load::{closed_loop, open_loop, LoadCtx, LoadSummary};
use crate::mixed::{self, Campaign};
use crate::outcome;
use crate::report::{BaselineResult, Crash, Latencies, Report};
use crate::stats::lock;
use crate::status_callbacks::StatusPoster;
use crate::webhook::{Generator, Population};

/// The config `--print-config` shows (for running a broker by hand against `--url`).
pub fn print_config(s: &Settings) -> anyhow::Result<String> {
    let host_port = |url: &str| {
        url.trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    };
    let (listen, api_listen) = match &s.target {
        Target::External { url, agent_url } => (
            host_port(url),
            (agent_url != url).then(|| host_port(agent_url)),
        ),
        Target::Spawn { .. } => ("127.0.0.1:8080".to_string(), None),
    };
    let graph_port = if s.graph_port == 0 {
        18090
    } else {
        s.graph_port
    };
    let text = render(&BrokerConfigSpec {
        listen,
        api_listen,
        storage_path: "./lt-data".into(),
        app_secret: &s.app_secret,
        verify_token: &s.verify_token,
        access_token: &s.access_token,
        graph_api_base: format!("http://127.0.0.1:{graph_port}"),
        numbers: s.numbers,
        mps: s.mps,
        agent_ids: &s.agent_ids,
        agent_tokens: &s.agent_tokens,
        admin_token: &s.admin_token,
        max_concurrent: s.max_concurrent,
        automation: s.automation,
        fanout_teams: 0,
        event_streams: 0,
        campaign_owners: 0,
        campaign_room: 0,
    })?;
    Ok(format!(
        "# Run the load test with --graph-port {graph_port} --numbers {} and one --agent-token per agent below.\n{text}",
        s.numbers
    ))
}

async fn drive(ctx: &Arc<LoadCtx>, s: &Settings, duration: Duration, seed: u64) -> LoadSummary {
    match s.rate {
        Some(rate) => {
            open_loop(
                ctx.clone(),
                rate,
                duration,
                s.connections,
                seed,
                s.drain_timeout,
            )
            .await
        }
        None => closed_loop(ctx.clone(), duration, s.connections, seed).await,
    }
}

/// What [`drive_rounds`] measured.
struct Rounds {
    baseline: LoadSummary,
    broker: LoadSummary,
    /// Each round's broker/baseline ratio.
    ratios: Vec<f64>,
    /// The broker's CPU seconds during its own slices and during the baseline's (when it is our
    /// child and /proc is readable).
    broker_cpu: Option<(f64, f64)>,
}

/// Drives the baseline and then the broker for `duration / rounds` each, `rounds` times.
/// Alternating in short slices means a machine that is slower for a minute slows both sides
/// alike, where one long run of each could put the slow minute on one side only. The broker's
/// background work (memtable flushes, compactions) that spills into the baseline's slices is
/// measured, not hidden: see [`Rounds::broker_cpu`].
async fn drive_rounds(
    baseline: &Arc<LoadCtx>,
    broker: &Arc<LoadCtx>,
    s: &Settings,
    rounds: u32,
    seed: u64,
    broker_pid: Option<u32>,
) -> Rounds {
    let rounds = rounds.max(1);
    let slice = s.duration / rounds;
    let round = |r: u32| async move {
        let seed = seed.wrapping_add(u64::from(r));
        let cpu = || broker_pid.and_then(cpu_seconds);
        let t0 = cpu();
        let bl = drive(baseline, s, slice, seed).await;
        let t1 = cpu();
        let br = drive(broker, s, slice, seed).await;
        let t2 = cpu();
        let broker_cpu = delta(t1, t2).zip(delta(t0, t1));
        (bl, br, broker_cpu)
    };
    let (mut bl, mut br, mut broker_cpu) = round(0).await;
    let mut ratios = vec![ratio(&br, &bl)];
    for r in 1..rounds {
        let (round_bl, round_br, round_cpu) = round(r).await;
        ratios.push(ratio(&round_br, &round_bl));
        bl = bl.merge(round_bl);
        br = br.merge(round_br);
        broker_cpu = broker_cpu
            .zip(round_cpu)
            .map(|((a, b), (c, d))| (a + c, b + d));
    }
    Rounds {
        baseline: bl,
        broker: br,
        ratios,
        broker_cpu,
    }
}

fn delta(from: Option<f64>, to: Option<f64>) -> Option<f64> {
    Some(to? - from?)
}

/// Broker achieved rate / baseline achieved rate (0 when the baseline achieved nothing).
fn ratio(broker: &LoadSummary, baseline: &LoadSummary) -> f64 {
    if baseline.achieved_rate > 0.0 {
        broker.achieved_rate / baseline.achieved_rate
    } else {
        0.0
    }
}

/// The `--baseline` run as step 2 leaves it.
enum BaselineRun {
    /// Driven for the whole duration already: its summary and latencies.
    Done(LoadSummary, crate::stats::LatencySummary),
    /// To be driven in rounds with the broker: the running server and its generator.
    Rounds(Baseline, Arc<LoadCtx>),
}

async fn wait_external_healthy(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match client.get(format!("{url}/healthz")).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::OK => return Ok(()),
            Ok(r) if Instant::now() >= deadline => {
                bail!("GET {url}/healthz answered {}", r.status())
            }
            Err(e) if Instant::now() >= deadline => bail!("GET {url}/healthz failed: {e}"),
            _ => sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn crash_and_restart(
    broker: Arc<AsyncMutex<BrokerProcess>>,
    client: reqwest::Client,
    load_start: Instant,
    after: Duration,
    startup_timeout: Duration,
) -> Crash {
    let mut c = Crash {
        requested_at_s: after.as_secs_f64(),
        ..Default::default()
    };
    sleep_until(load_start + after).await;
    let mut b = broker.lock().await;
    if let Err(e) = b.kill() {
        c.error = Some(format!("SIGKILL failed: {e:#}"));
        return c;
    }
    let killed = Instant::now();
    c.killed_at_s = Some((killed - load_start).as_secs_f64());
    c.killed_at = Some(killed);
    if let Err(e) = b.start() {
        c.error = Some(format!("restart failed: {e:#}"));
        return c;
    }
    match b.wait_healthy(&client, startup_timeout).await {
        Ok(_) => {
            c.restarted = true;
            c.downtime_ms = Some(killed.elapsed().as_secs_f64() * 1000.0);
        }
        Err(e) => c.error = Some(format!("restarted broker not healthy: {e:#}")),
    }
    c
}

/// Runs everything; returns the report (its `audit.passed` decides the exit code).
pub async fn run(s: Settings) -> anyhow::Result<Report> {
    let seed = s.seed.unwrap_or_else(rand::random);
    let run_id = format!("{:08X}", rand::random::<u32>());
    let pop = Arc::new(Population::with_usernames(
        s.numbers,
        s.customers,
        s.username_share,
    ));

    let (notice_tx, notice_rx) = mpsc::unbounded_channel();
    let graph = FakeGraph::start(
        s.graph_port,
        s.access_token.clone(),
        s.throttle_ratio,
        run_id.clone(),
        notice_tx,
    )
    .await?;

    let health_client = outcome::client(2, Some(Duration::from_secs(2)))?;
    let mut broker: Option<Arc<AsyncMutex<BrokerProcess>>> = None;
    let mut tmp: Option<tempfile::TempDir> = None;
    let mut data_dir: Option<PathBuf> = None;
    let mut keep = false;
    let agent_base: String;
    let base_url = match &s.target {
        Target::Spawn {
            bin,
            data_dir: dd,
            keep_data,
        } => {
            keep = *keep_data;
            let dir = match dd {
                Some(d) => {
                    std::fs::create_dir_all(d)
                        .with_context(|| format!("creating {}", d.display()))?;
                    keep = true;
                    d.clone()
                }
                None => {
                    let t = tempfile::Builder::new()
                        .prefix("switchboard-loadtest-")
                        .tempdir()?;
                    let p = t.path().to_path_buf();
                    tmp = Some(t);
                    p
                }
            };
            data_dir = Some(dir.clone());
            let port = free_loopback_port()?;
            let listen = format!("127.0.0.1:{port}");
            // The agents get their own listener, as a deployment that cares for their latency
            // would give them.
            let api_listen = format!("127.0.0.1:{}", free_loopback_port()?);
            agent_base = format!("http://{api_listen}");
            let cfg = render(&BrokerConfigSpec {
                listen: listen.clone(),
                api_listen: Some(api_listen),
                storage_path: dir.join("db").display().to_string(),
                app_secret: &s.app_secret,
                verify_token: &s.verify_token,
                access_token: &s.access_token,
                graph_api_base: graph.base_url(),
                numbers: s.numbers,
                mps: s.mps,
                agent_ids: &s.agent_ids,
                agent_tokens: &s.agent_tokens,
                admin_token: &s.admin_token,
                max_concurrent: s.max_concurrent,
                automation: s.automation,
                fanout_teams: if s.sse_agents > 0 { s.teams } else { 0 },
                event_streams: s.sse_agents,
                campaign_owners: if s.mixed { mixed::OWNERS } else { 0 },
                campaign_room: mixed::owner_room(&s),
            })?;
            let cfg_path = dir.join("switchboard-loadtest.toml");
            std::fs::write(&cfg_path, cfg)
                .with_context(|| format!("writing {}", cfg_path.display()))?;
            let base = format!("http://{listen}");
            let mut b = BrokerProcess::new(bin, &cfg_path, &dir.join("broker.log"), base.clone());
            b.start()?;
            if let Err(e) = b.wait_healthy(&health_client, s.startup_timeout).await {
                if let Some(t) = tmp.take() {
                    let kept = t.keep();
                    eprintln!("kept data directory {}", kept.display());
                }
                return Err(e);
            }
            broker = Some(Arc::new(AsyncMutex::new(b)));
            base
        }
        Target::External { url, agent_url } => {
            wait_external_healthy(&health_client, url, s.startup_timeout).await?;
            agent_base = agent_url.clone();
            url.clone()
        }
    };
    let result = drive_and_audit(
        &s,
        &run_id,
        seed,
        pop,
        &graph,
        notice_rx,
        &base_url,
        &agent_base,
        broker.clone(),
    )
    .await;

    // Tear down whatever happened.
    let shutdown = match &broker {
        Some(b) => Some(
            match b.lock().await.shutdown(Duration::from_secs(10)).await {
                Shutdown::Graceful(st) => format!("SIGTERM: exited ({st})"),
                Shutdown::Killed => "SIGTERM: still running after 10 s, SIGKILLed".to_string(),
                Shutdown::NotRunning => "was not running at the end".to_string(),
            },
        ),
        None => None,
    };
    graph.stop();
    let mut report = result?;
    report.broker_shutdown = shutdown;
    if let Some(dir) = &data_dir {
        let log = dir.join("broker.log");
        if !report.audit.passed {
            keep = true;
        }
        if keep {
            if let Some(t) = tmp.take() {
                let _ = t.keep();
            }
            report.broker_log = Some(log.display().to_string());
        }
    }
    Ok(report)
}

/// Campaign mode (`--campaign`, `crate::campaign`): starts the fake Graph API and the broker
/// (agents with room for every campaign conversation), runs the campaign, stops the broker.
pub async fn run_campaign(s: Settings) -> anyhow::Result<crate::campaign::CampaignReport> {
    let Target::Spawn { bin, .. } = &s.target else {
        anyhow::bail!("--campaign needs --broker-bin");
    };
    let run_id = format!("{:08X}", rand::random::<u32>());
    // Status callbacks are not generated: the campaign measures the outbox, not the callbacks.
    let (notice_tx, _notice_rx) = mpsc::unbounded_channel();
    let graph = FakeGraph::start(
        s.graph_port,
        s.access_token.clone(),
        s.throttle_ratio,
        run_id,
        notice_tx,
    )
    .await?;
    let dir = tempfile::Builder::new()
        .prefix("switchboard-campaign-")
        .tempdir()?;
    let listen = format!("127.0.0.1:{}", free_loopback_port()?);
    let api_listen = format!("127.0.0.1:{}", free_loopback_port()?);
    let agents = s.agent_tokens.len().max(1);
    let room = u32::try_from(s.campaign / agents + 1_000).unwrap_or(u32::MAX);
    let cfg = render(&BrokerConfigSpec {
        listen: listen.clone(),
        api_listen: Some(api_listen.clone()),
        storage_path: dir.path().join("db").display().to_string(),
        app_secret: &s.app_secret,
        verify_token: &s.verify_token,
        access_token: &s.access_token,
        graph_api_base: graph.base_url(),
        numbers: s.numbers,
        mps: s.mps,
        agent_ids: &s.agent_ids,
        agent_tokens: &s.agent_tokens,
        admin_token: &s.admin_token,
        max_concurrent: s.max_concurrent.max(room),
        automation: false,
        fanout_teams: 0,
        event_streams: 0,
        campaign_owners: 0,
        campaign_room: 0,
    })?;
    let cfg_path = dir.path().join("switchboard-loadtest.toml");
    std::fs::write(&cfg_path, cfg).with_context(|| format!("writing {}", cfg_path.display()))?;
    let base = format!("http://{listen}");
    let mut broker =
        BrokerProcess::new(bin, &cfg_path, &dir.path().join("broker.log"), base.clone());
    broker.start()?;
    let health = outcome::client(2, Some(Duration::from_secs(2)))?;
    broker.wait_healthy(&health, s.startup_timeout).await?;
    let result =
        crate::campaign::drive(&s, &graph.state, &base, &format!("http://{api_listen}")).await;
    let _ = broker.shutdown(Duration::from_secs(10)).await;
    graph.stop();
    if result.is_err() {
        eprintln!("broker log (last lines):\n{}", broker.log_tail(20));
        let kept = dir.keep();
        eprintln!("kept data directory {}", kept.display());
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn drive_and_audit(
    s: &Settings,
    run_id: &str,
    seed: u64,
    pop: Arc<Population>,
    graph: &FakeGraph,
    notice_rx: mpsc::UnboundedReceiver<crate::fake_graph::SentNotice>,
    base_url: &str,
    agent_base: &str,
    broker: Option<Arc<AsyncMutex<BrokerProcess>>>,
) -> anyhow::Result<Report> {
    let k = s.agent_tokens.len();
    let webhook_client = outcome::client(s.connections, Some(s.request_timeout))?;
    let api = ApiClient {
        client: outcome::client(k * 4 + 32, None)?,
        base_url: base_url.to_string(),
        timeout: s.request_timeout,
    };

    // 2. baseline
    let baseline = if s.baseline {
        let exe = std::env::current_exe().context("locating the load generator's binary")?;
        let bl = Baseline::start(s.baseline_mode, &exe).await?;
        let gen = Arc::new(
            Generator::new(
                pop.clone(),
                format!("{:08X}", rand::random::<u32>()),
                &s.app_secret,
                s.batch_ratio,
                s.max_batch,
            )
            .with_media_share(s.media_share)
            .with_bot_texts(s.bot_texts),
        );
        let ctx = LoadCtx::new(
            gen,
            webhook_client.clone(),
            bl.webhook_url(),
            s.duplicate_ratio,
            s.redeliveries,
            s.connections,
            s.request_timeout,
        );
        if s.baseline_rounds > 1 {
            // Driven in rounds with the broker in step 4; the server stays up until then.
            Some(BaselineRun::Rounds(bl, ctx))
        } else {
            let sum = drive(&ctx, s, s.duration, seed).await;
            ctx.set_give_up_at(Instant::now());
            Some(BaselineRun::Done(sum, ctx.stats.ack.summary()))
        }
    } else {
        None
    };

    // 3. agents and status callbacks
    let gen = Arc::new(
        Generator::new(
            pop.clone(),
            run_id.to_string(),
            &s.app_secret,
            s.batch_ratio,
            s.max_batch,
        )
        .with_media_share(s.media_share)
        .with_bot_texts(s.bot_texts),
    );
    let ctx = LoadCtx::new(
        gen.clone(),
        webhook_client.clone(),
        format!("{base_url}/webhooks/whatsapp"),
        s.duplicate_ratio,
        s.redeliveries,
        s.connections,
        s.request_timeout,
    );
    // Before any agent runs, so none of them claims a campaign conversation.
    let campaign = if s.mixed {
        Some(Campaign::prepare(s, base_url, agent_base).await?)
    } else {
        None
    };
    let agents = if k > 0 {
        let a = Agents::start(AgentsConfig {
            // Their own connections: pooled connections belong to the runtime that opened them,
            // and the agents run on a runtime of their own.
            api: ApiClient {
                client: outcome::client(k * 4 + 32, None)?,
                base_url: agent_base.to_string(),
                timeout: s.request_timeout,
            },
            tokens: s.agent_tokens.clone(),
            ids: s.agent_ids.clone(),
            race: s.claim_race,
            mode: s.claim_mode,
            event_types: s.event_types.clone(),
            resolve_after: s.resolve_after,
            replay_ratio: s.replay_ratio,
            run_id: run_id.to_string(),
        })?;
        let n = a
            .wait_connected(Instant::now() + Duration::from_secs(10))
            .await;
        if n < k {
            eprintln!("warning: only {n} of {k} agents have an open event stream; going on");
        }
        Some(a)
    } else {
        None
    };
    let fanout = if s.sse_agents > 0 {
        let f = Fanout::start(
            &api,
            &s.admin_token,
            agent_base,
            s.sse_agents,
            s.teams,
            s.event_types.as_deref(),
            &gen.wamid_prefix(),
        )
        .await?;
        let n = f
            .wait_connected(Instant::now() + Duration::from_secs(30))
            .await;
        if n < s.sse_agents {
            eprintln!(
                "warning: only {n} of {} event streams are open; going on",
                s.sse_agents
            );
        }
        let _ = ctx.ack_observer.set(f.observer(pop.clone()));
        Some(f)
    } else {
        None
    };
    let broker_pid = match &broker {
        Some(b) => b.lock().await.pid(),
        None => None,
    };
    let cpu_at_start = broker_pid.and_then(cpu_seconds);
    let poster = StatusPoster::start(ctx.clone(), notice_rx, seed ^ 0x5EED, s.status_delay);

    // 4. load (and crash)
    // The broker's own histograms around the run; a restart resets them, so not with a crash.
    let scrape_before = match s.crash_after {
        None => Scrape::fetch(&api.client, base_url).await,
        Some(_) => None,
    };
    let load_start = Instant::now();
    let campaign = campaign.map(|c| c.start(s, graph.state.clone()));
    let crash_task = match (s.crash_after, &broker) {
        (Some(after), Some(b)) => Some(tokio::spawn(crash_and_restart(
            b.clone(),
            outcome::client(2, Some(Duration::from_secs(2)))?,
            load_start,
            after,
            s.startup_timeout,
        ))),
        _ => None,
    };
    let (summary, baseline) = match baseline {
        Some(BaselineRun::Rounds(server, bl_ctx)) => {
            let pid = match &broker {
                Some(b) => b.lock().await.pid(),
                None => None,
            };
            let r = drive_rounds(&bl_ctx, &ctx, s, s.baseline_rounds, seed, pid).await;
            bl_ctx.set_give_up_at(Instant::now());
            drop(server);
            let latency = bl_ctx.stats.ack.summary();
            (
                r.broker,
                Some((r.baseline, latency, r.ratios, r.broker_cpu)),
            )
        }
        Some(BaselineRun::Done(sum, latency)) => {
            let br = drive(&ctx, s, s.duration, seed).await;
            let ratios = vec![ratio(&br, &sum)];
            (br, Some((sum, latency, ratios, None)))
        }
        None => (drive(&ctx, s, s.duration, seed).await, None),
    };
    let crash = match crash_task {
        Some(t) => Some(match t.await {
            Ok(c) => c,
            Err(e) => Crash {
                error: Some(format!("crash task failed: {e}")),
                ..Default::default()
            },
        }),
        None => None,
    };
    let campaign = match campaign {
        Some(c) => Some(c.finish().await?),
        None => None,
    };

    // 5. drain
    let deadline = Instant::now() + s.drain_timeout;
    ctx.set_give_up_at(deadline);
    // First, so the backlog read is the one at the load's end (not across a restart).
    let media_backlog = if s.media_share > 0.0 {
        wait_media_drained(&api.client, base_url, deadline).await
    } else {
        None
    };
    ctx.redelivering.wait_idle(deadline).await;
    let fanout = match fanout {
        Some(f) => {
            let mut r = f.finish(deadline).await;
            // Not across a restart: the new process's clock starts at 0.
            if s.crash_after.is_none() {
                r.broker_cpu_s = delta(cpu_at_start, broker_pid.and_then(cpu_seconds));
                r.broker_cpu_us_per_event = r
                    .broker_cpu_s
                    .filter(|_| r.delivered > 0)
                    .map(|c| c * 1e6 / r.delivered as f64);
            }
            Some(r)
        }
        None => None,
    };
    let shared: Option<Arc<AgentsShared>> = match agents {
        Some(a) => {
            a.stop_claiming();
            a.quiesce(Duration::from_millis(500), deadline).await;
            Some(a.stop(deadline).await)
        }
        None => None,
    };
    let broker_view = match &scrape_before {
        Some(before) => Scrape::fetch(&api.client, base_url)
            .await
            .map(|after| after.since(before)),
        None => None,
    };
    let replies = shared
        .as_ref()
        .map(|sh| lock(&sh.replies).clone())
        .unwrap_or_default();
    let pending =
        audit::wait_for_sends(&api, &s.admin_token, &replies, &graph.state, deadline).await;
    poster.finish(deadline).await;
    ctx.redelivering.wait_idle(deadline).await;

    // 6. audit
    let ledger = ctx.ledger.snapshot();
    let status_acked = ctx.status_ledger.snapshot();
    let sends = graph.state.sends();
    let (ownership, mismatches, seen, wamids_seen) = match &shared {
        Some(sh) => (
            lock(&sh.ownership).clone(),
            lock(&sh.replay_mismatches).clone(),
            lock(&sh.seen_via_sse).clone(),
            lock(&sh.wamids_seen).clone(),
        ),
        None => Default::default(),
    };
    let prefix = gen.wamid_prefix();
    let kills: Vec<Instant> = crash.iter().filter_map(|c| c.killed_at).collect();
    let (audit, reply_latency) = match audit::fetch_conversations(&api, &s.admin_token, &pop).await
    {
        Ok(convs) => audit::check(
            &Observed {
                wamid_prefix: &prefix,
                ledger: &ledger,
                population: &pop,
                ownership: &ownership,
                replies: &replies,
                replay_mismatches: &mismatches,
                sends: &sends,
                status_acked: &status_acked,
                seen_via_sse: &seen,
                wamids_seen: &wamids_seen,
                agents: k,
                kills: &kills,
                origin: load_start,
            },
            &convs,
        ),
        Err(e) => (
            Audit::failed(format!("reading the broker's state failed: {e:#}")),
            ReplyLatency::default(),
        ),
    };

    // 7. report
    let mut errors = ctx.stats.errors.snapshot();
    if let Some(sh) = &shared {
        errors.extend(sh.errors.snapshot());
    }
    let mut settings = BTreeMap::new();
    settings.insert("rate".into(), json!(s.rate.unwrap_or(0.0)));
    settings.insert("duration_s".into(), json!(s.duration.as_secs_f64()));
    settings.insert("connections".into(), json!(s.connections));
    settings.insert("customers".into(), json!(s.customers));
    settings.insert("numbers".into(), json!(s.numbers));
    settings.insert("agents".into(), json!(k));
    settings.insert("sse_agents".into(), json!(s.sse_agents));
    settings.insert("teams".into(), json!(s.teams));
    settings.insert("claim_race".into(), json!(s.claim_race));
    settings.insert("claim_mode".into(), json!(s.claim_mode.as_str()));
    settings.insert("event_types".into(), json!(s.event_types));
    settings.insert("duplicate_ratio".into(), json!(s.duplicate_ratio));
    settings.insert("batch_ratio".into(), json!(s.batch_ratio));
    settings.insert("throttle_ratio".into(), json!(s.throttle_ratio));
    settings.insert("media_share".into(), json!(s.media_share));
    settings.insert("bot_texts".into(), json!(s.bot_texts));
    settings.insert("automation".into(), json!(s.automation));
    settings.insert(
        "crash_after_s".into(),
        json!(s.crash_after.map(|d| d.as_secs_f64())),
    );
    settings.insert("seed".into(), json!(seed));
    if s.mixed {
        settings.insert("mixed".into(), json!(true));
        settings.insert("campaign".into(), json!(s.campaign));
        settings.insert("campaign_batch".into(), json!(s.campaign_batch));
    }
    let baseline = baseline.map(|(load, latency_ms, round_ratios, cpu)| BaselineResult {
        mode: s.baseline_mode.as_str(),
        rounds: s.baseline_rounds,
        ratio: ratio(&summary, &load),
        round_ratios,
        broker_cpu_s: cpu.map(|c| c.0),
        broker_cpu_during_baseline_s: cpu.map(|c| c.1),
        load,
        latency_ms,
    });
    let target = match &s.target {
        Target::Spawn { bin, .. } => format!("{} (started at {base_url})", bin.display()),
        Target::External { url, .. } => url.clone(),
    };
    Ok(Report {
        run_id: run_id.to_string(),
        target,
        settings,
        mode: summary.mode,
        offered_rate: summary.offered_rate,
        achieved_rate: summary.achieved_rate,
        webhooks: ctx.stats.counters.snapshot(),
        latency_ms: Latencies {
            webhook_ack: ctx.stats.ack.summary(),
            webhook_send_lag: ctx.stats.send_lag.summary(),
            claim: shared
                .as_ref()
                .map(|sh| sh.claim_latency.summary())
                .unwrap_or_default(),
            reply_to_graph: reply_latency.from_ack.summary(),
            reply_request_to_graph: reply_latency.from_request.summary(),
            status_webhook_ack: ctx.stats.status_ack.summary(),
        },
        load: summary,
        agents: shared
            .as_ref()
            .map(|sh| sh.counters.snapshot())
            .unwrap_or_default(),
        fake_graph: graph.state.counters.snapshot(),
        outbound_per_number: graph.state.rates_per_number(),
        mps: s.mps,
        errors,
        crash,
        baseline,
        broker_view,
        fanout,
        replies_pending_at_deadline: pending,
        media_backlog,
        broker_shutdown: None,
        broker_log: None,
        audit,
        campaign: campaign.map(|c| c.report(s, &graph.state, &replies)),
    })
}
