//! DingTalk's documented signature check, as a receiving robot does it: the request URL carries
//! `timestamp` (ms) and `sign = urlencode(base64(HMAC-SHA256(secret, timestamp + "\n" +
//! secret)))`, and the timestamp must be within an hour of the receiver's clock.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Checks the signature in `path` (path and query of the request) against `secret` at
/// `now_ms`; says what is wrong otherwise.
pub fn verify(path: &str, secret: &str, now_ms: i64) -> Result<(), String> {
    let query = path.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let param = |name: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| v.to_string())
        })
    };
    let timestamp = param("timestamp").ok_or("no timestamp in the URL")?;
    let sign = param("sign").ok_or("no sign in the URL")?;
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| format!("timestamp '{timestamp}' is not a number"))?;
    if (now_ms - ts).abs() > 3_600_000 {
        return Err(format!("timestamp {ts} is more than an hour from {now_ms}"));
    }
    let sign = urlencoding::decode(&sign).map_err(|e| e.to_string())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(format!("{timestamp}\n{secret}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if sign == expected {
        Ok(())
    } else {
        Err(format!("sign {sign} does not match"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_correct_signature_passes_and_a_wrong_or_stale_one_does_not() {
        let secret = "SECabc";
        let ts = 1_700_000_000_000_i64;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        mac.update(format!("{ts}\n{secret}").as_bytes());
        let sign = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let path = format!(
            "/robot?access_token=x&timestamp={ts}&sign={}",
            urlencoding::encode(&sign)
        );
        assert_eq!(verify(&path, secret, ts + 1000), Ok(()));
        assert!(verify(&path, "SECother", ts).is_err());
        assert!(verify(&path, secret, ts + 2 * 3_600_000).is_err());
        assert!(verify("/robot?access_token=x", secret, ts).is_err());
    }
}
