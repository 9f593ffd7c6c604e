//! A webhook receiver for alert deliveries: an HTTP server on 127.0.0.1 in the test process
//! (the operator runs with hostNetwork, so it reaches the test's loopback) that answers 200 to
//! every request and records its path and body.

use anyhow::Result;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The requests received: (path with query, body).
pub type Received = Arc<Mutex<Vec<(String, String)>>>;

/// The receiver's answer to one request (path with query, body): status and body.
pub type Respond = fn(&str, &str) -> (u16, String);

/// Starts a receiver answering 200 to every request; returns its port and what it receives.
pub async fn start() -> Result<(u16, Received)> {
    start_with(|_, _| (200, String::new())).await
}

/// [`start`] answering each request with `respond`.
pub async fn start_with(respond: Respond) -> Result<(u16, Received)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    let received: Received = Arc::default();
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() < length {
                        continue;
                    }
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let (code, answer) = respond(&path, body);
                    if let Ok(mut r) = store.lock() {
                        r.push((path, body.to_string()));
                    }
                    let response = format!(
                        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    return;
                }
            });
        }
    });
    Ok((port, received))
}

/// The bodies received on `path` (query ignored).
pub fn bodies_to(received: &Received, path: &str) -> Vec<String> {
    received
        .lock()
        .map(|r| {
            r.iter()
                .filter(|(p, _)| p.split('?').next() == Some(path))
                .map(|(_, b)| b.clone())
                .collect()
        })
        .unwrap_or_default()
}
