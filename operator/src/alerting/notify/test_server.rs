//! A real HTTP server on 127.0.0.1 for notifier and scrape tests: records each request and answers with
//! what a provider-specific check returns (so a bad signature gets the provider's error).

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Router;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A request the server received.
#[derive(Clone, Debug)]
pub struct Received {
    /// Path.
    pub path: String,
    /// Query parameters (decoded).
    pub query: BTreeMap<String, String>,
    /// The raw query string.
    pub raw_query: String,
    /// `Content-Type`.
    pub content_type: String,
    /// Headers (lower-case names).
    pub headers: BTreeMap<String, String>,
    /// The raw body.
    pub body: Vec<u8>,
    /// Body parsed as JSON (`Null` if it is not JSON).
    pub json: serde_json::Value,
}

type Check = dyn Fn(&Received) -> (u16, String) + Send + Sync;

#[derive(Clone)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    check: Arc<Check>,
}

/// A running server.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl TestServer {
    /// Starts a server that answers every request with `check(request)`.
    pub async fn start(check: impl Fn(&Received) -> (u16, String) + Send + Sync + 'static) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            received: received.clone(),
            check: Arc::new(check),
        };
        let app = Router::new().fallback(handle).with_state(shared);
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("cannot bind a test server: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("no local address: {e}"),
        };
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestServer {
            base: format!("http://{addr}"),
            received,
        }
    }

    /// Requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The single request received; panics otherwise.
    pub fn only(&self) -> Received {
        let r = self.received();
        assert_eq!(r.len(), 1, "expected exactly one request, got {r:?}");
        r[0].clone()
    }
}

async fn handle(
    State(shared): State<Shared>,
    uri: Uri,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let raw_query = raw.unwrap_or_default();
    let query = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                urlencoding::decode(s)
                    .map(|c| c.into_owned())
                    .unwrap_or_else(|_| s.to_string())
            };
            (dec(k), dec(v))
        })
        .collect();
    let req = Received {
        path: uri.path().to_string(),
        query,
        raw_query,
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        json: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        body: body.to_vec(),
    };
    let (status, text) = (shared.check)(&req);
    if let Ok(mut r) = shared.received.lock() {
        r.push(req);
    }
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        text,
    )
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
