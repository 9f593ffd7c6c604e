//! tansu behind Debian's `stunnel4` as TLS terminator: tansu advertises the stunnel port, so
//! every client (bootstrap and broker connections alike) must speak TLS. Certificates come
//! from a throw-away CA made with the `openssl` command.

use super::Tansu;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL: &str = "install stunnel4 and openssl: bash tests/install-build-deps.sh \
     (apt-get install stunnel4 openssl)";

/// A throw-away CA and a server certificate for `127.0.0.1` / `localhost`.
pub struct TestCa {
    /// CA certificate, PEM file.
    pub ca_file: PathBuf,
    /// Server certificate, PEM file.
    pub cert_file: PathBuf,
    /// Server key, PEM file.
    pub key_file: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running openssl: {e}; {INSTALL}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    /// Makes a CA named `name` and a server certificate it signs, in `dir`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let ca_key = format!("{name}-ca.key");
        let ca = format!("{name}-ca.pem");
        let key = format!("{name}-server.key");
        let csr = format!("{name}-server.csr");
        let cert = format!("{name}-server.pem");
        let ext = format!("{name}-ext.cnf");
        std::fs::write(
            dir.join(&ext),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let mut a = vec!["req", "-x509", "-nodes", "-days", "2"];
        a.extend(ec);
        a.extend(["-keyout", &ca_key, "-out", &ca]);
        let subj = format!("/CN={name}-test-ca");
        a.extend(["-subj", &subj]);
        openssl(dir, &a);
        let mut a = vec!["req", "-nodes"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"]);
        openssl(dir, &a);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
        TestCa {
            ca_file: dir.join(ca),
            cert_file: dir.join(cert),
            key_file: dir.join(key),
        }
    }

    /// A client certificate for mutual TLS signed by this CA, as (certificate, key) PEM files.
    pub fn client_cert(&self, name: &str) -> (PathBuf, PathBuf) {
        let dir = self.ca_file.parent().unwrap().to_path_buf();
        let (key, csr, cert) = (
            format!("{name}-client.key"),
            format!("{name}-client.csr"),
            format!("{name}-client.pem"),
        );
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let mut a = vec!["req", "-nodes"];
        a.extend(ec);
        let subj = format!("/CN={name}");
        a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(&dir, &a);
        let ca = self.ca_file.display().to_string();
        let ca_key = ca.replace("-ca.pem", "-ca.key");
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
            ],
        );
        (dir.join(cert), dir.join(key))
    }

    /// The CA certificate's PEM text.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(&self.ca_file).unwrap()
    }
}

/// tansu reachable only through TLS on `brokers`; both processes are killed on drop.
pub struct TlsBroker {
    /// `127.0.0.1:PORT` of the TLS terminator.
    pub brokers: String,
    /// The CA that signed the terminator's certificate.
    pub ca: TestCa,
    stunnel: Child,
    /// The broker behind it.
    pub tansu: Tansu,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsBroker {
    /// Starts tansu (with `tansu_args`, e.g. `--authentication`) advertising a stunnel port, and
    /// stunnel terminating TLS there; waits until both accept connections.
    pub fn start(tansu_args: &[&str]) -> TlsBroker {
        TlsBroker::start_with(tansu_args, false)
    }

    /// [`TlsBroker::start`]; with `mutual`, stunnel also requires a client certificate signed
    /// by the CA.
    pub fn start_with(tansu_args: &[&str], mutual: bool) -> TlsBroker {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path(), "broker");
        let tls_port = super::super::common::free_port();
        let brokers = format!("127.0.0.1:{tls_port}");
        let tansu = Tansu::start_advertising(Some(&brokers), tansu_args);
        let plain = tansu.brokers.clone();
        let conf = dir.path().join("stunnel.conf");
        let log = dir.path().join("stunnel.log");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\noutput = {log}\ndebug = 5\n\n[kafka]\naccept = {brokers}\nconnect = {plain}\ncert = {cert}\nkey = {key}\n{verify}",
                log = log.display(),
                cert = ca.cert_file.display(),
                key = ca.key_file.display(),
                verify = if mutual {
                    format!("verify = 2\nCAfile = {}\n", ca.ca_file.display())
                } else {
                    String::new()
                },
            ),
        )
        .unwrap();
        let stunnel = Command::new("stunnel4")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting stunnel4: {e}; {INSTALL}"));
        let mut b = TlsBroker {
            brokers,
            ca,
            stunnel,
            tansu,
            log,
            _dir: dir,
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
            if let Some(status) = b.stunnel.try_wait().unwrap() {
                panic!("stunnel4 exited ({status}): {}", b.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "stunnel4 did not listen on {tls_port}: {}",
                b.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        b
    }

    /// stunnel's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// librdkafka properties of a test client trusting the CA.
    pub fn client_props(&self) -> Vec<(&'static str, String)> {
        vec![
            ("security.protocol", "SSL".to_string()),
            ("ssl.ca.location", self.ca.ca_file.display().to_string()),
        ]
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.stunnel.kill();
        let _ = self.stunnel.wait();
    }
}
