//! Throwaway `redis-server`s on free loopback ports (plain, with a password, or TLS with a
//! private CA made by the `openssl` CLI), killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`, killed on drop.
pub struct RedisServer {
    child: Child,
    /// The port (the TLS port for a TLS server).
    pub port: u16,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Option<u16> {
    Some(
        std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port(),
    )
}

/// Starts `redis-server` with `args` (no persistence) and waits until `port` accepts
/// connections; `None` if it is not installed or does not come up.
fn start(port: u16, args: &[String]) -> Option<RedisServer> {
    let child = Command::new("redis-server")
        .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = RedisServer { child, port };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(server)
}

/// A plain server, with `requirepass` if `password` is given.
pub fn start_redis_with_password(password: Option<&str>) -> Option<RedisServer> {
    let port = free_port()?;
    let mut args = vec!["--port".to_string(), port.to_string()];
    if let Some(pw) = password {
        args.extend(["--requirepass".to_string(), pw.to_string()]);
    }
    start(port, &args)
}

/// A plain server without a password.
pub fn start_redis() -> Option<RedisServer> {
    start_redis_with_password(None)
}

/// A CA and a server certificate for 127.0.0.1 and localhost, made with the `openssl` CLI.
pub struct TestCa {
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// The server certificate (PEM), signed by the CA.
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
}

/// Makes a [`TestCa`] in `dir`; panics with openssl's output if a step fails.
pub fn make_test_ca(dir: &Path) -> TestCa {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("install the openssl CLI");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca_args = vec!["req", "-x509", "-nodes", "-days", "2"];
    ca_args.extend(ec);
    ca_args.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=weir test CA",
    ]);
    run(&ca_args);
    let mut csr_args = vec!["req", "-nodes"];
    csr_args.extend(ec);
    csr_args.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&csr_args);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    TestCa {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// A TLS-only server (no plain port) presenting `ca`'s server certificate, not asking for
/// client certificates, with `requirepass` if `password` is given.
pub fn start_tls_redis(ca: &TestCa, password: Option<&str>) -> Option<RedisServer> {
    let port = free_port()?;
    let p = |path: &Path| path.display().to_string();
    let mut args: Vec<String> = [
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--tls-cert-file",
        &p(&ca.cert),
        "--tls-key-file",
        &p(&ca.key),
        "--tls-ca-cert-file",
        &p(&ca.ca),
        "--tls-auth-clients",
        "no",
    ]
    .map(String::from)
    .to_vec();
    if let Some(pw) = password {
        args.extend(["--requirepass".to_string(), pw.to_string()]);
    }
    start(port, &args)
}
