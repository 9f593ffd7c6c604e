//! A stand-in for the runtime's `worker` mode, for operator e2e runs while the real runtime
//! cannot run a job yet: it answers 200 on every path of the admin port 8081 (so /readyz and
//! /healthz pass) and ignores its arguments. Build it into an image with
//! `tests/cluster/image.sh weir-standin-runtime 0.1.0 target/release/weir-e2e-standin-runtime`
//! and set `WEIR_E2E_RUNTIME_IMAGE=docker.io/local/weir-standin-runtime:0.1.0`.

use std::io::{Read, Write};
use std::net::TcpListener;

fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", 8081))?;
    println!(
        "stand-in runtime: args {:?}",
        std::env::args().collect::<Vec<_>>()
    );
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut buf = [0_u8; 1024];
        let _ = stream.read(&mut buf);
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
    }
    Ok(())
}
