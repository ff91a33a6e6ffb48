//! Who may address which conversation: every per-conversation route × role × the caller's
//! relation to the conversation, in one table.
//!
//! Writes reach exactly what reads show (the contract's visibility); a conversation the caller
//! may not see answers 404 `not_found` with the very body of an id that does not exist, and is
//! left unchanged. The exceptions are the contract's own, for a conversation a teammate owns: a
//! claim answers 409 `already_assigned` naming the owner (what a claim that lost a race hears),
//! and the owner's commands (release, resolve, transfer, reply, reaction, read, hand-back) 403
//! `not_owner`.
//!
//! [`ROUTES`] lists every route; [`routes_are_all_in_the_table`] fails when a per-conversation
//! route appears in `src/http` without a row here.

use crate::common::*;
use futures_util::future::join_all;
use serde_json::{json, Value};

/// The callers: one per role, all in `support`, with room for every conversation they own here.
const AGENT: &str = "t-acc-agent";
const SUPERVISOR: &str = "t-acc-sup";
const ADMIN: &str = "t-acc-admin";
/// The owner of "a teammate's" conversation (support) and of "another team's" (sales).
const MATE: &str = "t-acc-mate";
const FAR: &str = "t-acc-far";

fn agents() -> String {
    [
        ("acc-agent", AGENT, "support", "agent"),
        ("acc-sup", SUPERVISOR, "support", "supervisor"),
        ("acc-admin", ADMIN, "support", "admin"),
        ("acc-mate", MATE, "support", "agent"),
        ("acc-far", FAR, "sales", "agent"),
    ]
    .iter()
    .map(|(id, token, team, role)| {
        format!(
            "\n[[agents]]\nid = \"{id}\"\nname = \"{id}\"\ntoken = \"{token}\"\nteams = [\"{team}\"]\nrole = \"{role}\"\nmax_concurrent = 100\n"
        )
    })
    .collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Route {
    Show,
    Claim,
    Release,
    Resolve,
    Transfer,
    Reply,
    Note,
    React,
    Read,
    HandBack,
}

/// Every route that addresses one conversation, with its method and path below
/// `/api/v1/conversations/{id}`.
const ROUTES: [(Route, &str, &str); 10] = [
    (Route::Show, "GET", ""),
    (Route::Claim, "POST", "/claim"),
    (Route::Release, "POST", "/release"),
    (Route::Resolve, "POST", "/resolve"),
    (Route::Transfer, "POST", "/transfer"),
    (Route::Reply, "POST", "/messages"),
    (Route::Note, "POST", "/notes"),
    (Route::React, "POST", "/messages/{message_id}/reaction"),
    (Route::Read, "POST", "/read"),
    (Route::HandBack, "POST", "/handback"),
];

/// The callers, in the order of a row's columns.
const ROLES: [&str; 3] = [AGENT, SUPERVISOR, ADMIN];

/// The caller's relation to the conversation, in the order of a role's cells.
#[derive(Clone, Copy, Debug)]
enum Rel {
    /// The caller owns it (support).
    Own,
    /// Another agent of the same team owns it (support).
    Teammates,
    /// It waits in the caller's team (support).
    QueuedOwnTeam,
    /// An agent of another team owns it (sales).
    OtherTeamsAssigned,
    /// It waits in another team (sales).
    OtherTeamsQueued,
}

const RELS: [Rel; 5] = [
    Rel::Own,
    Rel::Teammates,
    Rel::QueuedOwnTeam,
    Rel::OtherTeamsAssigned,
    Rel::OtherTeamsQueued,
];

/// Expected status per route, for the agent, the supervisor and the admin, each over
/// [own, teammate's, queued in own team, other team's assigned, other team's queued].
const TABLE: [(Route, [[u16; 5]; 3]); 10] = [
    (
        Route::Show,
        [
            [200, 404, 200, 404, 404],
            [200, 200, 200, 404, 404],
            [200, 200, 200, 200, 200],
        ],
    ),
    (
        Route::Claim,
        [
            [200, 409, 200, 404, 404],
            [200, 409, 200, 404, 404],
            [200, 409, 200, 409, 200],
        ],
    ),
    (
        Route::Release,
        [
            [200, 403, 403, 404, 404],
            [200, 403, 403, 404, 404],
            [200, 403, 403, 403, 403],
        ],
    ),
    (
        Route::Resolve,
        [
            [200, 403, 403, 404, 404],
            [200, 200, 200, 404, 404],
            [200, 200, 200, 200, 200],
        ],
    ),
    (
        Route::Transfer,
        [
            [200, 403, 403, 404, 404],
            [200, 200, 200, 404, 404],
            [200, 200, 200, 200, 200],
        ],
    ),
    (
        Route::Reply,
        [
            [202, 403, 403, 404, 404],
            [202, 403, 403, 404, 404],
            [202, 403, 403, 403, 403],
        ],
    ),
    (
        Route::Note,
        [
            [201, 404, 201, 404, 404],
            [201, 201, 201, 404, 404],
            [201, 201, 201, 201, 201],
        ],
    ),
    (
        Route::React,
        [
            [202, 403, 403, 404, 404],
            [202, 403, 403, 404, 404],
            [202, 403, 403, 403, 403],
        ],
    ),
    (
        Route::Read,
        [
            [202, 403, 403, 404, 404],
            [202, 403, 403, 404, 404],
            [202, 403, 403, 403, 403],
        ],
    ),
    // As transfer (the owner, a supervisor of the team, an admin); this config has no
    // automation, so whoever may do it hears 409 `automation_off`.
    (
        Route::HandBack,
        [
            [409, 403, 403, 404, 404],
            [409, 409, 409, 404, 404],
            [409, 409, 409, 409, 409],
        ],
    ),
];

/// The error code each refusal of `route` must carry.
fn code_of(route: Route, status: u16) -> Option<&'static str> {
    match status {
        403 => Some("not_owner"),
        404 => Some("not_found"),
        409 if route == Route::HandBack => Some("automation_off"),
        409 => Some("already_assigned"),
        _ => None,
    }
}

async fn call(api: &Api, route: Route, token: &str, id: &str) -> (u16, Value) {
    let (_, method, suffix) = ROUTES
        .iter()
        .find(|(r, _, _)| *r == route)
        .expect("every route has a row in ROUTES");
    // The message a reaction targets: the customer's first one.
    let suffix = suffix.replace("{message_id}", &format!("{id}-0"));
    let path = format!("/api/v1/conversations/{id}{suffix}");
    let body = match route {
        Route::Show => None,
        Route::Claim | Route::Release | Route::Resolve | Route::Read | Route::HandBack => {
            Some(json!({}))
        }
        Route::Transfer => Some(json!({"team": "sales"})),
        Route::Reply => Some(json!({"text": "hello", "idempotency_key": uniq("acc-")})),
        Route::Note => Some(json!({"text": "a note"})),
        Route::React => Some(json!({"emoji": "👍"})),
    };
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let (s, v, _) = api.request(method, Some(token), &path, body.as_ref()).await;
    (s, v)
}

/// A fresh conversation standing in relation `rel` to `caller`.
async fn conversation(tb: &TB, caller: &str, rel: Rel) -> String {
    let number = match rel {
        Rel::Own | Rel::Teammates | Rel::QueuedOwnTeam => N1,
        Rel::OtherTeamsAssigned | Rel::OtherTeamsQueued => N2,
    };
    let id = tb.open_conv(number, &customer(), "hello").await;
    match rel {
        Rel::Own => tb.must_claim(caller, &id).await,
        Rel::Teammates => tb.must_claim(MATE, &id).await,
        Rel::OtherTeamsAssigned => tb.must_claim(FAR, &id).await,
        Rel::QueuedOwnTeam | Rel::OtherTeamsQueued => Value::Null,
    };
    id
}

/// Runs one cell; returns a description of what went wrong, if anything.
async fn cell(
    tb: &TB,
    route: Route,
    role: usize,
    rel: Rel,
    want: u16,
    unknown: &Value,
) -> Option<String> {
    let caller = ROLES[role];
    let id = conversation(tb, caller, rel).await;
    let before = tb.conversation(&id).await;
    let (status, body) = call(&tb.api, route, caller, &id).await;
    let at = format!("{route:?} by {caller} on {rel:?}");
    if status != want {
        return Some(format!("{at}: want {want}, got {status} {body}"));
    }
    if let Some(code) = code_of(route, want) {
        if err_code(&body) != code {
            return Some(format!("{at}: want code {code}: {body}"));
        }
        if want == 404 && body != *unknown {
            return Some(format!(
                "{at}: 404 differs from an unknown id's ({unknown}): {body}"
            ));
        }
        let after = tb.conversation(&id).await;
        if after != before {
            return Some(format!(
                "{at}: a refused call changed it: {before} -> {after}"
            ));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_conversation_route_by_role_and_relation() {
    let tb = TB::start_with(|c| c.extra = agents()).await;
    let (s, unknown) = tb.get(AGENT, "/api/v1/conversations/cdoesnotexist").await;
    assert_eq!(s, 404, "{unknown}");
    let mut failures = Vec::new();
    let mut cells = 0;
    for (route, rows) in TABLE {
        let runs = (0..ROLES.len()).flat_map(|role| {
            let tb = &tb;
            let unknown = &unknown;
            RELS.iter()
                .zip(rows[role])
                .map(move |(rel, want)| cell(tb, route, role, *rel, want, unknown))
        });
        let results = join_all(runs).await;
        cells += results.len();
        failures.extend(results.into_iter().flatten());
    }
    assert_eq!(cells, ROUTES.len() * ROLES.len() * RELS.len());
    assert!(
        failures.is_empty(),
        "{} of {cells} cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every `(method, path)` routed below `/api/v1/conversations/{id}` in `src/http`.
fn routes_in_source() -> Vec<(String, String)> {
    const PREFIX: &str = "\"/api/v1/conversations/{id}";
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("src/http") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source file");
        for (i, _) in text.match_indices(".route(") {
            let rest = text[i + ".route(".len()..].trim_start();
            let Some(after) = rest.strip_prefix(PREFIX) else {
                continue;
            };
            let Some(end) = after.find('"') else {
                continue;
            };
            let suffix = &after[..end];
            let handlers = &after[end..];
            let handlers = &handlers[..handlers.find(".route(").unwrap_or(handlers.len())];
            for method in ["get", "post", "put", "patch", "delete"] {
                let called = handlers.match_indices(&format!("{method}(")).any(|(j, _)| {
                    // `post(`, not `repost(` or `get_post(`.
                    j == 0
                        || !(handlers.as_bytes()[j - 1].is_ascii_alphanumeric()
                            || handlers.as_bytes()[j - 1] == b'_')
                });
                if called {
                    found.push((method.to_uppercase(), suffix.to_string()));
                }
            }
        }
    }
    found
}

#[test]
fn routes_are_all_in_the_table() {
    let routed = routes_in_source();
    assert!(
        routed.len() >= ROUTES.len(),
        "the source scan found too little: {routed:?}"
    );
    for (method, suffix) in &routed {
        assert!(
            ROUTES.iter().any(|(_, m, s)| m == method && s == suffix),
            "{method} /api/v1/conversations/{{id}}{suffix} has no row in ROUTES and TABLE"
        );
    }
    for (route, method, suffix) in ROUTES {
        assert!(
            routed.iter().any(|(m, s)| m == method && s == suffix),
            "{route:?} ({method} {suffix}) is not routed in src/http"
        );
        assert!(
            TABLE.iter().any(|(r, _)| *r == route),
            "{route:?} has no row in TABLE"
        );
    }
}
