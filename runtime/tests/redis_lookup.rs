//! lookupJoin's Redis store ([`weir_runtime::lookup::redis::RedisStore`]) against a real
//! `redis-server` on a free loopback port: AUTH with `requirepass` and an ACL user, a wrong
//! password, a dropped connection, `rediss://` with a private CA, and a runtime that reads
//! `store.redisUrlSecret` from its environment variable.
// Test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
use common::redis_server::{
    make_test_ca, start_redis, start_redis_with_password, start_tls_redis, RedisServer,
};
use common::*;
use weir_expr::Value;
use weir_runtime::lookup::redis::RedisStore;
use weir_runtime::lookup::LookupStore;

const PASSWORD: &str = "s3cret-Pw";

/// An admin connection to `server` (with the `requirepass` password if any).
fn admin(server: &RedisServer, password: Option<&str>) -> redis::Connection {
    let auth = password.map(|p| format!(":{p}@")).unwrap_or_default();
    let client = redis::Client::open(format!("redis://{auth}127.0.0.1:{}", server.port)).unwrap();
    client.get_connection().unwrap()
}

fn set(conn: &mut redis::Connection, key: &str, value: &str) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query::<()>(conn)
        .unwrap();
}

fn keys(ks: &[&str]) -> Vec<String> {
    ks.iter().map(|k| k.to_string()).collect()
}

/// JSON values are parsed, others returned as strings, missing keys are `None`, in order.
fn assert_answers(store: &mut RedisStore) {
    let got = store.get_many(&keys(&["f:1", "f:missing", "f:2"])).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[0].as_ref().map(|v| v.get("age").clone()),
        Some(Value::Int(42))
    );
    assert_eq!(got[1], None);
    assert_eq!(got[2].as_ref().and_then(|v| v.as_str()), Some("plain text"));
}

fn seed(conn: &mut redis::Connection) {
    set(conn, "f:1", "{\"age\":42}");
    set(conn, "f:2", "plain text");
}

macro_rules! need {
    ($server:expr) => {
        match $server {
            Some(s) => s,
            None => {
                eprintln!("redis-server is not installed or did not start; skipping");
                return;
            }
        }
    };
}

#[test]
fn looks_up_with_a_password_and_with_an_acl_user() {
    let server = need!(start_redis_with_password(Some(PASSWORD)));
    let mut conn = admin(&server, Some(PASSWORD));
    seed(&mut conn);
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/0", server.port);
    assert_answers(&mut RedisStore::open(&url, None).unwrap());

    redis::cmd("ACL")
        .arg(&["SETUSER", "app", "on", ">app-pw", "~f:*", "+mget"])
        .query::<()>(&mut conn)
        .unwrap();
    let url = format!("redis://app:app-pw@127.0.0.1:{}", server.port);
    assert_answers(&mut RedisStore::open(&url, None).unwrap());

    // another database is selected from the URL's path
    redis::cmd("SELECT").arg(3).query::<()>(&mut conn).unwrap();
    set(&mut conn, "f:1", "{\"age\":3}");
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/3", server.port);
    let got = RedisStore::open(&url, None)
        .unwrap()
        .get_many(&keys(&["f:1"]))
        .unwrap();
    assert_eq!(
        got[0].as_ref().map(|v| v.get("age").clone()),
        Some(Value::Int(3))
    );
}

#[test]
fn a_wrong_or_missing_password_is_a_clear_error_without_the_password() {
    let server = need!(start_redis_with_password(Some(PASSWORD)));
    let wrong = "not-the-Pw";
    let url = format!("redis://:{wrong}@127.0.0.1:{}", server.port);
    let e = RedisStore::open(&url, None)
        .unwrap()
        .get_many(&keys(&["f:1"]))
        .unwrap_err()
        .to_string();
    let store = format!("redis://127.0.0.1:{}/0", server.port);
    assert!(e.contains(&format!("{store}: connect failed")), "{e}");
    assert!(
        e.to_ascii_lowercase().contains("wrongpass") || e.to_ascii_lowercase().contains("auth"),
        "{e}"
    );
    assert!(!e.contains(wrong) && !e.contains(PASSWORD), "{e}");

    let url = format!("redis://127.0.0.1:{}", server.port);
    let e = RedisStore::open(&url, None)
        .unwrap()
        .get_many(&keys(&["f:1"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&store) && e.contains("NOAUTH"), "{e}");
}

#[test]
fn a_dropped_connection_is_reopened() {
    let server = need!(start_redis());
    let mut conn = admin(&server, None);
    seed(&mut conn);
    let mut store = RedisStore::open(&format!("redis://127.0.0.1:{}", server.port), None).unwrap();
    assert_answers(&mut store);
    // the server closes every other client connection (as on a timeout or failover)
    redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
        .query::<i64>(&mut conn)
        .unwrap();
    assert_answers(&mut store);
}

#[test]
fn looks_up_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_test_ca(dir.path());
    let server = need!(start_tls_redis(&ca, Some(PASSWORD)));
    let url = format!("rediss://:{PASSWORD}@127.0.0.1:{}", server.port);
    // seed through the crate's own TLS client
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(std::fs::read(&ca.ca).unwrap()),
    };
    let mut conn = redis::Client::build_with_tls(url.as_str(), certs)
        .unwrap()
        .get_connection()
        .unwrap();
    seed(&mut conn);

    let mut store = RedisStore::open(&url, Some(ca.ca.as_path())).unwrap();
    assert_eq!(
        store.name(),
        format!("rediss://127.0.0.1:{}/0", server.port)
    );
    assert_answers(&mut store);

    // without the CA the server's certificate is not trusted
    let e = RedisStore::open(&url, None)
        .unwrap()
        .get_many(&keys(&["f:1"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("connect failed"), "{e}");
    assert!(!e.contains(PASSWORD), "{e}");
}

/// A job reading `a` through a lookupJoin named `enrich-ads` whose store is `store`.
fn lookup_job(dir: &std::path::Path, store: &str) -> std::path::PathBuf {
    let f = dir.join("job.yaml");
    write(
        &f,
        &format!(
            r#"kind: StreamJob
metadata: {{name: lookup}}
spec:
  image: img
  checkpoint: {{storage: "file://{ck}"}}
  pipeline:
    sources:
      - name: a
        file: {{path: "{input}"}}
        eventTime: {{field: ts}}
    operators:
      - name: enrich-ads
        input: a
        lookupJoin:
          key: e.k
          store: {store}
          emit: "{{'k': e.k, 'age': f.age}}"
    sinks:
      - {{name: out, input: enrich-ads, file: {{path: "{out}"}}}}
"#,
            ck = p(&dir.join("ck")),
            input = p(&dir.join("in.jsonl")),
            out = p(&dir.join("out")),
        ),
    );
    write(
        &dir.join("in.jsonl"),
        "{\"ts\":1,\"k\":\"1\"}\n{\"ts\":2,\"k\":\"2\"}\n",
    );
    f
}

#[test]
fn the_runtime_reads_a_secret_url_from_its_environment_variable() {
    let server = need!(start_redis_with_password(Some(PASSWORD)));
    let mut conn = admin(&server, Some(PASSWORD));
    set(&mut conn, "f:1", "{\"age\":41}");
    set(&mut conn, "f:2", "{\"age\":42}");
    let dir = tmp();
    let f = lookup_job(
        dir.path(),
        "{redisUrlSecret: {name: redis, key: url}, keyPrefix: \"f:\"}",
    );
    let env = "WEIR_LOOKUP_ENRICH_ADS_REDIS_URL";

    // unset: validate names the field and the variable
    let out = run_cmd(&["validate", "-f", &p(&f)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("lookupJoin.store.redisUrlSecret") && stderr.contains(env),
        "{stderr}"
    );

    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", server.port);
    run_to_end(
        &[
            "run",
            "-q",
            "-f",
            &p(&f),
            "--state-dir",
            &p(&dir.path().join("st")),
        ],
        &[(env, url.as_str())],
    );
    let mut lines = committed_lines(&dir.path().join("out"));
    lines.sort();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains("\"age\":41") && lines[1].contains("\"age\":42"),
        "{lines:?}"
    );
}

#[test]
fn validate_never_prints_a_password() {
    let dir = tmp();
    let f = lookup_job(dir.path(), "{redis: \"redis://admin:hunter2@:nope\"}");
    let out = run_cmd(&["validate", "-f", &p(&f)]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("lookupJoin.store.redis"), "{text}");
    assert!(text.contains("admin:***@"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}
