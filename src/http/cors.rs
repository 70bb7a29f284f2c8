//! CORS for browser clients: off unless `--cors-allow-origin` names the origins allowed
//! (tower-http's `CorsLayer` answers preflights and marks allowed responses).

use std::time::Duration;

use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::predict::TIMEOUT_HEADER;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(3600);

/// The allowed origins, checked: `None` when the list is empty (CORS off). Each is `*` (any
/// origin) or `scheme://host[:port]` exactly as a browser sends it in `Origin`.
pub(crate) fn origins(raw: &[String]) -> Result<Option<AllowOrigin>, String> {
    let raw: Vec<&str> = raw
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.contains(&"*") {
        return Ok(Some(AllowOrigin::any()));
    }
    let values = raw
        .iter()
        .map(|&origin| origin_value(origin))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(AllowOrigin::list(values)))
}

fn origin_value(origin: &str) -> Result<HeaderValue, String> {
    let bad = || {
        format!(
            "--cors-allow-origin {origin:?} is not an origin: give scheme://host[:port] with \
             no path, e.g. https://app.example.com, or *"
        )
    };
    let (scheme, host) = origin.split_once("://").ok_or_else(bad)?;
    if !matches!(scheme, "http" | "https") || host.is_empty() || host.contains('/') {
        return Err(bad());
    }
    HeaderValue::from_str(origin).map_err(|_| bad())
}

/// The layer for the configured origins; `None` when CORS is off.
pub(super) fn layer(raw: &[String]) -> Option<CorsLayer> {
    // The configuration was validated at start-up; an invalid list serves no browser.
    let origins = origins(raw).ok().flatten()?;
    Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                CONTENT_TYPE,
                AUTHORIZATION,
                HeaderName::from_static(TIMEOUT_HEADER),
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([HeaderName::from_static("x-request-id"), RETRY_AFTER])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(origins(&[]).unwrap().is_none());
        assert!(origins(&list(&[" "])).unwrap().is_none());
        assert!(
            origins(&list(&["https://a.example", "http://localhost:3000"]))
                .unwrap()
                .is_some()
        );
        assert!(origins(&list(&["*"])).unwrap().is_some());
        for bad in [
            "a.example",
            "https://a.example/",
            "ftp://a.example",
            "https://",
        ] {
            let error = origins(&list(&[bad])).unwrap_err();
            assert!(error.contains("--cors-allow-origin"), "{error}");
        }
    }
}
