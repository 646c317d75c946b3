//! Who may call: a Bearer API key on every route but the health checks (when one is set),
//! and CORS origins (loopback ones by default, like OLLAMA_ORIGINS).

use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

/// Routes answered without a key, so load balancers can probe them.
fn is_health(path: &str) -> bool {
    matches!(path, "/" | "/health")
}

/// Compare without an early exit, so timing does not reveal how much of a key matched.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who called: the id of the API key given (`default` for `--api-key`, else the routes
/// file's name of the key). Handlers find it in the request's extensions.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

pub async fn authorize(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let keyed = state.router.as_ref().is_some_and(|r| r.has_keys());
    if state.config.api_key.is_none() && !keyed {
        return next.run(req).await;
    }
    if req.method() == Method::OPTIONS || is_health(req.uri().path()) {
        return next.run(req).await;
    }
    let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    let id = given.and_then(|g| {
        let routed = state.router.as_ref().and_then(|r| r.key_id(g)).map(str::to_string);
        let default = state.config.api_key.as_deref().is_some_and(|k| same(g.as_bytes(), k.as_bytes())).then(|| "default".to_string());
        routed.or(default)
    });
    if let Some(id) = id {
        req.extensions_mut().insert(Caller(id));
        return next.run(req).await;
    }
    let e = ApiError::new(StatusCode::UNAUTHORIZED, "missing or invalid API key: send Authorization: Bearer <key>").with_code("invalid_api_key");
    let mut r = if req.uri().path().starts_with("/v1/") { e.openai() } else { e.ollama() };
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Whether `origin` is a loopback web origin or a local app scheme (Ollama's defaults).
fn default_origin(origin: &str) -> bool {
    if ["app://", "file://", "tauri://", "vscode-webview://"].iter().any(|s| origin.starts_with(s)) {
        return true;
    }
    let Some(rest) = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) else { return false };
    let host = if rest.starts_with('[') { rest.split_inclusive(']').next().unwrap_or("") } else { rest.split(':').next().unwrap_or("") };
    let port_ok = rest[host.len()..].is_empty() || rest[host.len()..].strip_prefix(':').is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "0.0.0.0") && port_ok
}

/// An extra origin: exact, `*` for any, or a prefix ending in `*`.
fn matches(pattern: &str, origin: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => origin.starts_with(prefix),
        None => pattern == origin,
    }
}

pub fn cors(extra: &[String]) -> CorsLayer {
    let extra = extra.to_vec();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |o: &HeaderValue, _| {
            let o = o.to_str().unwrap_or("");
            default_origin(o) || extra.iter().any(|p| matches(p, o))
        }))
        .allow_methods(Any)
        .allow_headers(Any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_origins_are_allowed_by_default() {
        for o in ["http://localhost", "http://localhost:3000", "https://127.0.0.1:8080", "http://[::1]:5173", "app://obsidian.md", "tauri://localhost"] {
            assert!(default_origin(o), "{o}");
        }
        for o in ["http://evil.com", "http://localhost.evil.com", "http://127.0.0.1.evil.com", "http://localhost:80x", "null", ""] {
            assert!(!default_origin(o), "{o}");
        }
    }

    #[test]
    fn extra_origin_patterns() {
        assert!(matches("*", "http://x"));
        assert!(matches("https://app.example.com", "https://app.example.com"));
        assert!(!matches("https://app.example.com", "https://app.example.com.evil"));
        assert!(matches("https://*", "https://anything"));
    }

    #[test]
    fn key_comparison() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
    }
}
