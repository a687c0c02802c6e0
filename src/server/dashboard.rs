//! The dashboard at `/`: one HTML page, its script and its style, compiled into the binary (no
//! CDN, no build step). It reads the same JSON API as `retagd status` and writes through the
//! approval and freeze endpoints with the approver's token in an `Authorization` header, which
//! a cross-site form cannot send; the strict Content-Security-Policy allows only these files and
//! requests to this origin, so injected markup could run nothing.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");
const ICON: &str = include_str!("dashboard/icon.svg");

/// No inline script or style, nothing from another origin, not framed, no forms posting away.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut answer = (StatusCode::OK, body).into_response();
    let headers = answer.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Small and versioned with the binary: a reload after an upgrade gets the new files.
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    answer
}

/// `GET /`.
pub(super) async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

/// `GET /assets/app.js`.
pub(super) async fn script() -> Response {
    page("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /assets/app.css`.
pub(super) async fn style() -> Response {
    page("text/css; charset=utf-8", STYLE)
}

/// `GET /assets/icon.svg` (and `/favicon.ico`, which browsers ask for by themselves).
pub(super) async fn icon() -> Response {
    page("image/svg+xml", ICON)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_small_and_loads_nothing_from_elsewhere() {
        let total = INDEX.len() + SCRIPT.len() + STYLE.len() + ICON.len();
        assert!(total < 200 * 1024, "{total} bytes");
        for file in [INDEX, SCRIPT, STYLE] {
            assert!(!file.contains("http://") && !file.contains("https://"));
            // Values from the API go in as text, never as markup.
            assert!(!file.contains("innerHTML") && !file.contains("insertAdjacentHTML"));
        }
        // No inline script or style for the policy to forbid.
        assert!(
            !INDEX.contains("<script>") && !INDEX.contains("<style") && !INDEX.contains(" style=")
        );
    }
}
