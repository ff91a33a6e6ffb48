//! Access on every route (contract "People and access"): every route of the HTTP surface,
//! called as an agent, a supervisor and an admin (all of `support`), a member of another team
//! (an agent of `sales`), a disabled agent and no token, with the status each must get.
//!
//! The table is checked against the router two ways, so a new route without a row fails here:
//! [`every_route_in_the_source_has_a_row`] reads every `.route(…)` in `src` (paths and
//! methods) and wants a row for each, and [`every_route_by_caller`] asks the running router for
//! every other method on each path and wants 405 `method_not_allowed`. The event stream is a
//! row like the others, and [`the_event_stream_shows_another_teams_conversation_to_nobody`]
//! checks what it carries.

use std::collections::BTreeSet;

use crate::common::*;
use serde_json::{json, Value};

const AGENT: &str = "t-tab-agent";
const SUPERVISOR: &str = "t-tab-sup";
const ADMIN: &str = "t-tab-admin";
const OTHER: &str = "t-tab-other";
const DISABLED: &str = "t-tab-off";

/// The callers, in the order of a row's cells; `None` sends no token.
const CALLERS: [(&str, Option<&str>); 6] = [
    ("agent", Some(AGENT)),
    ("supervisor", Some(SUPERVISOR)),
    ("admin", Some(ADMIN)),
    ("other team", Some(OTHER)),
    ("disabled", Some(DISABLED)),
    ("no token", None),
];

fn agents() -> String {
    [
        ("tab-agent", AGENT, "support", "agent"),
        ("tab-sup", SUPERVISOR, "support", "supervisor"),
        ("tab-admin", ADMIN, "support", "admin"),
        ("tab-other", OTHER, "sales", "agent"),
        ("tab-off", DISABLED, "support", "agent"),
        ("tab-target", "t-tab-target", "sales", "agent"),
    ]
    .iter()
    .map(|(id, token, team, role)| {
        format!(
            "\n[[agents]]\nid = \"{id}\"\nname = \"{id}\"\ntoken = \"{token}\"\nteams = [\"{team}\"]\nrole = \"{role}\"\nmax_concurrent = 1000\n"
        )
    })
    .collect()
}

/// What a row's path parameter names and what it sends.
#[derive(Clone, Copy, Debug)]
enum Subject {
    /// Nothing to fill in.
    None,
    /// A fresh conversation waiting in `support`.
    QueuedSupport,
    /// The team `support`.
    Support,
    /// The team `sales`.
    Sales,
    /// The agent `tab-target`.
    Target,
}

/// Every route: method, path template, what `{id}` is, the body, and the status for each of
/// [`CALLERS`].
const TABLE: &[(&str, &str, Subject, &str, [u16; 6])] = &[
    ("GET", "/healthz", Subject::None, "", [200; 6]),
    ("GET", "/metrics", Subject::None, "", [200; 6]),
    // The console's page loads for anyone; what it shows comes from the API with a token.
    ("GET", "/console", Subject::None, "", [200; 6]),
    ("GET", "/console/", Subject::None, "", [200; 6]),
    ("GET", "/console/app.js", Subject::None, "", [200; 6]),
    ("GET", "/console/app.css", Subject::None, "", [200; 6]),
    (
        "GET",
        "/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=test-verify&hub.challenge=7",
        Subject::None,
        "",
        [200; 6],
    ),
    // Signed or not is all that counts (this body carries no signature): 401 for everyone.
    ("POST", "/webhooks/whatsapp", Subject::None, "{}", [401; 6]),
    (
        "GET",
        "/api/v1/conversations",
        Subject::None,
        "",
        [200, 200, 200, 200, 401, 401],
    ),
    // Anyone may start a conversation (an empty body: 400 for everyone signed in).
    (
        "POST",
        "/api/v1/conversations",
        Subject::None,
        "{}",
        [400, 400, 400, 400, 401, 401],
    ),
    (
        "GET",
        "/api/v1/conversations/{id}",
        Subject::QueuedSupport,
        "",
        [200, 200, 200, 404, 401, 401],
    ),
    (
        "POST",
        "/api/v1/conversations/{id}/claim",
        Subject::QueuedSupport,
        "{}",
        [200, 200, 200, 404, 401, 401],
    ),
    (
        "POST",
        "/api/v1/conversations/{id}/release",
        Subject::QueuedSupport,
        "{}",
        [403, 403, 403, 404, 401, 401],
    ),
    (
        "POST",
        "/api/v1/conversations/{id}/resolve",
        Subject::QueuedSupport,
        "{}",
        [403, 200, 200, 404, 401, 401],
    ),
    (
        "POST",
        "/api/v1/conversations/{id}/transfer",
        Subject::QueuedSupport,
        r#"{"team":"sales"}"#,
        [403, 200, 200, 404, 401, 401],
    ),
    // No automation in this config: whoever may hand back hears 409 `automation_off`.
    (
        "POST",
        "/api/v1/conversations/{id}/handback",
        Subject::QueuedSupport,
        "{}",
        [403, 409, 409, 404, 401, 401],
    ),
    (
        "POST",
        "/api/v1/conversations/{id}/messages",
        Subject::QueuedSupport,
        r#"{"text":"hi","idempotency_key":"k"}"#,
        [403, 403, 403, 404, 401, 401],
    ),
    (
        "POST",
        "/api/v1/conversations/{id}/messages/{message_id}/reaction",
        Subject::QueuedSupport,
        r#"{"emoji":"👍"}"#,
        [403, 403, 403, 404, 401, 401],
    ),
    (
        "POST",
        "/api/v1/conversations/{id}/read",
        Subject::QueuedSupport,
        "{}",
        [403, 403, 403, 404, 401, 401],
    ),
    (
        "POST",
        "/api/v1/conversations/{id}/notes",
        Subject::QueuedSupport,
        r#"{"text":"a note"}"#,
        [201, 201, 201, 404, 401, 401],
    ),
    (
        "PUT",
        "/api/v1/agents/me/presence",
        Subject::None,
        r#"{"status":"away"}"#,
        [200, 200, 200, 200, 401, 401],
    ),
    (
        "GET",
        "/api/v1/agents/me",
        Subject::None,
        "",
        [200, 200, 200, 200, 401, 401],
    ),
    (
        "GET",
        "/api/v1/agents",
        Subject::None,
        "",
        [403, 403, 200, 403, 401, 401],
    ),
    (
        "POST",
        "/api/v1/agents",
        Subject::None,
        r#"{"id":"NEW"}"#,
        [403, 403, 201, 403, 401, 401],
    ),
    (
        "PATCH",
        "/api/v1/agents/{id}",
        Subject::Target,
        r#"{"name":"T"}"#,
        [403, 403, 200, 403, 401, 401],
    ),
    (
        "POST",
        "/api/v1/agents/{id}/token",
        Subject::Target,
        "{}",
        [403, 403, 200, 403, 401, 401],
    ),
    (
        "GET",
        "/api/v1/teams",
        Subject::None,
        "",
        [403, 403, 200, 403, 401, 401],
    ),
    (
        "POST",
        "/api/v1/teams",
        Subject::None,
        r#"{"id":"NEW"}"#,
        [403, 403, 201, 403, 401, 401],
    ),
    (
        "PATCH",
        "/api/v1/teams/{id}",
        Subject::Sales,
        r#"{"name":"Sales"}"#,
        [403, 403, 200, 403, 401, 401],
    ),
    (
        "GET",
        "/api/v1/teams/{id}/queue",
        Subject::Support,
        "",
        [403, 200, 200, 403, 401, 401],
    ),
    (
        "GET",
        "/api/v1/teams/{id}/agents",
        Subject::Support,
        "",
        [403, 200, 200, 403, 401, 401],
    ),
    // A fresh conversation waits in support before each call, so a member takes one (200).
    (
        "POST",
        "/api/v1/teams/{id}/next",
        Subject::Support,
        "{}",
        [200, 200, 200, 403, 401, 401],
    ),
    (
        "GET",
        "/api/v1/teams/{id}/settings",
        Subject::Support,
        "",
        [403, 200, 200, 403, 401, 401],
    ),
    (
        "PUT",
        "/api/v1/teams/{id}/settings",
        Subject::Support,
        "{}",
        [403, 403, 200, 403, 401, 401],
    ),
    (
        "GET",
        "/api/v1/routing/rules",
        Subject::None,
        "",
        [403, 200, 200, 403, 401, 401],
    ),
    (
        "PUT",
        "/api/v1/routing/rules",
        Subject::None,
        r#"{"rules":[]}"#,
        [403, 403, 200, 403, 401, 401],
    ),
    (
        "GET",
        "/api/v1/events",
        Subject::None,
        "",
        [200, 200, 200, 200, 401, 401],
    ),
    // Any agent may upload (a JSON body is no media Meta takes: 415); the bytes of media nobody
    // may see (here: none by that id) are 404 for everyone.
    (
        "POST",
        "/api/v1/media",
        Subject::None,
        "{}",
        [415, 415, 415, 415, 401, 401],
    ),
    (
        "GET",
        "/api/v1/media/{id}",
        Subject::Target,
        "",
        [404, 404, 404, 404, 401, 401],
    ),
    (
        "GET",
        "/api/v1/reports/{dimension}?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z",
        Subject::None,
        "",
        [403, 200, 200, 403, 401, 401],
    ),
    // Everyone reads the registry; only admins submit (an empty body: 400 for them).
    (
        "GET",
        "/api/v1/templates",
        Subject::None,
        "",
        [200, 200, 200, 200, 401, 401],
    ),
    (
        "POST",
        "/api/v1/templates",
        Subject::None,
        "{}",
        [403, 403, 400, 403, 401, 401],
    ),
    // A bulk template send answers 200 with one result per send: whether each went is in its
    // result (an agent who does not own the conversation gets `not_owner` there).
    (
        "POST",
        "/api/v1/templates/{name}/sends",
        Subject::QueuedSupport,
        r#"{"language":"en_US","sends":[{"conversation_id":"{id}"}]}"#,
        [200, 200, 200, 200, 401, 401],
    ),
    (
        "GET",
        "/api/v1/audit",
        Subject::None,
        "",
        [403, 403, 200, 403, 401, 401],
    ),
];

/// The code each refusal carries.
fn code_of(status: u16) -> Option<&'static str> {
    match status {
        401 => Some("unauthorized"),
        415 => Some("unsupported_media_type"),
        403 => Some("forbidden"),
        404 => Some("not_found"),
        405 => Some("method_not_allowed"),
        409 => Some("automation_off"),
        _ => None,
    }
}

/// The path template without its query string.
fn template(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

/// Calls one cell; returns what went wrong, if anything.
async fn cell(tb: &TB, row: usize, caller: usize) -> Option<String> {
    let (method, path, subject, body, want) = TABLE[row];
    let want = want[caller];
    let id = match subject {
        Subject::None => String::new(),
        Subject::QueuedSupport => tb.open_conv(N1, &customer(), "hello").await,
        Subject::Support => {
            // Something waits, for `next`.
            tb.open_conv(N1, &customer(), "hello").await;
            "support".into()
        }
        Subject::Sales => "sales".into(),
        Subject::Target => "tab-target".into(),
    };
    // `{message_id}`: the conversation's first message (the customer's).
    let path = path
        .replace("{dimension}", "teams")
        .replace("{name}", "order_ready")
        .replace("{message_id}", &format!("{id}-1"))
        .replace("{id}", &id);
    let body = body.replace("NEW", &uniq("n")).replace("{id}", &id);
    let body: Option<Value> =
        (!body.is_empty()).then(|| serde_json::from_str(&body).expect("row body"));
    let (name, token) = CALLERS[caller];
    let at = format!("{method} {path} as {name}");
    let (status, got) = if path == "/api/v1/events" {
        // The stream never ends: read its status and headers only.
        let mut rb = tb.http.get(tb.url(&path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let resp = rb.send().await.unwrap_or_else(|e| panic!("{at}: {e}"));
        let s = resp.status().as_u16();
        let v = if s == 200 {
            Value::Null
        } else {
            resp.json().await.unwrap_or(Value::Null)
        };
        (s, v)
    } else {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let (s, v, _) = tb.request(method, token, &path, body.as_ref()).await;
        (s, v)
    };
    if status != want {
        return Some(format!("{at}: want {want}, got {status} {got}"));
    }
    // An owner's command refused for not being the owner is 403 `not_owner` (contract).
    let owners_only = TABLE[row].1.starts_with("/api/v1/conversations/{id}/");
    let code = match want {
        403 if owners_only => Some("not_owner"),
        _ => code_of(want),
    };
    if let Some(code) = code {
        // The webhook's own refusals have codes of their own (`invalid_signature`).
        if path.starts_with("/api/") && err_code(&got) != code {
            return Some(format!("{at}: want code {code}: {got}"));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_by_caller() {
    let tb = TB::start_with(|c| c.extra = agents()).await;
    let (s, v, _) = tb
        .request(
            reqwest::Method::PATCH,
            Some(ROOT),
            "/api/v1/agents/tab-off",
            Some(&json!({"disabled": true})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut failures = Vec::new();
    // One cell at a time: `next` takes whatever waits in support, and cells must not take each
    // other's conversations.
    for row in 0..TABLE.len() {
        for caller in 0..CALLERS.len() {
            failures.extend(cell(&tb, row, caller).await);
        }
    }
    // Every other method on each path is not served (405), so no method hides outside the table.
    let paths: BTreeSet<&str> = TABLE.iter().map(|r| template(r.1)).collect();
    for path in paths {
        let concrete = path
            .replace("{dimension}", "teams")
            .replace("{name}", "order_ready")
            .replace("{message_id}", "x-1")
            .replace("{id}", "x");
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if TABLE.iter().any(|r| template(r.1) == path && r.0 == method) {
                continue;
            }
            let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let (s, v, _) = tb
                .request(m, Some(ADMIN), &concrete, Some(&json!({})))
                .await;
            if s != 405 || err_code(&v) != "method_not_allowed" {
                failures.push(format!(
                    "{method} {path}: not in the table, yet answers {s} {v}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every `(method, path)` routed anywhere in `src` (the HTTP routers, the console's, the media routes): the path of each `.route(` and the
/// method routers (`get(`, `.post(`, …) among its arguments.
fn routes_in_source() -> BTreeSet<(String, String)> {
    fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).expect("src").flatten() {
            let p = e.path();
            if p.is_dir() {
                files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut paths = Vec::new();
    files(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut paths,
    );
    let mut found = BTreeSet::new();
    for file in paths {
        let text = std::fs::read_to_string(&file).expect("source file");
        for (i, _) in text.match_indices(".route(") {
            // The call's arguments: up to its closing parenthesis.
            let args = &text[i + ".route(".len()..];
            let mut depth = 0usize;
            let end = args
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' if depth == 0 => return true,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    false
                })
                .map_or(args.len(), |(j, _)| j);
            let args = &args[..end];
            let Some(start) = args.find('"') else {
                continue;
            };
            let Some(len) = args[start + 1..].find('"') else {
                continue;
            };
            let path = &args[start + 1..start + 1 + len];
            let handlers = &args[start + 1 + len..];
            for method in ["get", "post", "put", "patch", "delete"] {
                let called = handlers.match_indices(&format!("{method}(")).any(|(j, _)| {
                    j == 0
                        || !(handlers.as_bytes()[j - 1].is_ascii_alphanumeric()
                            || handlers.as_bytes()[j - 1] == b'_')
                });
                if called {
                    found.insert((method.to_uppercase(), path.to_string()));
                }
            }
        }
    }
    found
}

#[test]
fn every_route_in_the_source_has_a_row() {
    let routed = routes_in_source();
    assert!(
        routed.len() >= 25,
        "the source scan found too little: {routed:?}"
    );
    let rows: BTreeSet<(String, String)> = TABLE
        .iter()
        .map(|r| (r.0.to_string(), template(r.1).to_string()))
        .collect();
    let missing: Vec<_> = routed.difference(&rows).collect();
    assert!(
        missing.is_empty(),
        "routes without a row in TABLE: {missing:?}"
    );
    let stale: Vec<_> = rows.difference(&routed).collect();
    assert!(
        stale.is_empty(),
        "rows for routes src does not serve: {stale:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_shows_another_teams_conversation_to_nobody() {
    let tb = TB::start_with(|c| c.extra = agents()).await;
    let mut other = Sse::connect(&tb.api, OTHER).await;
    let mut agent = Sse::connect(&tb.api, AGENT).await;
    let mut admin = Sse::connect(&tb.api, ADMIN).await;
    let support = tb.open_conv(N1, &customer(), "support only").await;
    tb.must_claim(BOB, &support).await;
    admin.wait_type("conversation.claimed", &support).await;
    // A sales conversation after it: once the sales agent hears of it, it would have heard of
    // the support one before (one feed, in order).
    let sales = tb.open_conv(N2, &customer(), "for sales").await;
    other.wait_type("conversation.created", &sales).await;
    agent.wait_type("conversation.claimed", &support).await;
    assert!(
        other
            .seen
            .iter()
            .all(|e| e.data["conversation"]["id"] != support.as_str()),
        "{:?}",
        other.seen
    );
}
