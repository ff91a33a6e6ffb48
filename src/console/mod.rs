//! The agent console: a single-page browser app served at `GET /console` from the binary itself.
//!
//! The console is plain ES modules and CSS with no build step (see README, "Agent console"): the
//! assets under `assets/` are compiled in with `include_str!`, so the broker needs no network, no
//! CDN and no files beside the binary to serve it, and what the tests drive is exactly what ships.
//!
//! Invariants:
//! - The console is a client of the public agent API (`/api/v1`, bearer token) and nothing
//!   else: this module serves static bytes only, reads no state and authenticates nobody (the
//!   token lives in the browser's `sessionStorage` and is checked by the API on every call).
//! - Every asset is answered with a Content-Security-Policy that allows only this origin (plus
//!   `blob:` images, how media fetched with the bearer token is shown), so nothing is ever
//!   loaded from elsewhere even if a message's text tried to inject markup.
//! - Assets change only with the binary, so they are revalidated (`no-cache`) rather than kept:
//!   an upgraded broker never runs against yesterday's script.

use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// The one page; it loads `app.css` and `app.js` from this same binary.
pub const INDEX_HTML: &str = include_str!("assets/index.html");
pub const APP_JS: &str = include_str!("assets/app.js");
pub const APP_CSS: &str = include_str!("assets/app.css");

/// Only this origin: scripts, styles, API calls; images also from `blob:` (media fetched with the
/// bearer token and shown from memory).
const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The console's routes, merged into the broker's router by [`crate::http::app`]. Generic over
/// the state so the console depends on nothing the API handlers share.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/console",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console/",
            get(|| async { Redirect::permanent("/console") }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/console/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page names only assets this module serves, so nothing is fetched from elsewhere.
    #[test]
    fn page_loads_only_its_own_assets() {
        assert!(INDEX_HTML.contains(r#"src="/console/app.js""#));
        assert!(INDEX_HTML.contains(r#"href="/console/app.css""#));
        for text in [INDEX_HTML, APP_JS, APP_CSS] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
    }
}
