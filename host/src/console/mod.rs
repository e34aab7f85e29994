//! The operator console: one static page, its stylesheet and script, compiled into the binary
//! and served at `/` by `attune-host serve`. The page holds no data and needs no token to load;
//! everything it shows it reads from the JSON API (`/api/v1`) with the token the operator signs
//! in with, kept in the tab's `sessionStorage` and sent only in the `Authorization` header.
//!
//! No build step and no framework: plain HTML, CSS and a little JavaScript, so the binary is the
//! whole deployment and nothing is fetched from elsewhere (the content security policy below
//! forbids it anyway).

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// Only this origin, no inline script, no framing; no referrer, so no URL leaves the page.
const SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `/` (the page), `/console/console.js` and `/console/console.css`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/console/console.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/console/console.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The assets change with the binary: always revalidate.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, SECURITY_POLICY),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page names its assets by the paths served here, and loads nothing from elsewhere.
    #[test]
    fn the_page_loads_only_its_own_assets() {
        assert!(INDEX.contains(r#"src="/console/console.js""#));
        assert!(INDEX.contains(r#"href="/console/console.css""#));
        for asset in [INDEX, SCRIPT, STYLE] {
            // The SVG namespace is a name, not a place.
            let asset = asset.replace("http://www.w3.org/2000/svg", "");
            assert!(!asset.contains("http://") && !asset.contains("https://"), "an asset names another origin");
        }
    }
}
