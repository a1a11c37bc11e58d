//! HTTP and HTTPS targets: what "ready" means for them (the options a target URL carries), and
//! the check itself: one `GET` over a connection preflight made (so the address race, fresh
//! DNS and self-connect refusal apply), with rustls for `https://`.
//!
//! Options ride in the URL's query, and are taken out of the request:
//! `status=200,204` or ranges like `2xx,301` (default `2xx`), `body=REGEX` (the body must match),
//! `ca=/path/ca.pem` (trust this CA instead of the public roots), `insecure=1` (no certificate
//! check at all). Redirects are not followed: a 3xx is an answer, ready only if `status` says so.

use std::path::PathBuf;
use std::sync::Arc;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use url::Url;

use crate::classify::{Class, Failure, Permanent};

/// The most of a body read for `body=`.
const BODY_LIMIT: usize = 1 << 20;

/// What makes an answer "ready".
#[derive(Clone)]
pub struct Check {
    /// Inclusive ranges of accepted status codes.
    statuses: Vec<(u16, u16)>,
    body: Option<regex_lite::Regex>,
    /// For `https://`: the TLS settings, built once.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Check {
    /// Takes preflight's options out of `url`'s query. Errors name the option and the fix.
    pub fn from_url(url: &mut Url) -> Result<Check, String> {
        let (mut statuses, mut body) = (None, None);
        take_options(url, |key, value| {
            match key {
                "status" => statuses = Some(parse_statuses(value)?),
                "body" => {
                    body = Some(
                        regex_lite::Regex::new(value)
                            .map_err(|e| format!("body='{value}' is not a regular expression ({e})"))?,
                    )
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        let tls = match url.scheme() {
            "https" => Some(tls_from_url(url)?),
            _ if url.query_pairs().any(|(k, _)| k == "ca" || k == "insecure") => {
                return Err("ca= and insecure= are for https:// targets".into());
            }
            _ => None,
        };
        Ok(Check { statuses: statuses.unwrap_or(vec![(200, 299)]), body, tls })
    }

    fn accepts(&self, status: u16) -> bool {
        self.statuses.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

/// `200`, `2xx`, `200-204`, and lists of them: `2xx,301`.
fn parse_statuses(raw: &str) -> Result<Vec<(u16, u16)>, String> {
    let bad = || format!("status='{raw}': write codes or classes, e.g. status=200 or status=2xx,301");
    raw.split(',')
        .map(|part| {
            let part = part.trim().to_ascii_lowercase();
            let code = |s: &str| s.parse::<u16>().ok().filter(|c| (100..=599).contains(c));
            if let Some(class) = part.strip_suffix("xx") {
                let c = class.parse::<u16>().ok().filter(|c| (1..=5).contains(c)).ok_or_else(bad)?;
                Ok((c * 100, c * 100 + 99))
            } else if let Some((lo, hi)) = part.split_once('-') {
                let (lo, hi) = (code(lo).ok_or_else(bad)?, code(hi).ok_or_else(bad)?);
                if lo > hi { Err(bad()) } else { Ok((lo, hi)) }
            } else {
                let c = code(&part).ok_or_else(bad)?;
                Ok((c, c))
            }
        })
        .collect()
}

/// The TLS settings from a URL's `ca=` and `insecure=` options, which are taken out of it.
pub fn tls_from_url(url: &mut Url) -> Result<Arc<rustls::ClientConfig>, String> {
    let (mut ca, mut insecure) = (None, false);
    take_options(url, |key, value| {
        match key {
            "ca" => ca = Some(PathBuf::from(value)),
            "insecure" => insecure = parse_insecure(value)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(Arc::new(client_config(ca, insecure)?))
}

/// Takes out of `url`'s query every pair `take` accepts (returns true for); the rest stay.
fn take_options(
    url: &mut Url,
    mut take: impl FnMut(&str, &str) -> Result<bool, String>,
) -> Result<(), String> {
    let mut kept = Vec::new();
    for (key, value) in url.query_pairs() {
        if !take(&key, &value)? {
            kept.push((key.into_owned(), value.into_owned()));
        }
    }
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
    Ok(())
}

fn parse_insecure(value: &str) -> Result<bool, String> {
    match value {
        "1" | "true" | "yes" | "" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(format!("insecure='{value}': write insecure=1 or leave it out")),
    }
}

/// A TLS session over `stream`, checking the certificate against `host` (a name or an address)
/// as `config` says. Certificate problems are permanent: waiting will not fix them.
pub async fn tls_connect(
    stream: TcpStream,
    host: &str,
    config: &Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Failure> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| Failure::new(Class::Permanent(Permanent::Tls), format!("{host}: {e}")))?;
    tokio_rustls::TlsConnector::from(config.clone()).connect(name, stream).await.map_err(|e| {
        let class = match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(_) => Class::Permanent(Permanent::Tls),
            None => crate::classify::classify_io(&e),
        };
        Failure::new(class, format!("TLS: {e}"))
    })
}

fn client_config(ca: Option<PathBuf>, insecure: bool) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    if insecure {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(&path)
                .map_err(|e| format!("ca={}: cannot read it ({e})", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("ca={}: not a PEM certificate ({e})", path.display()))?;
                roots.add(cert).map_err(|e| format!("ca={}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("ca={}: no certificate in it", path.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `insecure=1`: any certificate, still checking that the handshake's signatures are sound.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One `GET url` over `stream`, judged by `check`.
pub async fn get(stream: TcpStream, url: &Url, check: &Check) -> Result<(), Failure> {
    match &check.tls {
        None => request(stream, url, check).await,
        Some(config) => {
            let tls = tls_connect(stream, url.host_str().unwrap_or_default(), config).await?;
            request(tls, url, check).await
        }
    }
}

async fn request<S>(stream: S, url: &Url, check: &Check) -> Result<(), Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| Failure::new(Class::Network, e.to_string()))?;
    let authority = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, concat!("preflight/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::new(Class::Permanent(Permanent::Other), e.to_string()))?;
    // The connection future does the I/O; it can finish (the server said `connection: close`)
    // just before the response is picked up, so finishing cleanly is not a failure.
    tokio::pin!(conn);
    let send = sender.send_request(request);
    tokio::pin!(send);
    let response = tokio::select! {
        r = &mut send => r,
        r = &mut conn => match r {
            Ok(()) => send.await,
            Err(e) => return Err(Failure::new(Class::Network, e.to_string())),
        },
    }
    .map_err(|e| Failure::new(Class::Network, e.to_string()))?;
    let status = response.status();
    if !check.accepts(status.as_u16()) {
        return Err(Failure::new(Class::NotReady, format!("HTTP {status}")));
    }
    let Some(pattern) = &check.body else { return Ok(()) };
    // As above: the connection can end cleanly with the body already handed over.
    let collect = Limited::new(response.into_body(), BODY_LIMIT).collect();
    tokio::pin!(collect);
    let body = tokio::select! {
        b = &mut collect => b,
        r = &mut conn => match r {
            Ok(()) => collect.await,
            Err(e) => return Err(Failure::new(Class::Network, format!("reading the body: {e}"))),
        },
    }
    .map_err(|e| Failure::new(Class::Network, format!("reading the body: {e}")))?
    .to_bytes();
    if pattern.is_match(&String::from_utf8_lossy(&body)) {
        Ok(())
    } else {
        Err(Failure::new(
            Class::NotReady,
            format!("HTTP {status}, but the body does not match body='{pattern}'"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str) -> (Result<Check, String>, Url) {
        let mut url = Url::parse(url).unwrap();
        let check = Check::from_url(&mut url);
        (check, url)
    }

    #[test]
    fn options_are_taken_out_of_the_request() {
        let (c, url) = check("http://api/health?status=2xx,301&body=%22ok%22&verbose=1");
        let c = c.unwrap();
        assert_eq!(url.as_str(), "http://api/health?verbose=1");
        assert!(c.accepts(204) && c.accepts(301) && !c.accepts(302) && !c.accepts(500));
        assert!(c.body.unwrap().is_match(r#"{"status":"ok"}"#));
        let (c, url) = check("http://api/health?status=200-204");
        assert_eq!(url.as_str(), "http://api/health");
        let c = c.unwrap();
        assert!(c.accepts(204) && !c.accepts(205));
        assert!(check("http://api/").0.unwrap().accepts(299));
    }

    #[test]
    fn bad_options_are_named() {
        for (url, says) in [
            ("http://a/?status=6xx", "status='6xx'"),
            ("http://a/?status=204-200", "status='204-200'"),
            ("http://a/?status=ok", "status='ok'"),
            ("http://a/?body=(", "body='('"),
            ("http://a/?insecure=1", "for https://"),
            ("https://a/?insecure=maybe", "insecure='maybe'"),
            ("https://a/?ca=/nonexistent.pem", "ca=/nonexistent.pem: cannot read it"),
        ] {
            let e = check(url).0.err().unwrap_or_else(|| panic!("{url} accepted"));
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}
