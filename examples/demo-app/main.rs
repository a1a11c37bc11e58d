//! The example application the Dockerfile, fly.toml, Kubernetes and Compose examples deploy, and
//! the end-to-end container test runs: an HTTP server that answers `GET /` with `ok` and stops
//! cleanly on SIGTERM or SIGINT (exit 0), as a well-behaved app behind preflight should.
//!
//! `PORT` (default 8080) picks the port; it listens on `[::]`, IPv4 and IPv6 both. It prints one
//! `listening` line on stdout once it accepts connections and one `stopping` line on a stop
//! signal. Built static with the rest: `cargo build --release --example demo-app`.

use std::io::{Read, Write};
use std::net::{Ipv6Addr, TcpListener};

use nix::sys::signal::{SigSet, Signal};

fn main() {
    // Blocked before any thread exists, so only `wait` below ever takes these signals.
    let mut stops = SigSet::empty();
    stops.add(Signal::SIGTERM);
    stops.add(Signal::SIGINT);
    if let Err(e) = stops.thread_block() {
        fail(&format!("cannot block SIGTERM and SIGINT: {e}"));
    }

    let port = match std::env::var("PORT") {
        Ok(p) => p.parse::<u16>().unwrap_or_else(|_| fail(&format!("PORT={p} is not a port number"))),
        Err(_) => 8080,
    };
    let listener = TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))
        .unwrap_or_else(|e| fail(&format!("cannot listen on [::]:{port}: {e}")));
    println!("demo-app: listening on [::]:{port} as uid {}", nix::unistd::getuid());

    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ =
                stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n");
        }
    });

    match stops.wait() {
        Ok(sig) => println!("demo-app: stopping on {sig}"),
        Err(e) => fail(&format!("cannot wait for a stop signal: {e}")),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("demo-app: {message}");
    std::process::exit(1)
}
