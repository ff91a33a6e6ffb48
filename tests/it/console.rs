//! The agent console (`GET /console`) driven in a real headless Chromium through chromedriver.
//!
//! Each test starts the real broker (`TB`, with its fake Graph API) and one chromedriver on a free
//! loopback port with one headless Chromium session (1280×800), signs in through the page's
//! `input[name="token"]` and works only through the page, as an agent would; the API is used to
//! play the other people (customers through the webhook, colleagues claiming). Every wait is for
//! a condition in the page (WebDriver polling), never a sleep. What the page shows comes from the
//! broker itself (templates from its registry, media it fetched from the fake Graph API, Meta's
//! refusals through the outbox); where a test wraps the page's `fetch` it only records calls (the
//! paging test also holds one list request back until it releases it, unchanged), and only the
//! `lagged` test feeds the page's event stream (a real `lagged` needs a subscriber 4,096 events
//! behind).
//!
//! Chromium and chromedriver come from Debian (`make browser-deps` installs them, and so `make test` and `.ci/run`): when
//! they are missing these tests FAIL saying so, they never skip.
//!
//! Screenshots of the main screens are taken by `screens_for_supervisor_and_phone`; with
//! `SWITCHBOARD_SCREENSHOTS=1` they are written to `docs/` (how the README's pictures are made),
//! otherwise to a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::common::*;

/// The longest a page condition is awaited when the contract names no bound.
const PAGE_WAIT: Duration = Duration::from_secs(10);
/// How often a page condition is checked.
const POLL: Duration = Duration::from_millis(20);

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// One chromedriver and one headless Chromium session, ended when dropped (also on a failed
/// assertion): the session is deleted, which closes Chromium, then chromedriver is killed.
struct Browser {
    client: Client,
    driver: tokio::process::Child,
    port: u16,
    session: Option<String>,
}

impl Browser {
    async fn start(width: u32, height: u32) -> Browser {
        let (Some(driver_path), Some(chromium)) =
            (find_program("chromedriver"), find_program("chromium"))
        else {
            panic!(
                "the console's browser tests need Debian's `chromium` and `chromium-driver` \
                 (chromedriver) on PATH: run `make browser-deps` (or `apt-get install chromium \
                 chromium-driver`); they are never skipped"
            );
        };
        let port = free_port();
        let driver = tokio::process::Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_path.display()));
        let status = format!("http://127.0.0.1:{port}/status");
        let http = http_client(Some(Duration::from_secs(2)));
        eventually("chromedriver ready", WAIT, || {
            let (http, status) = (http.clone(), status.clone());
            async move {
                let v: Value = http
                    .get(&status)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .json()
                    .await
                    .map_err(|e| e.to_string())?;
                if v["value"]["ready"] == json!(true) {
                    Ok(())
                } else {
                    Err(v.to_string())
                }
            }
        })
        .await;
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions", "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                ],
            },
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("chromedriver would not start chromium: {e}"));
        let session = client.session_id().await.ok().flatten();
        Browser {
            client,
            driver,
            port,
            session,
        }
    }

    async fn goto_console(&self, tb: &TB) {
        self.client
            .goto(&format!("{}/console", tb.api.base))
            .await
            .expect("open /console");
    }

    /// Signs in through the page's form and waits for the live stream to be up.
    async fn sign_in(&self, tb: &TB, token: &str) {
        self.goto_console(tb).await;
        self.submit_token(token).await;
        self.wait_css(r#"body[data-live="up"]"#).await;
    }

    /// Types `token` into the open page's sign-in form and submits it.
    async fn submit_token(&self, token: &str) {
        let input = self.wait_css(r#"input[name="token"]"#).await;
        input.clear().await.expect("clear token");
        input.send_keys(token).await.expect("type token");
        self.click("Sign in").await;
    }

    async fn wait_css(&self, css: &str) -> Element {
        self.wait_within(Locator::Css(css), PAGE_WAIT).await
    }

    async fn wait_within(&self, loc: Locator<'_>, at_most: Duration) -> Element {
        match self
            .client
            .wait()
            .at_most(at_most)
            .every(POLL)
            .for_element(loc)
            .await
        {
            Ok(e) => e,
            Err(e) => {
                let body = match self.client.find(Locator::Css("body")).await {
                    Ok(b) => b.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                panic!("{loc:?} not in the page within {at_most:?}: {e}\npage text:\n{body}")
            }
        }
    }

    /// The enabled button whose visible name is `name` (the contract names buttons by action).
    async fn button(&self, name: &str) -> Element {
        let xpath = format!("//button[normalize-space()='{name}' and not(@disabled)]");
        self.wait_within(Locator::XPath(&xpath), PAGE_WAIT).await
    }

    /// Clicks the enabled button named `name`, finding it again if the page re-rendered it
    /// between finding and clicking (events re-render a conversation's header).
    async fn click(&self, name: &str) {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            match self.button(name).await.click().await {
                Ok(()) => return,
                Err(e) if e.is_stale_element_reference() && Instant::now() < deadline => {}
                Err(e) => panic!("click {name}: {e}"),
            }
        }
    }

    /// The text of the first element matching `css`, found again if the page re-rendered it
    /// between finding and reading (events re-render the list and the open conversation).
    async fn text_of(&self, css: &str) -> String {
        self.attr_of(css, None).await.unwrap_or_default()
    }

    /// An attribute (or, with `None`, the text) of the first element matching `css`, with the
    /// same retry as [`Self::text_of`].
    async fn attr_of(&self, css: &str, attr: Option<&str>) -> Option<String> {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let el = self.wait_css(css).await;
            let got = match attr {
                None => el.text().await.map(Some),
                Some(a) => el.attr(a).await,
            };
            match got {
                Ok(v) => return v,
                Err(e) if e.is_stale_element_reference() && Instant::now() < deadline => {}
                Err(e) => panic!("read {css}: {e}"),
            }
        }
    }

    async fn click_css(&self, css: &str) {
        self.wait_css(css).await.click().await.expect(css);
    }

    /// The conversations the list shows, top to bottom.
    async fn row_ids(&self) -> Vec<String> {
        let ids = self
            .js("return [...document.querySelectorAll('#list .row')].map(r => r.dataset.conversationId);")
            .await;
        serde_json::from_value(ids).expect("row ids")
    }

    async fn row(&self, conv: &str) -> Element {
        self.wait_css(&format!(r#"[data-conversation-id="{conv}"]"#))
            .await
    }

    async fn press(&self, keys: &str) {
        let mut actions = KeyActions::new("keyboard".into());
        for ch in keys.chars() {
            actions = actions
                .then(KeyAction::Down { value: ch })
                .then(KeyAction::Up { value: ch });
        }
        self.client
            .perform_actions(actions)
            .await
            .expect("keyboard actions");
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script {script:?} failed: {e}"))
    }

    async fn screenshot(&self, dir: &Path, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        std::fs::write(dir.join(name), png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Deleting the session makes chromedriver close Chromium; killing chromedriver alone
        // would leave the browser running. A blocking request: Drop cannot await.
        if let Some(id) = self.session.take() {
            use std::io::{Read, Write};
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = write!(
                    s,
                    "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                );
                let _ = s.read(&mut [0u8; 512]);
            }
        }
        let _ = self.driver.start_kill();
    }
}

/// The console's conversation row for `conv`, as text.
async fn row_text(b: &Browser, conv: &str) -> String {
    b.text_of(&format!(r#"[data-conversation-id="{conv}"]"#))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_live_list_and_a_colleagues_claim_within_a_second() {
    let tb = TB::start().await;
    let cust = customer();
    let conv = tb.open_conv(N1, &cust, "where is my order?").await;
    let b = Browser::start(1280, 800).await;

    // A wrong token is refused on the form; the right one opens the inbox.
    b.goto_console(&tb).await;
    let input = b.wait_css(r#"input[name="token"]"#).await;
    input.send_keys("not-a-token").await.expect("type");
    b.click("Sign in").await;
    b.wait_within(
        Locator::XPath("//*[@id='signin-error' and contains(., 'Unknown token')]"),
        PAGE_WAIT,
    )
    .await;
    b.sign_in(&tb, BOB).await;

    let text = row_text(&b, &conv).await;
    assert!(
        text.contains(&format!("Customer {cust}")) && text.contains("queued"),
        "row shows name and status: {text:?}"
    );
    assert!(
        text.contains("unassigned"),
        "row shows no assignee: {text:?}"
    );
    // The SLA clock: how long the customer has waited, from the API's `waiting_since`.
    let clock = format!(r#"[data-conversation-id="{conv}"] .sla"#);
    let since = tb.conversation(&conv).await["waiting_since"].clone();
    assert!(since.is_string(), "{since}");
    let shown_since = b.attr_of(&clock, Some("data-since")).await;
    assert_eq!(shown_since.map(Value::String), Some(since));
    let shown = b.text_of(&clock).await;
    assert!(shown.ends_with('s'), "clock shows a duration: {shown:?}");

    // Live: what happens elsewhere appears without reloading (the marker would be gone), and
    // nothing on screen moves when it does (Chromium's layout-shift entries, summed).
    b.js(r#"
        window.__noReload = 1;
        window.__shift = 0;
        new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__shift += e.value; })
          .observe({ type: "layout-shift" });
        return null;"#)
        .await;
    let cust2 = customer();
    let conv2 = tb.open_conv(N1, &cust2, "hello?").await;
    let text2 = row_text(&b, &conv2).await;
    assert!(text2.contains(&format!("Customer {cust2}")), "{text2:?}");
    // The new conversation's message counts as unread.
    b.wait_css(&format!(r#"[data-conversation-id="{conv2}"] .unread.some"#))
        .await;

    // Alice claims through the API: Bob's row names her within a second.
    tb.must_claim(ALICE, &conv).await;
    let claimed = Instant::now();
    b.wait_within(
        Locator::Css(&format!(
            r#"[data-conversation-id="{conv}"][data-assignee="alice"][data-status="assigned"]"#
        )),
        Duration::from_secs(1),
    )
    .await;
    let shown_ms = claimed.elapsed().as_millis();
    let text = row_text(&b, &conv).await;
    assert!(
        text.contains("@alice") && text.contains("assigned"),
        "row: {text:?}"
    );
    assert_eq!(
        b.js("return window.__noReload === 1;").await,
        json!(true),
        "the page reloaded"
    );
    println!("console: a colleague's claim shown {shown_ms} ms after the API answered");
    let shift = b.js("return window.__shift;").await;
    println!("console: layout shift while events streamed in: {shift}");
    assert!(
        shift.as_f64().unwrap_or(1.0) < 0.001,
        "layout shifted: {shift}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_and_reply_from_the_console_reach_the_graph_api() {
    let tb = TB::start().await;
    let cust = customer();
    let conv = tb.open_conv(N1, &cust, "my parcel is late").await;
    let b = Browser::start(1280, 800).await;
    b.sign_in(&tb, BOB).await;

    b.row(&conv).await.click().await.expect("open conversation");
    b.wait_css(r#".msg.inbound"#).await;
    b.click("Claim").await;
    // Claimed: Release becomes possible and the API agrees.
    b.button("Release").await;
    assert_eq!(tb.conversation(&conv).await["assignee"], json!("bob"));
    // The customer wrote just now: the window has (almost) 24 hours left.
    let window = b.text_of(".conv-head .window").await;
    assert!(window.starts_with("window closes in 23h"), "{window:?}");

    // Typing asks the broker to mark the customer's message read and show "typing" (the route
    // lands with the message-model work; the console calls it either way).
    b.js(r#"
        const real = window.fetch.bind(window);
        window.__calls = [];
        window.fetch = (url, init) => { window.__calls.push(`${init?.method || "GET"} ${url}`); return real(url, init); };
        return null;"#)
        .await;
    // The reply quotes the customer's message (the `q` shortcut: their last one).
    let asked = tb.messages(&conv).await[0].clone();
    b.js("document.activeElement.blur(); return null;").await;
    b.press("q").await;
    let quoting = b.text_of(".composer .replying .quote").await;
    assert_eq!(quoting, "my parcel is late");
    let reply = "It leaves our warehouse today.";
    let ta = b.wait_css(r#"textarea[name="text"]"#).await;
    ta.send_keys(reply).await.expect("type reply");
    let read = format!("POST /api/v1/conversations/{conv}/read");
    let calls = b.js("return window.__calls;").await;
    let reads = calls
        .as_array()
        .map_or(0, |c| c.iter().filter(|c| **c == json!(read)).count());
    assert_eq!(reads, 1, "one read + typing call while typing: {calls}");
    b.click("Send").await;
    // Typing also marked the customer's message read at Meta (a request of its own).
    let sends = tb.graph.wait_sends(2, WAIT).await;
    let text = sends
        .iter()
        .find(|s| s.body["type"] == json!("text"))
        .expect("the reply reached the Graph API");
    assert_eq!(text.body["text"]["body"], json!(reply));
    assert_eq!(text.body["to"], json!(cust));
    assert_eq!(
        text.body["context"]["message_id"], asked["wamid"],
        "the reply quotes the customer's message at Meta"
    );
    assert!(
        sends.iter().any(|s| s.body["status"] == json!("read")),
        "the read + typing call reached the Graph API: {sends:?}"
    );
    // The console shows the reply with the status the Graph API's answer gave it.
    b.wait_css(r#".msg.outbound[data-status="accepted"]"#).await;
    let quote = b.text_of(".msg.outbound .quote").await;
    assert_eq!(quote, "my parcel is late", "shown quoting it");
    assert!(
        b.wait_css(".composer .replying")
            .await
            .is_displayed()
            .await
            .ok()
            == Some(false),
        "the quote is gone from the reply box once sent"
    );

    // A note stays inside: shown, never sent.
    let ta = b.wait_css(r#"textarea[name="text"]"#).await;
    ta.send_keys("VIP, be quick").await.expect("type note");
    b.click("Note").await;
    let note = b.text_of(".msg.note").await;
    assert!(note.contains("VIP, be quick"), "{note:?}");
    let messages_sent = tb
        .graph
        .sends()
        .iter()
        .filter(|s| s.body["status"] != json!("read"))
        .count();
    assert_eq!(messages_sent, 1, "a note reached the Graph API");

    // The shortcuts: u releases it to the queue, c claims it again, e resolves it.
    b.js("document.activeElement.blur(); return null;").await;
    b.press("u").await;
    b.wait_css(".conv-head .status.st-queued").await;
    assert_eq!(tb.conversation(&conv).await["status"], json!("queued"));
    b.press("c").await;
    b.wait_css(".conv-head .status.st-assigned").await;
    assert_eq!(tb.conversation(&conv).await["assignee"], json!("bob"));
    b.button("Resolve").await;
    b.press("e").await;
    b.wait_css(".conv-head .status.st-resolved").await;
    assert_eq!(tb.conversation(&conv).await["status"], json!("resolved"));
}

/// A 240×150 PNG (a parcel with a dented corner), the photo customers send.
const PARCEL_PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAPAAAACWCAIAAABvmpKCAAACI0lEQVR42u3SMQ3CUAAA0SrpjA4GZkQgggkFFYOI6kABCQsCqqFL09x/ySm4vOn7+0uZJgsEtAS0BLQEtICWgJaAloCWgBbQEtAS0BLQEtACWgJaAloCWgJaQEtAS0BLQEvnAf24zgo3Iuj369brsy67Sk4AGmiggQYaaKCBBhpooIEGGmiggQYaaKCBBhpooIEGGmiggQYaaKCBBhpooIEGGmiggQYaaKCBBhpooIEGGmiggQYaaKCBBhpooIEGGmiggQYaaKCBBhpooIEGGmiggQYaaKCBBhpooIEGGmiggQYaaKCBBhpooIEGGmiggQYaaKCBBhpooIEGGmiggQYaaKCBBhpooIEGGmiggQYaaKCBBhpooIEGGmiggQYaaKCBBhpooIEGGmiggQYaaKCBBhpooIEGGmiggQYaaKCBBhpooIEGGmiggQYaaKCBBhpooIEGGmiggQYaaKCBBhpooIEGGmiggQYaaKCBBhpooIEGGmiggQYaaKCBBhpooPf0vF+ABrqjGWigU5qBBjqlGWigU5qBBjqlGWigU5qBBjqlGWigU5qBBjqlGWigU5qBBjqlGWigU5qBBjqlGWigU5qBBjqlGWigU5qBBjqlGWigU5qBBjqlGWigU5qBBjqlGWigU5qBBjqlGWigU5qBBjqleVzQCjccaAloCWgBLQEtAS0BLQEtoCWgJaAloCWgBbQEtAS0BLQEtICWgJYObQNUxaJRzXYl/AAAAABJRU5ErkJggg==";

fn parcel_png() -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(PARCEL_PNG)
        .expect("png")
}

fn sha_b64(b: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(b))
}

/// One inbound message of `kind` with its `part`, as Meta sends it.
fn inbound(from: &str, w: &str, kind: &str, part: Value) -> Value {
    let mut m = json!({"from": from, "id": w, "timestamp": now().to_string(), "type": kind});
    m[kind] = part;
    m
}

/// Everything a conversation shows, from the real broker: an image the broker fetched from the
/// fake Graph API (inline, from `GET /api/v1/media/{id}` with the bearer token), a document
/// (a download of its bytes), a customer's reply quoting the image, the customer's reaction to
/// it, and a reply Meta refused for good (failed, with the reason).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_replies_reactions_and_failures_shown() {
    let tb = TB::start().await;
    let cust = customer();
    let png = parcel_png();
    let pdf = b"%PDF-1.4 the invoice".to_vec();
    let (img_id, doc_id) = (uniq("img"), uniq("doc"));
    tb.graph.add_media(&img_id, "image/png", png.clone());
    tb.graph.add_media(&doc_id, "application/pdf", pdf.clone());
    let (w_img, w_doc, w_reply) = (wamid(), wamid(), wamid());
    let mut reply = inbound(&cust, &w_reply, "text", json!({"body": "and this one?"}));
    reply["context"] = json!({"from": N1_DISPLAY, "id": w_img});
    let body = envelope(vec![entry(vec![change(
        N1,
        vec![
            inbound(
                &cust,
                &w_img,
                "image",
                json!({"id": img_id, "mime_type": "image/png", "sha256": sha_b64(&png),
                       "caption": "the broken part"}),
            ),
            inbound(
                &cust,
                &w_doc,
                "document",
                json!({"id": doc_id, "mime_type": "application/pdf", "sha256": sha_b64(&pdf),
                       "filename": "invoice.pdf"}),
            ),
            reply,
        ],
        vec![],
    )])]);
    // Chromium starts while the broker takes the customer's messages.
    let (b, code) = tokio::join!(Browser::start(1280, 800), tb.webhook(&body));
    assert_eq!(code, 200);
    let conv = tb.conv_id(N1, &cust).await;
    let reaction = inbound(
        &cust,
        &wamid(),
        "reaction",
        json!({"message_id": w_img, "emoji": "\u{1F44D}"}),
    );
    assert_eq!(
        tb.webhook(&envelope(vec![entry(vec![change(
            N1,
            vec![reaction],
            vec![]
        )])]))
        .await,
        200
    );
    tb.must_claim(BOB, &conv).await;
    tb.graph.push(GraphReply::meta(
        400,
        131026,
        "Message undeliverable",
        "details from Meta",
    ));
    let failed = tb.must_reply(BOB, &conv, "sorry about that").await;
    let failed_id = failed["id"].as_str().expect("id").to_owned();
    tb.wait_status(&conv, &failed_id, "failed").await;
    let msgs = eventually("both media fetched", WAIT, || async {
        let msgs = tb.messages(&conv).await;
        let fetched = msgs
            .iter()
            .filter(|m| m["media"]["downloaded"] == json!(true))
            .count();
        if fetched == 2 {
            Ok(msgs)
        } else {
            Err(format!("{msgs:?}"))
        }
    })
    .await;
    let id_of = |w: &str| {
        msgs.iter()
            .find(|m| m["wamid"] == json!(w))
            .and_then(|m| m["id"].as_str())
            .expect("message")
            .to_owned()
    };
    let (img_msg, doc_msg, reply_msg) = (id_of(&w_img), id_of(&w_doc), id_of(&w_reply));

    b.sign_in(&tb, BOB).await;
    // What reaches the page's fetch and what becomes a download are recorded (not changed).
    b.js(r#"
        const real = window.fetch.bind(window);
        window.__media = [];
        window.fetch = (url, init) => {
          if (String(url).startsWith("/api/v1/media/")) window.__media.push([url, init?.headers?.Authorization]);
          return real(url, init);
        };
        const blob = URL.createObjectURL;
        window.__blobs = [];
        URL.createObjectURL = (b) => { window.__blobs.push([b.type, b.size]); return blob(b); };
        window.__downloads = [];
        HTMLAnchorElement.prototype.click = function () { window.__downloads.push(this.download); };
        return null;"#)
        .await;
    b.row(&conv).await.click().await.expect("open conversation");

    // The image, inline: fetched from the broker with the bearer token and decoded.
    let img = format!(r#"[data-message-id="{img_msg}"] .media[data-media-id="{img_id}"] img"#);
    b.wait_css(&format!(r#"{img}[src^="blob:"]"#)).await;
    let decoded = eventually("image decoded", WAIT, || async {
        match b
            .js(&format!(
                r#"const i = document.querySelector('{img}'); return i && i.complete && i.naturalWidth;"#
            ))
            .await
        {
            Value::Number(n) if n.as_u64() == Some(240) => Ok(()),
            v => Err(v.to_string()),
        }
    });
    decoded.await;
    assert_eq!(
        b.attr_of(&img, Some("alt")).await.as_deref(),
        Some("the broken part")
    );
    let fetched = b.js("return window.__media;").await;
    assert_eq!(
        fetched[0],
        json!([format!("/api/v1/media/{img_id}"), format!("Bearer {BOB}")]),
        "{fetched}"
    );

    // The document: a button that downloads its bytes under its file name.
    b.click_css(&format!(
        r#"[data-message-id="{doc_msg}"] .media[data-media-id="{doc_id}"] button"#
    ))
    .await;
    let downloads = eventually("document downloaded", WAIT, || async {
        match b.js("return window.__downloads;").await {
            Value::Array(a) if !a.is_empty() => Ok(a),
            v => Err(v.to_string()),
        }
    })
    .await;
    assert_eq!(downloads, vec![json!("invoice.pdf")]);
    let blobs = b.js("return window.__blobs;").await;
    assert!(
        blobs
            .as_array()
            .is_some_and(|a| a.contains(&json!(["application/pdf", pdf.len()]))),
        "the download holds the document's bytes: {blobs}"
    );

    // The reply quotes the image it answers; the reaction sits on the image.
    let quoted = b
        .text_of(&format!(r#"[data-message-id="{reply_msg}"] .quote"#))
        .await;
    assert_eq!(quoted, "the broken part");
    let reactions = b
        .text_of(&format!(r#"[data-message-id="{img_msg}"] .reactions"#))
        .await;
    assert!(reactions.contains('\u{1F44D}'), "reactions: {reactions:?}");
    // Meta refused the reply for good: failed, with the reason a person understands.
    let status = b
        .text_of(&format!(
            r#"[data-message-id="{failed_id}"] .status.failed"#
        ))
        .await;
    assert!(
        status.contains("failed") && status.contains("undeliverable"),
        "failure reason: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screens_for_supervisor_and_phone() {
    let tb = TB::start_with(|c| {
        c.extra = r#"
[[routing.rules]]
name = "refunds first"
when = { keywords = ["refund"] }
then = { team = "support", priority = "urgent" }
"#
        .into();
        // Missed in a second: the unanswered questions turn red while Carol watches.
        c.support_extra = r#"sla = { first_response = "1s" }"#.into();
    })
    .await;
    let browser = Browser::start(1280, 800);
    let mut convs = Vec::new();
    let custs: Vec<String> = (0..3).map(|_| customer()).collect();
    let texts = [
        "Hi, where is my order #1234?",
        "Can I change my address?",
        "Refund please",
    ];
    for (cust, text) in custs.iter().zip(texts) {
        convs.push(tb.open_conv(N1, cust, text).await);
    }
    tb.must_claim(BOB, &convs[0]).await;
    let answer = tb
        .must_reply(BOB, &convs[0], "Let me check that for you.")
        .await;
    let answer = tb
        .wait_status(&convs[0], answer["id"].as_str().expect("id"), "accepted")
        .await;
    tb.note(BOB, &convs[0], "Order 1234 shipped yesterday")
        .await;
    // The customer thanks quoting the answer, likes it, and sends a photo of the parcel.
    let photo = uniq("photo");
    let png = parcel_png();
    tb.graph.add_media(&photo, "image/png", png.clone());
    let mut thanks = inbound(&custs[0], &wamid(), "text", json!({"body": "thanks!"}));
    thanks["context"] = json!({"from": N1_DISPLAY, "id": answer["wamid"]});
    let like = inbound(
        &custs[0],
        &wamid(),
        "reaction",
        json!({"message_id": answer["wamid"], "emoji": "\u{1F44D}"}),
    );
    let image = inbound(
        &custs[0],
        &wamid(),
        "image",
        json!({"id": photo, "mime_type": "image/png", "sha256": sha_b64(&png),
               "caption": "this is how it arrived"}),
    );
    let body = envelope(vec![entry(vec![change(
        N1,
        vec![thanks, like, image],
        vec![],
    )])]);
    assert_eq!(tb.webhook(&body).await, 200);
    assert_eq!(tb.presence(ALICE, "online").await.0, 200);

    let keep = std::env::var_os("SWITCHBOARD_SCREENSHOTS").is_some();
    let tmp = tempfile::tempdir().unwrap();
    let dir = if keep {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
    } else {
        tmp.path().to_path_buf()
    };
    std::fs::create_dir_all(&dir).unwrap();

    let b = browser.await;
    b.sign_in(&tb, CAROL).await;
    for c in &convs {
        b.row(c).await;
    }
    // The missed first response shows live: the clock turns red and names the SLA, and the
    // breach raised the priority (normal to high).
    let breached = format!(r#"[data-conversation-id="{}"] .sla.breached"#, convs[1]);
    let title = b.attr_of(&breached, Some("title")).await;
    assert_eq!(title.as_deref(), Some("SLA missed: first_response"));
    b.wait_css(&format!(
        r#"[data-conversation-id="{}"] .pr-high"#,
        convs[1]
    ))
    .await;
    // Priority first (the refund is urgent, the address question high since its breach), then
    // the longest wait (whatever else breached, Bob's answered one is last: its customer waits
    // since the "thanks!" after Bob's answer).
    assert_eq!(
        b.row_ids().await,
        [convs[2].clone(), convs[1].clone(), convs[0].clone()],
        "sorted by priority, then waiting time"
    );
    b.screenshot(&dir, "console-inbox.png").await;

    // Filters: "queued" leaves out the one Bob has; "mine" (Carol owns none) leaves nothing.
    b.click_css(r#"#f-status option[value="queued"]"#).await;
    let queued = b.row_ids().await;
    assert_eq!(queued.len(), 2, "{queued:?}");
    assert!(!queued.contains(&convs[0]), "{queued:?}");
    b.click_css("#f-mine").await;
    assert!(b.row_ids().await.is_empty());
    b.click_css("#f-mine").await;
    b.click_css(r#"#f-status option[value="open"]"#).await;
    assert_eq!(b.row_ids().await.len(), 3);
    // Leave the filter as a click elsewhere would, so the letters below are shortcuts again.
    b.js("document.activeElement.blur(); return null;").await;

    // Keyboard: j selects the first row, Enter opens it.
    let first = b
        .js(r##"return document.querySelector("#list .row").dataset.conversationId;"##)
        .await;
    b.press("j").await;
    b.press("\u{e007}").await;
    b.wait_css(&format!(
        r#"#detail .messages[data-conversation-id={first}]"#
    ))
    .await;
    b.row(&convs[0]).await.click().await.expect("open");
    b.wait_css(".msg.note").await;
    b.wait_css(r#".msg[data-kind="image"] img[src^="blob:"]"#)
        .await;
    b.screenshot(&dir, "console-conversation.png").await;

    // Supervisor: the team's queue with its depth, as the API counts it.
    b.click("Supervisor").await;
    let (_, q) = tb.get(CAROL, "/api/v1/teams/support/queue").await;
    let depth = b.text_of(r#".queue[data-team="support"] .depth"#).await;
    assert_eq!(depth, q["depth"].to_string());
    let oldest = b.text_of(r#".queue[data-team="support"] .oldest"#).await;
    assert!(oldest.ends_with('s'), "oldest wait shown: {oldest:?}");
    // The team's agents with presence and load, as the broker has them.
    let agents = r#".agents[data-team="support"]"#;
    b.wait_css(&format!(
        r#"{agents} [data-agent-id="alice"][data-presence="online"]"#
    ))
    .await;
    b.wait_css(&format!(
        r#"{agents} [data-agent-id="bob"][data-presence="offline"]"#
    ))
    .await;
    let bob_load = b
        .text_of(&format!(r#"{agents} [data-agent-id="bob"] .load-cell"#))
        .await;
    assert_eq!(bob_load, "1/5", "Bob owns one conversation of five");
    // A presence change (it carries no event) shows at the view's next read: on opening it
    // (and every 10 s while it is shown).
    assert_eq!(tb.presence(BOB, "away").await.0, 200);
    b.click("Inbox").await;
    b.click("Supervisor").await;
    b.wait_css(&format!(
        r#"{agents} [data-agent-id="bob"][data-presence="away"]"#
    ))
    .await;
    // The team reports, as the API gives them.
    let row = r#".reports tr[data-team="support"]"#;
    let shown = b.text_of(&format!("{row} .inbound")).await;
    let to = chrono::Utc::now() + chrono::Duration::minutes(1);
    let from = to - chrono::Duration::days(1);
    let (code, report) = tb
        .get(
            CAROL,
            &format!(
                "/api/v1/reports/teams?from={}&to={}",
                from.format("%Y-%m-%dT%H:%M:%SZ"),
                to.format("%Y-%m-%dT%H:%M:%SZ")
            ),
        )
        .await;
    assert_eq!(code, 200, "{report}");
    let support = report["teams"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["team"] == json!("support")))
        .cloned()
        .expect("support's report");
    assert_eq!(shown, support["inbound"].to_string(), "{support}");
    b.screenshot(&dir, "console-supervisor.png").await;

    // Phone size: one pane, nothing wider than the screen, a conversation opens full-width.
    b.client.set_window_size(390, 844).await.expect("resize");
    b.press("gi").await;
    b.press("\u{e00c}").await; // Escape: back to the list
    let row = b.row(&convs[1]).await;
    let overflow = b
        .js("return document.documentElement.scrollWidth - window.innerWidth;")
        .await;
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "horizontal overflow {overflow}"
    );
    row.click().await.expect("open on phone");
    let back = b.button("Back").await;
    assert!(
        back.is_displayed().await.unwrap(),
        "no Back button on a phone"
    );
    assert!(
        !b.wait_css("#list").await.is_displayed().await.unwrap(),
        "the list stays beside the conversation on a phone"
    );
    b.screenshot(&dir, "console-phone.png").await;
}

/// The page and its assets come from the broker itself, with a policy that allows nothing from
/// elsewhere; no token is needed to load them (the page asks for one).
#[tokio::test]
async fn console_served_from_the_binary_with_its_own_origin_only() {
    let tb = TB::start().await;
    for (path, ty) in [
        ("/console", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let resp = tb.http.get(tb.url(path)).send().await.expect(path);
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        assert!(header("content-type").starts_with(ty), "{path}");
        assert!(
            header("content-security-policy").starts_with("default-src 'self'"),
            "{path}"
        );
        let body = resp.text().await.unwrap();
        assert!(!body.contains("https://"), "{path} names another origin");
    }
    let page = tb.http.get(tb.url("/console")).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(page.contains(r#"name="token""#), "no sign-in form");
}

/// `waiting_since`, the clock the console shows: set by the customer's first unanswered message,
/// kept by later ones, cleared by a human reply, set again by the next message.
#[tokio::test]
async fn waiting_since_is_when_the_customer_started_waiting() {
    let tb = TB::start().await;
    let cust = customer();
    let conv = tb.open_conv(N1, &cust, "hello").await;
    let first = tb.conversation(&conv).await;
    let since = first["waiting_since"].clone();
    assert!(
        since.is_string(),
        "waiting since the first message: {first}"
    );
    tb.send_text(N1, &cust, "anyone?").await;
    eventually("second message stored", WAIT, || async {
        let c = tb.conversation(&conv).await;
        match c["messages"].as_array().map(Vec::len) {
            Some(2) => Ok(c),
            n => Err(format!("{n:?} messages")),
        }
    })
    .await;
    assert_eq!(
        tb.conversation(&conv).await["waiting_since"],
        since,
        "a second message does not restart the clock"
    );
    tb.must_claim(BOB, &conv).await;
    tb.must_reply(BOB, &conv, "here").await;
    assert_eq!(tb.conversation(&conv).await["waiting_since"], Value::Null);
    let (_, listed) = tb.get(BOB, "/api/v1/conversations").await;
    let row = listed["conversations"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == json!(conv)))
        .cloned()
        .expect("bob lists his conversation");
    assert_eq!(row["waiting_since"], Value::Null, "lists carry it too");
}

/// The stream comes back by itself after the broker dies and starts again (same address), and what happened
/// meanwhile is in the list: it is re-read after every reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_reconnects_after_a_broker_restart() {
    let port = free_port();
    let mut tb = TB::start_with(|c| c.listen = format!("127.0.0.1:{port}")).await;
    let conv = tb.open_conv(N1, &customer(), "before").await;
    let b = Browser::start(1280, 800).await;
    b.sign_in(&tb, BOB).await;
    b.row(&conv).await;
    b.js("window.__noReload = 1; return null;").await;

    let t = Instant::now();
    // The broker dies (dropped, no shutdown) and starts again on the same address, which the
    // old one's tasks may hold for a moment after the drop.
    drop(tb.broker.take());
    let text = tb.cfg.toml();
    let clock = tb.clock.clone();
    let broker = eventually("the broker back on its address", WAIT, || {
        let (text, clock) = (text.clone(), clock.clone());
        async move {
            let config =
                switchboard::config::Config::from_toml_str(&text).map_err(|e| format!("{e:?}"))?;
            switchboard::app::Broker::start_with_clock(config, clock)
                .await
                .map_err(|e| format!("{e:?}"))
        }
    })
    .await;
    tb.api = Api::new(broker.addr());
    tb.broker = Some(broker);
    println!(
        "console: broker restarted in {} ms",
        t.elapsed().as_millis()
    );
    // A conversation created while the page may still be reconnecting.
    let conv2 = tb.open_conv(N1, &customer(), "after the restart").await;
    b.wait_css(r#"body[data-live="up"]"#).await;
    b.row(&conv2).await;
    println!(
        "console: list current again {} ms after the restart began",
        t.elapsed().as_millis()
    );
    // And the stream itself is live again: a claim shows without any reload.
    tb.must_claim(ALICE, &conv2).await;
    b.wait_css(&format!(
        r#"[data-conversation-id="{conv2}"][data-assignee="alice"]"#
    ))
    .await;
    assert_eq!(b.js("return window.__noReload === 1;").await, json!(true));
}

/// A template webhook change, as Meta sends it.
fn template_webhook(field: &str, value: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "time": 1751247548, "changes": [{"field": field, "value": value}]}],
    })
}

/// Outside the 24-hour window free text is off and the approved templates of the broker's
/// registry are offered (not the pending one), their `{{n}}` placeholders as inputs; sending one
/// reaches the fake Graph API as Meta's template message with those parameters, and the console
/// shows it sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_picker_outside_the_window() {
    let tb = TB::start().await;
    let registry = async {
        // The start-up sync's listing first: a listing served after the webhook below would put
        // the fake's own (pending) copy back.
        eventually("start-up sync", WAIT, || async {
            (tb.graph.template_lists() > 0)
                .then_some(())
                .ok_or_else(|| "no listing yet".to_string())
        })
        .await;
        for (name, body) in [
            ("order_ready", "Hi {{1}}, order {{2}} is ready."),
            ("spring_sale", "Spring sale, {{1}}!"),
        ] {
            let t = json!({"name": name, "language": "en_US", "category": "UTILITY",
                           "components": [{"type": "BODY", "text": body}]});
            let (code, created) = tb.post(ROOT, "/api/v1/templates", t).await;
            assert_eq!(code, 201, "{created}");
            if name == "order_ready" {
                let approved = template_webhook(
                    "message_template_status_update",
                    json!({"event": "APPROVED", "message_template_id": created["id"],
                           "message_template_name": name, "message_template_language": "en_US",
                           "reason": "NONE"}),
                );
                assert_eq!(tb.webhook(&approved).await, 200);
            }
        }
        let cust = customer();
        // The customer last wrote two days ago: the window is closed.
        tb.send_text_at(N1, &cust, now() - 2 * SECS_PER_DAY, "old question")
            .await;
        let conv = tb.conv_id(N1, &cust).await;
        tb.must_claim(BOB, &conv).await;
        (cust, conv)
    };
    let (b, (cust, conv)) = tokio::join!(Browser::start(1280, 800), registry);
    b.sign_in(&tb, BOB).await;
    b.row(&conv).await.click().await.expect("open");

    let window = b.text_of(".window.closed").await;
    assert!(window.contains("closed"), "{window:?}");
    let send = b.wait_css(r#".composer button[data-action="send"]"#).await;
    assert!(
        !send.is_enabled().await.unwrap(),
        "free text is off outside the window"
    );
    b.wait_css(r#"select[name="template"]"#).await;
    let options = b
        .js(r#"return [...document.querySelectorAll('select[name="template"] option')].map(o => o.textContent);"#)
        .await;
    assert_eq!(
        options,
        json!(["order_ready (en_US)"]),
        "only approved templates"
    );
    b.wait_css(r#"input[name="param1"]"#)
        .await
        .send_keys("Ana")
        .await
        .unwrap();
    b.wait_css(r#"input[name="param2"]"#)
        .await
        .send_keys("A-17")
        .await
        .unwrap();
    b.click("Send template").await;
    let sends = tb.graph.wait_sends(1, WAIT).await;
    let body = &sends[0].body;
    assert_eq!(body["to"], json!(cust), "{body}");
    assert_eq!(body["type"], json!("template"), "{body}");
    assert_eq!(body["template"]["name"], json!("order_ready"));
    assert_eq!(body["template"]["language"]["code"], json!("en_US"));
    assert_eq!(
        body["template"]["components"],
        json!([{"type": "body", "parameters": [
            {"type": "text", "text": "Ana"}, {"type": "text", "text": "A-17"}]}]),
        "{body}"
    );
    // The console shows what was sent, filled in, with the status Meta's answer gave it.
    let sent = b
        .text_of(r#".msg.outbound[data-status="accepted"] .text"#)
        .await;
    assert_eq!(sent, "Hi Ana, order A-17 is ready.");

    // Transfer to another team: the broker moves it, and Bob (not of sales) loses sight of it.
    b.wait_css(r#"input[name="transfer_to"]"#)
        .await
        .send_keys("sales")
        .await
        .unwrap();
    b.click("Transfer").await;
    eventually("moved to sales", WAIT, || async {
        let (_, c) = tb.get(ROOT, &format!("/api/v1/conversations/{conv}")).await;
        (c["team"] == json!("sales"))
            .then_some(())
            .ok_or_else(|| c.to_string())
    })
    .await;
    eventually("gone from Bob's list", WAIT, || async {
        let ids = b.row_ids().await;
        (!ids.contains(&conv))
            .then_some(())
            .ok_or(format!("{ids:?}"))
    })
    .await;
}

/// A `lagged` event (the subscriber fell behind the bounded feed and missed events) makes the
/// page re-read the list. The page's event stream is replaced by one the test feeds, so the
/// conversation created meanwhile can only appear through that re-read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagged_makes_the_list_be_read_again() {
    let tb = TB::start().await;
    let conv = tb.open_conv(N1, &customer(), "first").await;
    let b = Browser::start(1280, 800).await;
    b.goto_console(&tb).await;
    b.wait_css(r#"input[name="token"]"#).await;
    b.js(r#"
        const real = window.fetch.bind(window);
        const enc = new TextEncoder();
        window.fetch = (url, init) => {
          if (url !== "/api/v1/events") return real(url, init);
          const body = new ReadableStream({ start(c) { window.__feed = (s) => c.enqueue(enc.encode(s)); } });
          return Promise.resolve(new Response(body, { headers: { "Content-Type": "text/event-stream" } }));
        };
        return null;"#)
        .await;
    b.submit_token(BOB).await;
    b.wait_css(r#"body[data-live="up"]"#).await;
    b.row(&conv).await;

    let conv2 = tb.open_conv(N1, &customer(), "second").await;
    let absent = b
        .js(&format!(
            r#"return document.querySelector('[data-conversation-id="{conv2}"]') === null;"#
        ))
        .await;
    assert_eq!(absent, json!(true), "no event can have shown it");
    b.js(r#"window.__feed("event: lagged\ndata: {\"type\":\"lagged\",\"missed\":3}\n\n"); return null;"#)
        .await;
    b.row(&conv2).await;
}

/// The list is read in pages of a few hundred rows (`limit`), and the first page shows before the
/// next is read: the second page's request is held until the first page's rows are on screen,
/// then every conversation shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_its_first_page_then_pages_on() {
    const PAGE: usize = 200;
    const CONVERSATIONS: usize = PAGE + 30;
    let tb = TB::start().await;
    for _ in 0..CONVERSATIONS {
        tb.send_text(N1, &customer(), "hello").await;
    }
    let b = Browser::start(1280, 800).await;
    b.goto_console(&tb).await;
    b.wait_css(r#"input[name="token"]"#).await;
    b.js(r#"
        const real = window.fetch.bind(window);
        window.__lists = [];
        window.fetch = (url, init) => {
          const u = String(url);
          if (!u.startsWith("/api/v1/conversations?")) return real(url, init);
          window.__lists.push(u);
          if (!u.includes("after=") || window.__release) return real(url, init);
          return new Promise((done) => { window.__release = () => done(real(url, init)); });
        };
        return null;"#)
        .await;
    b.submit_token(BOB).await;
    let rows = |want: usize| {
        let b = &b;
        async move {
            eventually(&format!("{want} rows"), PAGE_WAIT, || async {
                let v = b
                    .js("return [document.querySelectorAll('#list .row').length, window.__lists];")
                    .await;
                if v[0] == json!(want) {
                    Ok(v[1].clone())
                } else {
                    Err(v.to_string())
                }
            })
            .await
        }
    };
    // The first page is on screen while the second is still held back.
    let lists = rows(PAGE).await;
    let lists = lists.as_array().expect("requests").clone();
    assert_eq!(
        lists[0],
        json!(format!("/api/v1/conversations?limit={PAGE}")),
        "the first request asks for a page of {PAGE}"
    );
    assert!(lists.len() <= 2, "nothing past the held page: {lists:?}");
    b.js("window.__release(); return null;").await;
    let lists = rows(CONVERSATIONS).await;
    let lists = lists.as_array().expect("requests");
    let second = lists[1].as_str().unwrap_or_default();
    assert!(
        second.starts_with(&format!("/api/v1/conversations?limit={PAGE}&after=")),
        "{second}"
    );
    // Sign-in reads the list, and so does the stream once it is up: every read is paged.
    b.wait_css(r#"body[data-live="up"]"#).await;
    let lists = b.js("return window.__lists;").await;
    let lists = lists.as_array().expect("requests");
    assert!(
        lists.iter().all(|u| u
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("/api/v1/conversations?limit={PAGE}")))),
        "{lists:?}"
    );
    assert_eq!(lists.len(), 4, "two reads of two pages each: {lists:?}");
}

/// An agent hands a conversation the bot had handed over back to the bot from the console (the
/// `b` shortcut): the broker has it with status `bot` and no owner, and the screen says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_back_to_the_bot_from_the_console() {
    const DEMO: &str = include_str!("../../config/automation-demo.toml");
    let tb = TB::start_with(|c| c.extra = format!("\n{DEMO}\n")).await;
    let conv = tb
        .open_conv(N1, &customer(), "I want to talk to a person")
        .await;
    eventually("handed over to humans", WAIT, || async {
        match tb.conversation(&conv).await["status"].as_str() {
            Some("queued") => Ok(()),
            s => Err(format!("{s:?}")),
        }
    })
    .await;
    let b = Browser::start(1280, 800).await;
    b.sign_in(&tb, BOB).await;
    b.row(&conv).await.click().await.expect("open conversation");
    b.click("Claim").await;
    b.button("Release").await;
    b.js("document.activeElement.blur(); return null;").await;
    b.press("b").await;
    eventually("the bot has it again", WAIT, || async {
        let c = tb.conversation(&conv).await;
        (c["status"] == "bot" && c["assignee"].is_null())
            .then_some(())
            .ok_or(c.to_string())
    })
    .await;
    b.wait_css(".conv-head .status.st-bot").await;
}
