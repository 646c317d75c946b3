//! What the server's integration tests share: requests driven through the router in
//! process, and their replies.

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// A small server: 512-token contexts, 4 sequences, 2 threads.
pub fn config() -> server::ServeConfig {
    let mut c = server::ServeConfig::default();
    c.limits.engine.n_ctx = 512;
    c.limits.engine.max_parallel = 4;
    c.threads = 2;
    c
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn send(app: &Router, method: Method, uri: &str, body: impl Into<Body>, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().method(method).uri(uri).header(header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app.clone().oneshot(req.body(body.into()).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    Reply { status, headers, body }
}

pub async fn post(app: &Router, uri: &str, body: Value) -> Reply {
    send(app, Method::POST, uri, body.to_string(), &[]).await
}

pub async fn get(app: &Router, uri: &str) -> Reply {
    send(app, Method::GET, uri, Body::empty(), &[]).await
}
