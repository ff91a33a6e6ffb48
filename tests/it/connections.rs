//! The front door under hostile or broken peers: read timeouts, connection caps, the open-file
//! limit, and a listener that answers while no broker is attached (start-up, restarts).

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads from `s` until the peer closes it (or `limit` passes: None); returns what was read.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.ok()?;
    Some(got)
}

/// A client that opens a new connection for every request, so no request of the test rides on
/// a connection the broker is about to close for idling.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn signed_webhook(client: &reqwest::Client, base: &str) -> u16 {
    let body = serde_json::to_vec(&text_webhook(N1, &customer(), &wamid(), now(), "hi")).unwrap();
    client
        .post(format!("{base}/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .header("X-Hub-Signature-256", sign(&body))
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connections_are_cut_while_signed_webhooks_keep_getting_200() {
    // Few webhook slots: if slow bodies held them, every real webhook below would get 503.
    let tb = TB::start_with(|c| {
        c.server_extra = "max_inflight_webhooks = 2\nheader_timeout_ms = 400\nidle_timeout_ms = 600\nbody_timeout_ms = 400\nmin_body_rate = 1000".into()
    })
    .await;
    let addr = tb.broker.as_ref().unwrap().addr();

    // Declared a 100-byte body, sent one byte of it.
    let mut slow_bodies = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let body = b"{";
        let head = b"POST /webhooks/whatsapp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Hub-Signature-256: sha256=00\r\nContent-Length: 100\r\n\r\n";
        s.write_all(head).await.unwrap();
        s.write_all(body).await.unwrap();
        slow_bodies.push(s);
    }
    // Half a request head, never finished.
    let mut slow_heads = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /webhooks/whatsapp HTTP/1.1\r\nHost: x\r\nContent-Le")
            .await
            .unwrap();
        slow_heads.push(s);
    }
    // Nothing at all.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }

    // Meanwhile, real webhooks are taken.
    let client = fresh_client();
    for _ in 0..10 {
        assert_eq!(signed_webhook(&client, &tb.api.base).await, 200);
    }

    // And every slow connection is cut: bodies with 408, the rest closed.
    for s in &mut slow_bodies {
        let got = read_until_closed(s, Duration::from_secs(10))
            .await
            .expect("a connection with a stalled body was not closed");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("request_timeout"), "{text}");
    }
    for s in slow_heads.iter_mut().chain(silent.iter_mut()) {
        read_until_closed(s, Duration::from_secs(10))
            .await
            .expect("a slow or silent connection was not closed");
    }
    let text = tb.metrics().await;
    for (phase, n) in [("body", 8.0), ("head", 4.0), ("idle", 4.0)] {
        let seen = metric_sum(
            &text,
            "switchboard_connections_timed_out_total",
            &[&format!("phase=\"{phase}\"")],
        )
        .unwrap_or(0.0);
        assert!(seen >= n, "{phase}: {seen} < {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_keeps_the_minimum_rate_is_taken() {
    let tb =
        TB::start_with(|c| c.server_extra = "body_timeout_ms = 200\nmin_body_rate = 50".into())
            .await;
    let addr = tb.broker.as_ref().unwrap().addr();
    let body = serde_json::to_vec(&text_webhook(
        N1,
        &customer(),
        &wamid(),
        now(),
        "slow but steady",
    ))
    .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /webhooks/whatsapp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Hub-Signature-256: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        sign(&body),
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // Past the grace period, at well above 50 bytes/s: 40 bytes every 100 ms.
    for chunk in body.chunks(40) {
        s.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = read_until_closed(&mut s, Duration::from_secs(10))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_open_more_than_its_share_of_connections() {
    let tb = TB::start_with(|c| c.server_extra = "max_connections_per_peer = 3".into()).await;
    let addr = tb.broker.as_ref().unwrap().addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    // The fourth from the same address is closed at once, before anything is read.
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    let _ = fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let got = read_until_closed(&mut fourth, Duration::from_secs(5))
        .await
        .expect("the connection over the cap was not closed");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    // Once one of the three goes, the address may connect again.
    held.pop();
    let api = &tb.api;
    let text = eventually("a connection from the address again", WAIT, || async move {
        let r = fresh_client()
            .get(api.url("/metrics"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        r.text().await.map_err(|e| e.to_string())
    })
    .await;
    let refused = metric_sum(
        &text,
        "switchboard_connections_refused_total",
        &["reason=\"peer_cap\""],
    );
    assert!(refused.unwrap_or(0.0) >= 1.0, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_health_and_metrics_still_answer() {
    let tb = TB::start_with(|c| {
        c.server_extra = "max_connections = 4\nmax_connections_per_peer = 0".into()
    })
    .await;
    let addr = tb.broker.as_ref().unwrap().addr();
    let mut held = Vec::new();
    for _ in 0..4 {
        let s = TcpStream::connect(addr).await.unwrap();
        held.push(s);
    }
    // Every connection slot is taken (each accepted connection is counted before it is read):
    // wait until the broker has accepted them all.
    let client = fresh_client();
    let base = tb.api.base.clone();
    let list = || {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let r = client
                .get(format!("{base}/api/v1/conversations"))
                .bearer_auth(ALICE)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let body: Value = r.json().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((status, body))
        }
    };
    let refused = eventually("the cap to be reached", WAIT, || async {
        match list().await? {
            (503, v) => Ok(v),
            (s, _) => Err(s.to_string()),
        }
    })
    .await;
    assert_eq!(err_code(&refused), "overloaded");
    let r = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    let open = metric_sum(&text, "switchboard_connections", &[]).unwrap_or(0.0);
    assert!(open >= 4.0, "open connections: {open}");

    // Once the held connections go, the API answers again.
    drop(held);
    eventually("the API to answer again", WAIT, || async {
        match list().await? {
            (200, _) => Ok(()),
            (s, _) => Err(s.to_string()),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_answer_503_until_a_broker_is_attached() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Cfg::new(&dir.path().join("db"), &graph.base);
    let config = switchboard::config::Config::from_toml_str(&cfg.toml()).unwrap();
    let listeners = Arc::new(
        switchboard::http::Listeners::bind(&config, switchboard::metrics::install())
            .await
            .unwrap(),
    );
    let api = Api::new(listeners.addr());
    // Storage is not even open yet: health says so instead of refusing the connection.
    assert_eq!(api.healthz().await, 503);
    let (s, v, headers) = api
        .request(
            reqwest::Method::GET,
            Some(ALICE),
            "/api/v1/conversations",
            None,
        )
        .await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(err_code(&v), "unavailable");
    assert!(headers.get("retry-after").is_some());
    let scrape = api.http.get(api.url("/metrics")).send().await.unwrap();
    assert_eq!(scrape.status().as_u16(), 200);

    let broker = switchboard::app::Broker::start_on(
        config.clone(),
        listeners.clone(),
        Arc::new(switchboard::clock::SystemClock),
    )
    .await
    .unwrap();
    assert_eq!(api.healthz().await, 200);
    // A crash of the broker (dropped, not shut down) leaves the shared listeners answering 503,
    // and a new broker on the same storage takes over the same address.
    drop(broker);
    assert_eq!(api.healthz().await, 503);
    let broker = switchboard::app::Broker::start_on(
        config,
        listeners.clone(),
        Arc::new(switchboard::clock::SystemClock),
    )
    .await
    .unwrap();
    assert_eq!(api.healthz().await, 200);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_raises_its_open_file_limit_to_the_hard_limit() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cfg = Cfg::new(&dir.path().join("db"), &graph.base);
    cfg.listen = format!("127.0.0.1:{port}");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, cfg.toml()).unwrap();
    let (soft, hard) = nofile_limits("self");
    assert!(hard > 256, "hard limit {hard} too low for this test");
    // Started with a soft limit well below the hard one, as a default login shell would give.
    let low = 256.min(soft);
    let p = BinProc::spawn_with_nofile(&config, port, &dir.path().join("log"), low).await;
    let pid = p.child.id().to_string();
    let (soft_now, hard_now) = nofile_limits(&pid);
    assert_eq!((soft_now, hard_now), (hard, hard), "{}", p.log_text());
    assert_eq!(p.api.healthz().await, 200);
}

/// The soft and hard "Max open files" of a process (`self` or a pid), from /proc.
fn nofile_limits(pid: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}
