//! One attempt against one target: resolve, connect, and prove the dependency is usable.
//!
//! "Usable" is the strongest cheap check each kind allows: a TCP handshake for `tcp://`, a 2xx
//! answer for `http://`, a real login plus `SELECT 1` for a database, and for SQLite a writable
//! directory (a mounted volume) and a file that opens.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::classify::{Class, Failure, classify_io, classify_sqlx, describe_sqlx};
use crate::db::{self, DbConn};
use crate::net::{race, resolve};
use crate::target::{Target, TargetKind};

/// A successful attempt.
pub struct Ready {
    /// Where the dependency answered: an address, a socket path or a file.
    pub at: String,
    /// For a database, the connection that proved it ready, still open: the migration phase can
    /// use it rather than log in again.
    pub conn: Option<DbConn>,
}

/// Runs one attempt.
pub async fn attempt(target: &Target, stagger: Duration) -> Result<Ready, Failure> {
    match &target.kind {
        TargetKind::Tcp { host, port } => {
            let addrs = resolve(host, *port).await?;
            let (addr, _stream) = race(addrs, stagger, tcp_connect).await?;
            Ok(Ready { at: addr.to_string(), conn: None })
        }
        TargetKind::Http { url, host, port, check } => {
            let addrs = resolve(host, *port).await?;
            let (addr, ()) = race(addrs, stagger, |addr| {
                let (url, check) = (url.clone(), check.clone());
                async move { crate::http::get(tcp_connect(addr).await?, &url, &check).await }
            })
            .await?;
            Ok(Ready { at: addr.to_string(), conn: None })
        }
        TargetKind::Redis { host, port, user, password, db, tls } => {
            let addrs = resolve(host, *port).await?;
            let login = super::redis::Login { user: user.clone(), password: password.clone(), db: *db };
            // The name the certificate must hold: the host, or the address without a zone.
            let name = match host {
                crate::target::Host::Name(n) => n.clone(),
                crate::target::Host::Ip(ip, _) => ip.to_string(),
            };
            let (addr, ()) = race(addrs, stagger, |addr| {
                let (login, tls, name) = (login.clone(), tls.clone(), name.clone());
                async move {
                    let stream = tcp_connect(addr).await?;
                    match tls {
                        None => super::redis::check(stream, &login).await,
                        Some(config) => {
                            let stream = crate::http::tls_connect(stream, &name, &config).await?;
                            super::redis::check(stream, &login).await
                        }
                    }
                }
            })
            .await?;
            Ok(Ready { at: addr.to_string(), conn: None })
        }
        TargetKind::Unix { path } => {
            tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| Failure::new(classify_io(&e), format!("{}: {e}", path.display())))?;
            Ok(Ready { at: path.display().to_string(), conn: None })
        }
        TargetKind::File { path } => match std::fs::metadata(path) {
            Ok(_) => Ok(Ready { at: path.display().to_string(), conn: None }),
            // Not there yet, or a directory on the way is not: another container may create it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Failure::new(Class::NotReady, format!("{} does not exist yet", path.display())))
            }
            Err(e) => Err(io_failure(&e)),
        },
        TargetKind::Postgres { .. } | TargetKind::MySql { .. } | TargetKind::Sqlite { .. } => {
            let (mut conn, at) = db::connect(target, stagger).await?;
            let fail = |e: sqlx::Error| {
                Failure::new(classify_sqlx(&e), crate::redact::scrub_owned(&describe_sqlx(&e)))
            };
            let check = sqlx::raw_sql("SELECT 1");
            match &mut conn {
                DbConn::Pg(c) => check.execute(c).await.map(drop),
                DbConn::MySql(c) => check.execute(c).await.map(drop),
                DbConn::Sqlite(c) => check.execute(c).await.map(drop),
            }
            .map_err(fail)?;
            Ok(Ready { at, conn: Some(conn) })
        }
    }
}

/// A TCP connection to `addr`. A connection whose two ends are the same address reached
/// nothing: on loopback, a port in the ephemeral range that nobody listens on can be connected
/// to by a socket that happens to get that very port as its own (a TCP self-connect). It is
/// refused, as Go's dialer refuses it.
async fn tcp_connect(addr: SocketAddr) -> Result<TcpStream, Failure> {
    let stream = TcpStream::connect(addr).await.map_err(|e| io_failure(&e))?;
    if is_self_connect(&stream) {
        return Err(Failure::new(
            Class::Network,
            format!("nothing listens on {addr} (the connection reached itself)"),
        ));
    }
    Ok(stream)
}

fn is_self_connect(stream: &TcpStream) -> bool {
    matches!((stream.local_addr(), stream.peer_addr()), (Ok(local), Ok(peer)) if local == peer)
}

fn io_failure(e: &std::io::Error) -> Failure {
    Failure::new(classify_io(e), e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket bound to the port it connects to reaches itself (TCP simultaneous open): the
    /// case that happens by chance when the kernel picks the target's port as the source port.
    #[tokio::test]
    async fn a_self_connect_is_recognized() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(addr).unwrap();
        let stream = socket.connect(addr).await.expect("a self-connect succeeds on Linux");
        assert!(is_self_connect(&stream));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        assert!(!is_self_connect(&other));
    }
}
