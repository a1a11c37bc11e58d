//! Resolving a host afresh and racing its addresses, RFC 8305 style.
//!
//! Every attempt resolves the name again, A and AAAA both (getaddrinfo with `AF_UNSPEC` and no
//! `AI_ADDRCONFIG`), so a Service that appears in DNS mid-wait, or a fly.io `.internal` name with
//! only AAAA records, is picked up. The addresses are then tried IPv6 first, alternating families,
//! with a new attempt started each `stagger` (or as soon as the previous one fails); the first to
//! succeed wins and the others are dropped. A dead IPv4 address whose packets vanish therefore
//! costs one stagger, not a whole attempt timeout.
//!
//! What is raced is the whole handshake, not just TCP: for a database the racer logs in and runs
//! `SELECT 1`, so no connection is opened and thrown away before the real one.

use std::future::Future;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use tokio::task::JoinSet;

use crate::classify::{Class, Failure};
use crate::target::Host;

/// Resolves `host` now. Literals are returned as they are; names go through getaddrinfo.
pub async fn resolve(host: &Host, port: u16) -> Result<Vec<SocketAddr>, Failure> {
    match host {
        Host::Ip(IpAddr::V6(ip), Some(zone)) => {
            let scope = zone.parse::<u32>().or_else(|_| {
                nix::net::if_::if_nametoindex(zone.as_str()).map_err(|e| {
                    // The interface may come up later (a veth added by the runtime): not yet.
                    Failure::new(Class::Network, format!("no interface '{zone}' for [{ip}%{zone}]: {e}"))
                })
            })?;
            Ok(vec![SocketAddr::V6(SocketAddrV6::new(*ip, port, 0, scope))])
        }
        Host::Ip(ip, _) => Ok(vec![SocketAddr::new(*ip, port)]),
        Host::Name(name) => {
            let found = tokio::net::lookup_host((name.as_str(), port)).await.map_err(|e| {
                Failure::new(Class::Dns, format!("cannot resolve '{name}': {}", gai_message(&e)))
            })?;
            let mut addrs: Vec<SocketAddr> = Vec::new();
            for addr in found {
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
            if addrs.is_empty() {
                return Err(Failure::new(Class::Dns, format!("'{name}' has no addresses")));
            }
            Ok(interleave(addrs))
        }
    }
}

fn gai_message(err: &std::io::Error) -> String {
    let text = err.to_string();
    text.strip_prefix("failed to lookup address information: ").map_or(text.clone(), str::to_owned)
}

/// RFC 8305 §4: IPv6 first, then alternate families, keeping the resolver's order within each.
pub fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let (v6, v4): (Vec<_>, Vec<_>) = addrs.into_iter().partition(SocketAddr::is_ipv6);
    let mut out = Vec::with_capacity(v6.len() + v4.len());
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

/// The address as a host string a driver accepts (`::1`, `fe80::1%2`, `10.0.0.1`). getaddrinfo,
/// which the drivers end up in, understands the numeric zone suffix.
pub fn host_string(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V6(v6) if v6.scope_id() != 0 => format!("{}%{}", v6.ip(), v6.scope_id()),
        other => other.ip().to_string(),
    }
}

/// Races `connect` over `addrs`. On success returns the winner; when every address failed,
/// returns the failure that got furthest (a server's answer beats a refused port), prefixed
/// with its address when there were several.
pub async fn race<T, F, Fut>(
    addrs: Vec<SocketAddr>,
    stagger: Duration,
    connect: F,
) -> Result<(SocketAddr, T), Failure>
where
    T: Send + 'static,
    F: Fn(SocketAddr) -> Fut,
    Fut: Future<Output = Result<T, Failure>> + Send + 'static,
{
    let several = addrs.len() > 1;
    let mut queue = addrs.into_iter();
    let mut running = JoinSet::new();
    let mut failures: Vec<(SocketAddr, Failure)> = Vec::new();

    let mut start_next = |running: &mut JoinSet<_>| match queue.next() {
        Some(addr) => {
            let fut = connect(addr);
            running.spawn(async move { (addr, fut.await) });
            true
        }
        None => false,
    };
    if !start_next(&mut running) {
        return Err(Failure::new(Class::Dns, "no addresses to try"));
    }
    let mut more = true;
    let timer = tokio::time::sleep(stagger);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            joined = running.join_next() => match joined {
                Some(Ok((addr, Ok(value)))) => return Ok((addr, value)),
                Some(Ok((addr, Err(failure)))) => {
                    failures.push((addr, failure));
                    if more {
                        more = start_next(&mut running);
                        timer.as_mut().reset(tokio::time::Instant::now() + stagger);
                    }
                }
                Some(Err(join)) => {
                    failures.push((SocketAddr::from(([0, 0, 0, 0], 0)), Failure::new(Class::Network, join.to_string())));
                }
                None => {
                    if more {
                        more = start_next(&mut running);
                        continue;
                    }
                    break;
                }
            },
            () = &mut timer, if more => {
                more = start_next(&mut running);
                timer.as_mut().reset(tokio::time::Instant::now() + stagger);
            }
        }
        if running.is_empty() && !more {
            break;
        }
    }
    let (addr, best) = failures
        .into_iter()
        .max_by_key(|(_, f)| f.class)
        .expect("at least one address was tried, and every attempt ended in a failure");
    if several { Err(Failure::new(best.class, format!("{addr}: {}", best.message))) } else { Err(best) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn interleave_puts_ipv6_first_and_alternates() {
        let got = interleave(vec![sa("10.0.0.1:1"), sa("10.0.0.2:1"), sa("[::1]:1"), sa("[::2]:1")]);
        assert_eq!(got, vec![sa("[::1]:1"), sa("10.0.0.1:1"), sa("[::2]:1"), sa("10.0.0.2:1")]);
        let only4 = interleave(vec![sa("10.0.0.1:1"), sa("10.0.0.2:1")]);
        assert_eq!(only4, vec![sa("10.0.0.1:1"), sa("10.0.0.2:1")]);
    }

    #[test]
    fn host_string_keeps_the_scope() {
        let scoped = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 5432, 0, 3));
        assert_eq!(host_string(&scoped), "fe80::1%3");
        assert_eq!(host_string(&sa("[::1]:5432")), "::1");
        assert_eq!(host_string(&sa("127.0.0.1:5432")), "127.0.0.1");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_first_address_costs_one_stagger() {
        let addrs = vec![sa("[::1]:1"), sa("10.0.0.1:1")];
        let start = tokio::time::Instant::now();
        let (winner, ()) = race(addrs, Duration::from_millis(250), |addr| async move {
            if addr.is_ipv6() {
                std::future::pending::<()>().await;
            }
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(winner, sa("10.0.0.1:1"));
        assert_eq!(start.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_starts_the_next_address_at_once() {
        let addrs = vec![sa("[::1]:1"), sa("10.0.0.1:1")];
        let start = tokio::time::Instant::now();
        let (winner, ()) = race(addrs, Duration::from_secs(10), |addr| async move {
            if addr.is_ipv6() { Err(Failure::new(Class::Network, "refused")) } else { Ok(()) }
        })
        .await
        .unwrap();
        assert_eq!(winner, sa("10.0.0.1:1"));
        assert!(start.elapsed() < Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_most_advanced_failure_is_reported() {
        let addrs = vec![sa("[::1]:1"), sa("10.0.0.1:1")];
        let err = race::<(), _, _>(addrs, Duration::from_millis(250), |addr| async move {
            if addr.is_ipv6() {
                Err(Failure::new(Class::Network, "refused"))
            } else {
                Err(Failure::new(Class::NotReady, "starting up"))
            }
        })
        .await
        .unwrap_err();
        assert_eq!(err.class, Class::NotReady);
        assert_eq!(err.message, "10.0.0.1:1: starting up");
    }
}
