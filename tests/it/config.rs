//! Configuration errors and process behaviour of the real binary.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// A valid config (as TOML text) using `dir` for storage and a dummy graph URL.
fn valid(dir: &Path, port: u16) -> String {
    let mut cfg = Cfg::new(&dir.join("db"), "http://127.0.0.1:9/v25.0");
    cfg.listen = format!("127.0.0.1:{port}");
    cfg.toml()
}

/// Runs the binary on `toml` and expects exit code 2 with exactly one non-empty stderr line
/// containing every string of `must_contain` (case-insensitive). Returns that line.
pub(crate) fn expect_config_error(toml: &str, must_contain: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, toml).unwrap();
    run_expect_exit2(
        &[std::ffi::OsStr::new("--config"), path.as_os_str()],
        dir.path(),
        must_contain,
    )
}

fn run_expect_exit2(args: &[&std::ffi::OsStr], cwd: &Path, must_contain: &[&str]) -> String {
    run_expect_exit(2, false, args, cwd, must_contain)
}

/// Runs the binary and expects exit code `code` with exactly one non-empty stderr line
/// containing every string of `must_contain` (case-insensitive). Returns that line. With
/// `info_logs`, INFO log lines may come before it (a failure after the listeners are bound,
/// which log that they listen).
fn run_expect_exit(
    code: i32,
    info_logs: bool,
    args: &[&std::ffi::OsStr],
    cwd: &Path,
    must_contain: &[&str],
) -> String {
    let mut child = Command::new(bin_path())
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // bounded wait: a broker that starts despite the bad config must not hang the suite
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "switchboard did not exit on a bad config; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status {:?}; stderr:\n{stderr}",
        out.status
    );
    let lower = stderr.to_lowercase();
    assert!(
        !lower.contains("panick"),
        "panic on config error:\n{stderr}"
    );
    assert!(
        !lower.contains("backtrace"),
        "backtrace on config error:\n{stderr}"
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !(info_logs && l.contains("Z  INFO ")))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one line on stderr, got:\n{stderr}"
    );
    for want in must_contain {
        assert!(
            lower.contains(&want.to_lowercase()),
            "stderr line should mention {want:?}: {stderr}"
        );
    }
    lines[0].to_owned()
}

#[test]
fn agent_with_unknown_team_exits_2_naming_agents_and_team() {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = valid(dir.path(), free_port());
    toml.push_str("\n[[agents]]\nid = \"eve\"\nname = \"Eve\"\ntoken = \"t-eve\"\nteams = [\"marketing\"]\nrole = \"agent\"\nmax_concurrent = 3\n");
    expect_config_error(&toml, &["agents", "marketing"]);
}

#[test]
fn a_zero_max_live_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Cfg::new(&dir.path().join("db"), "http://127.0.0.1:9/v25.0");
    cfg.listen = format!("127.0.0.1:{}", free_port());
    cfg.conversations_extra = "max_live = 0".into();
    expect_config_error(&cfg.toml(), &["conversations.max_live", "greater than 0"]);
}

#[test]
fn duplicate_agent_ids_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = valid(dir.path(), free_port());
    toml.push_str("\n[[agents]]\nid = \"alice\"\nname = \"Alice Two\"\ntoken = \"t-alice-2\"\nteams = [\"support\"]\nrole = \"agent\"\nmax_concurrent = 3\n");
    expect_config_error(&toml, &["agents", "alice"]);
}

#[test]
fn duplicate_team_ids_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = valid(dir.path(), free_port());
    toml.push_str("\n[[teams]]\nid = \"sales\"\nname = \"Sales again\"\n");
    expect_config_error(&toml, &["teams", "sales"]);
}

#[test]
fn duplicate_number_ids_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = valid(dir.path(), free_port());
    toml.push_str(&format!(
        "\n[[numbers]]\nphone_number_id = \"{N1}\"\ndisplay_phone_number = \"15550000000\"\ndefault_team = \"support\"\n"
    ));
    expect_config_error(&toml, &["numbers", N1]);
}

#[test]
fn number_with_unknown_default_team_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = valid(dir.path(), free_port());
    toml.push_str("\n[[numbers]]\nphone_number_id = \"306540352242944\"\ndisplay_phone_number = \"15550783883\"\ndefault_team = \"billing\"\n");
    expect_config_error(&toml, &["numbers", "billing"]);
}

#[test]
fn bad_listen_address_exits_2_naming_listen() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["not-an-address", "127.0.0.1:99999", "127.0.0.1"] {
        let toml = valid(dir.path(), 1)
            .replace("listen = \"127.0.0.1:1\"", &format!("listen = \"{bad}\""));
        assert!(toml.contains(bad));
        expect_config_error(&toml, &["listen"]);
    }
}

#[test]
fn an_address_that_cannot_be_bound_exits_2_naming_its_key() {
    // Taken by another process, and one this machine does not have (TEST-NET-1).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    for (key, addr) in [
        ("server.listen", taken.as_str()),
        ("server.listen", "192.0.2.1:8080"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let toml = valid(dir.path(), 1)
            .replace("listen = \"127.0.0.1:1\"", &format!("listen = \"{addr}\""));
        assert!(toml.contains(addr));
        expect_config_error(&toml, &[key, addr]);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut toml = valid(dir.path(), free_port());
    toml = toml.replacen(
        "[server]\n",
        &format!("[server]\napi_listen = \"{taken}\"\n"),
        1,
    );
    assert!(toml.contains("api_listen"), "{toml}");
    expect_config_error(&toml, &["server.api_listen", &taken]);
}

#[test]
fn unreadable_config_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("does-not-exist.toml");
    run_expect_exit2(
        &[std::ffi::OsStr::new("--config"), missing.as_os_str()],
        dir.path(),
        &["does-not-exist.toml"],
    );
}

#[test]
fn toml_syntax_error_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = valid(dir.path(), free_port());
    toml.push_str("\n[[agents]\nid = \"broken\n");
    expect_config_error(&toml, &[]);
}

#[test]
fn invalid_role_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let toml =
        valid(dir.path(), free_port()).replacen("role = \"supervisor\"", "role = \"overlord\"", 1);
    expect_config_error(&toml, &["role"]);
}

#[test]
fn missing_app_secret_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let toml = valid(dir.path(), free_port()).replace("app_secret = \"test-secret\"\n", "");
    expect_config_error(&toml, &["app_secret"]);
}

#[test]
fn library_rejects_unknown_team_in_agent() {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = valid(dir.path(), 0);
    toml.push_str("\n[[agents]]\nid = \"eve\"\nname = \"Eve\"\ntoken = \"t-eve\"\nteams = [\"marketing\"]\nrole = \"agent\"\nmax_concurrent = 3\n");
    assert!(switchboard::config::Config::from_toml_str(&toml).is_err());
    // and the base config is fine
    assert!(switchboard::config::Config::from_toml_str(&valid(dir.path(), 0)).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_starts_serves_healthz_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg_path = dir.path().join("ok.toml");
    std::fs::write(&cfg_path, valid(dir.path(), port)).unwrap();
    let mut p = BinProc::spawn(&cfg_path, port, &dir.path().join("log.txt")).await;
    let cust = customer();
    p.api.open_conv(N1, &cust, "before sigterm").await;
    let st = p.signal_and_wait("TERM", Duration::from_secs(20)).await;
    assert!(
        st.success(),
        "exit after SIGTERM: {st:?}; log:\n{}",
        p.log_text()
    );
    // storage was flushed and released: a new process opens it and has the data
    let port2 = free_port();
    std::fs::write(&cfg_path, valid(dir.path(), port2)).unwrap();
    let p2 = BinProc::spawn(&cfg_path, port2, &dir.path().join("log2.txt")).await;
    let id = p2.api.conv_id(N1, &cust).await;
    assert_eq!(
        p2.api.messages(&id).await[0]["text"],
        serde_json::json!("before sigterm")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_gauge_after_a_restart_counts_each_conversation_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("ok.toml");
    let port = free_port();
    std::fs::write(&cfg_path, valid(dir.path(), port)).unwrap();
    let mut p = BinProc::spawn(&cfg_path, port, &dir.path().join("log.txt")).await;
    let claimed = p.api.open_conv(N1, &customer(), "one").await;
    p.api.open_conv(N1, &customer(), "two").await;
    p.api.must_claim("t-alice", &claimed).await;
    assert!(p
        .signal_and_wait("TERM", Duration::from_secs(20))
        .await
        .success());

    // A process of its own, so its gauge holds this broker's counts alone.
    let port = free_port();
    std::fs::write(&cfg_path, valid(dir.path(), port)).unwrap();
    let p = BinProc::spawn(&cfg_path, port, &dir.path().join("log2.txt")).await;
    let support = |status: &'static str| {
        let api = &p.api;
        async move {
            let text = api.metrics().await;
            let labels = [
                format!("status=\"{status}\""),
                "team=\"support\"".to_string(),
            ];
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            metric_sum(&text, "switchboard_conversations", &labels).unwrap_or(0.0)
        }
    };
    // The start-up count lands after the broker serves; a count added twice, or a change
    // overwritten by it, would never settle at these values.
    eventually("gauges counted after the restart", WAIT, || async {
        match (support("assigned").await, support("queued").await) {
            (1.0, 1.0) => Ok(()),
            other => Err(format!("assigned, queued = {other:?}")),
        }
    })
    .await;
    // Changes after the restart move the counted values.
    assert_eq!(p.api.release("t-alice", &claimed).await.0, 200);
    eventually("the release is counted", WAIT, || async {
        match (support("assigned").await, support("queued").await) {
            (0.0, 2.0) => Ok(()),
            other => Err(format!("assigned, queued = {other:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_exits_cleanly_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg_path = dir.path().join("ok.toml");
    std::fs::write(&cfg_path, valid(dir.path(), port)).unwrap();
    let mut p = BinProc::spawn(&cfg_path, port, &dir.path().join("log.txt")).await;
    let st = p.signal_and_wait("INT", Duration::from_secs(20)).await;
    assert!(
        st.success(),
        "exit after SIGINT: {st:?}; log:\n{}",
        p.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_flag_reads_config_default_toml() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/default.toml"),
        valid(dir.path(), port),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("log.txt")).unwrap();
    let child = Command::new(bin_path())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let mut p = BinProc {
        child,
        api: Api::from_base(format!("http://127.0.0.1:{port}")),
        log: dir.path().join("log.txt"),
    };
    p.wait_healthy(Duration::from_secs(30)).await;
    assert_eq!(p.api.healthz().await, 200);
}

const OPS_TEAM: &str = "\n[[teams]]\nid = \"ops\"\nname = \"Ops\"\n";

#[test]
fn routing_rule_with_a_bad_regex_exits_2_naming_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = valid(dir.path(), free_port());
    toml.push_str(
        "\n[[routing.rules]]\nname = \"orders\"\nwhen = { regex = \"order(\" }\nthen = { team = \"sales\" }\n",
    );
    let line = expect_config_error(&toml, &["routing.rules[0]", "orders", "regex"]);
    assert!(line.starts_with("config error:"), "{line}");
}

#[test]
fn routing_rule_with_an_unknown_team_exits_2_naming_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = valid(dir.path(), free_port());
    toml.push_str("\n[[routing.rules]]\nname = \"vip\"\nthen = { team = \"vips\" }\n");
    expect_config_error(&toml, &["routing.rules[0]", "vip", "vips"]);
}

#[test]
fn bad_business_hours_and_durations_exit_2_naming_the_key() {
    for (extra, key) in [
        ("time_zone = \"Mars/Olympus\"", "time_zone"),
        ("hours = { mon = [\"9-17\"] }", "hours.mon"),
        ("holidays = [\"2026-02-30\"]", "holidays"),
        ("reassign_after = \"soon\"", "reassign_after"),
        (
            "sla = { first_response = \"5 parsecs\" }",
            "sla.first_response",
        ),
        ("fallback_teams = [\"night\"]", "fallback_teams"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut toml = valid(dir.path(), free_port());
        toml.push_str(&format!(
            "\n[[teams]]\nid = \"night\"\nname = \"Night\"\n{extra}\n"
        ));
        if key == "fallback_teams" {
            toml = toml.replace("id = \"night\"", "id = \"late\"");
        }
        expect_config_error(&toml, &["teams", key]);
    }
}

#[test]
fn a_misspelt_team_key_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = valid(dir.path(), free_port());
    toml.push_str("\n[[teams]]\nid = \"night\"\nname = \"Night\"\nasignment = \"least_loaded\"\n");
    expect_config_error(&toml, &["teams[", "].asignment", "unknown key"]);
    // A bad value inside the (flattened) settings names its key too, not just the team.
    let mut toml = valid(dir.path(), free_port());
    toml.push_str("\n[[teams]]\nid = \"night\"\nassignment = \"leastloaded\"\n");
    expect_config_error(&toml, &["teams[", "].assignment", "leastloaded"]);
}

#[test]
fn a_misspelt_key_anywhere_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let base = valid(dir.path(), free_port());
    let cases: [(&str, &str, &str); 9] = [
        ("sync = true", "snyc = true", "storage.snyc"),
        ("[outbox]", "[outbx]", "outbx"),
        (
            "max_concurrent = 2",
            "max_concurent = 2",
            "agents[0].max_concurent",
        ),
        (
            "[server]\n",
            "[server]\nlisten_api = \"x\"\n",
            "server.listen_api",
        ),
        ("waba_id", "wabaid", "whatsapp.wabaid"),
        ("mps = 80", "msp = 80", "numbers[1].msp"),
        ("max_attempts", "max_attempt", "outbox.max_attempt"),
        (
            "idle_timeout_ms",
            "idle_timeout",
            "conversations.idle_timeout",
        ),
        (
            "[conversations]",
            "routng = 1\n[conversations]",
            "outbox.routng",
        ),
    ];
    for (from, to, key) in cases {
        assert!(base.contains(from), "{from}");
        let toml = base.replacen(from, to, 1);
        let line = expect_config_error(&toml, &[key, "unknown key"]);
        assert_eq!(line, format!("config error: {key}: unknown key"));
    }
    // A misspelt key inside a team's inline table names the whole path.
    let mut toml = valid(dir.path(), free_port());
    toml.push_str("\n[[teams]]\nid = \"night\"\nsla = { first_respons = \"5m\" }\n");
    expect_config_error(&toml, &["teams[2].sla.first_respons", "unknown key"]);
}

#[test]
fn storage_path_that_cannot_be_a_directory_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    for path in [file.clone(), file.join("db")] {
        let mut cfg = Cfg::new(&path, "http://127.0.0.1:9/v25.0");
        cfg.listen = format!("127.0.0.1:{}", free_port());
        let line = expect_config_error(&cfg.toml(), &["storage.path", "a-file"]);
        assert!(line.starts_with("config error: storage.path: "), "{line}");
    }
}

#[test]
fn media_stores_that_cannot_be_used_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Cfg::new(&dir.path().join("db"), "http://127.0.0.1:9/v25.0");
    cfg.listen = format!("127.0.0.1:{}", free_port());
    let mut s3 = cfg.clone();
    s3.extra.push_str("\n[media]\nbackend = \"s3\"\n");
    expect_config_error(&s3.toml(), &["media.bucket"]);
    let mut unknown = cfg.clone();
    unknown.extra.push_str("\n[media]\nbackend = \"ftp\"\n");
    expect_config_error(&unknown.toml(), &["media.backend"]);
    let mut nice = cfg.clone();
    nice.extra.push_str("\n[media]\nfetch_nice = 20\n");
    expect_config_error(&nice.toml(), &["media.fetch_nice", "0 to 19"]);
    // A directory that cannot be made: found when the broker opens it.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let mut local = cfg.clone();
    local.extra.push_str(&format!(
        "\n[media]\npath = \"{}\"\n",
        file.join("media").display()
    ));
    let path = dir.path().join("media.toml");
    std::fs::write(&path, local.toml()).unwrap();
    let line = run_expect_exit(
        2,
        true,
        &[std::ffi::OsStr::new("--config"), path.as_os_str()],
        dir.path(),
        &["media.path", "a-file"],
    );
    assert!(line.starts_with("config error: media.path: "), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_that_cannot_be_opened_exits_1_with_one_line() {
    // Another broker holds the data directory.
    let tb = TB::start().await;
    let mut cfg = tb.cfg.clone();
    cfg.listen = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("second.toml");
    std::fs::write(&path, cfg.toml()).unwrap();
    let shown = tb.cfg.storage_path.display().to_string();
    let line = tokio::task::spawn_blocking(move || {
        run_expect_exit(
            1,
            true,
            &[std::ffi::OsStr::new("--config"), path.as_os_str()],
            dir.path(),
            &["storage error: cannot open", &shown],
        )
    })
    .await
    .unwrap();
    assert!(line.starts_with("storage error: cannot open "), "{line}");
    assert_eq!(tb.healthz().await, 200, "the first broker is unharmed");
}

/// The contract's own example (multi-line inline tables are TOML 1.1) is accepted as written,
/// its rule included (it cannot match: the broker logs a warning, see `RuleSet::warnings`).
#[test]
fn the_contracts_routing_and_team_example_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = valid(dir.path(), free_port());
    toml.push_str(OPS_TEAM);
    toml.push_str(
        r#"
[[teams]]
id = "support-us"
name = "Support US"

[[teams]]
id = "support-de"
name = "Support"
assignment = "least_loaded"       # round_robin | least_loaded | manual
time_zone = "Europe/Berlin"
hours = { mon = ["09:00-17:00"], tue = ["09:00-17:00"], sat = ["22:00-06:00"] }   # missing day = closed;
                                   # no `hours` = always open; a range may cross midnight
holidays = ["2026-12-25"]
fallback_teams = ["support-us"]   # where conversations go while this team is closed
after_hours_reply = "We are closed now and will answer from 09:00."
reassign_after = "10m"            # an assignee who has not answered the customer by then loses it
sla = { first_response = "5m", next_response = "15m", resolution = "24h", business_hours_only = true }

[[routing.rules]]                 # evaluated in order on a conversation's first message and on reopen
name = "german orders"
when = { country = ["DE", "AT"], language = ["de"], keywords = ["bestellung"], regex = "(?i)order\\s*#?\\d+",
         intent = ["order_status"], number = ["206540352242933"], message_type = ["text"],
         within_hours_of = "support", outside_hours_of = "support" }
then = { team = "ops", priority = "high", labels = ["order"] }
"#,
    );
    let config = switchboard::config::Config::from_toml_str(&toml)
        .unwrap_or_else(|e| panic!("contract example rejected: {e}"));
    assert_eq!(config.routing.rules.len(), 1);
    assert_eq!(config.routing.rules[0].name, "german orders");
}

/// The demo config routes by keyword, country and language to its teams.
#[test]
fn the_demo_config_has_routing_rules_for_its_teams() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml"),
    )
    .unwrap();
    let config = switchboard::config::Config::from_toml_str(&text).unwrap();
    let names: Vec<&str> = config
        .routing
        .rules
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert!(names.len() >= 3, "{names:?}");
    let policies = switchboard::domain::policy::compile(
        switchboard::domain::routing::RuleSet::compile(config.routing.rules.clone(), &|t| {
            config.team_exists(t)
        })
        .unwrap(),
        config
            .teams
            .iter()
            .map(|t| (t.id.clone(), t.settings.clone()))
            .collect(),
    )
    .unwrap();
    let route = |customer: &str, text: &str| {
        let input = switchboard::domain::routing::RouteInput {
            number: &config.numbers[0].phone_number_id,
            customer,
            text: Some(text),
            message_type: "text",
            labels: &[],
            intent: None,
            number_country: None,
            number_languages: &[],
        };
        policies
            .rules
            .route(&input, &|_| true)
            .and_then(|m| m.team.map(str::to_string))
    };
    assert_eq!(
        route(
            "4915112345678",
            "Hallo, wo ist meine Bestellung? Ich warte schon lange."
        )
        .as_deref(),
        Some("sales")
    );
    assert_eq!(
        route(
            "4915112345678",
            "Guten Tag, ich habe eine Frage zu meinem Konto bitte."
        )
        .as_deref(),
        Some("support")
    );
    assert_eq!(
        route("14155550100", "I would like a price quote for 200 units").as_deref(),
        Some("sales")
    );
}

/// Messages name their author by id, and the broker signs its own (after-hours replies,
/// reassignment notes) "system": an agent with that id would pass for the broker.
#[test]
fn an_agent_with_the_reserved_id_system_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = valid(dir.path(), free_port());
    toml.push_str("\n[[agents]]\nid = \"system\"\nname = \"Sys\"\ntoken = \"t-system\"\nteams = [\"support\"]\nrole = \"agent\"\nmax_concurrent = 3\n");
    let line = expect_config_error(&toml, &["agents[5].id", "\"system\" is reserved"]);
    assert!(line.starts_with("config error: "), "{line}");
}
