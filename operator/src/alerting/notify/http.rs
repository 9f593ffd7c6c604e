//! Posting JSON to a webhook and classifying the answer.

use crate::alerting::notify::NotifyError;
use std::time::Duration;

/// Timeout for one webhook request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// POSTs `body` as JSON; returns the response text on 2xx, an error naming the status otherwise.
pub async fn post_json(
    client: &reqwest::Client,
    kind: &'static str,
    url: &str,
    body: &serde_json::Value,
) -> Result<String, NotifyError> {
    post_bytes(client, kind, url, body.to_string().into_bytes(), &[]).await
}

/// POSTs a JSON `body` with extra headers (e.g. a signature over exactly these bytes).
pub async fn post_bytes(
    client: &reqwest::Client,
    kind: &'static str,
    url: &str,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> Result<String, NotifyError> {
    let mut req = client
        .post(url)
        .timeout(REQUEST_TIMEOUT)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    for (name, value) in headers {
        req = req.header(*name, value.as_str());
    }
    let resp = req
        .send()
        .await
        .map_err(|source| NotifyError::Request { kind, source })?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|source| NotifyError::Request { kind, source })?;
    if !status.is_success() {
        return Err(NotifyError::Status {
            kind,
            status: status.as_u16(),
            body: crate::alerting::notify::truncate_bytes(&text, 300, "…"),
        });
    }
    Ok(text)
}

/// Checks a `{"errcode": 0, "errmsg": "ok"}`-style answer (DingTalk, WeCom) or
/// `{"code": 0, "msg": "success"}` (Feishu). `rate_limit_codes` are retryable.
pub fn check_code(
    kind: &'static str,
    text: &str,
    code_field: &str,
    msg_field: &str,
    rate_limit_codes: &[i64],
) -> Result<(), NotifyError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|_| NotifyError::Rejected {
        kind,
        message: format!(
            "unexpected answer: {}",
            crate::alerting::notify::truncate_bytes(text, 200, "…")
        ),
        retryable: true,
    })?;
    let code = v
        .get(code_field)
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0);
    if code == 0 {
        return Ok(());
    }
    let msg = v
        .get(msg_field)
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    Err(NotifyError::Rejected {
        kind,
        message: format!("{code_field} {code}: {msg}"),
        retryable: rate_limit_codes.contains(&code),
    })
}
