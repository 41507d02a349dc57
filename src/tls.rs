//! TLS settings: the server side (certificate chain and key, SNI choice, ALPN) and the client
//! side used for upstreams and the backend (trusted roots, mutual TLS, HTTP/2 by ALPN).

use std::collections::HashMap;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::{ClientTls, TlsFiles};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &*pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no certificate found"));
    }
    Ok(certs)
}

fn key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, String> {
    rustls_pemfile::private_key(&mut &*pem)
        .map_err(|e| format!("{what}: {e}"))?
        .ok_or_else(|| format!("{what}: no private key found"))
}

fn certified_key(
    cert: &std::path::Path,
    key_path: &std::path::Path,
) -> Result<Arc<CertifiedKey>, String> {
    let chain = certs(&read(cert)?, &cert.display().to_string())?;
    let key = key(&read(key_path)?, &key_path.display().to_string())?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| {
        format!(
            "{} does not match {}: {e}",
            key_path.display(),
            cert.display()
        )
    })?;
    Ok(Arc::new(certified))
}

/// Picks the certificate for the name the client asked for; the default one otherwise.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    /// Lower-case exact names and `*.suffix` wildcards.
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello.server_name().and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.by_name.get(&name).or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.by_name.get(&format!("*.{parent}"))
            })
        });
        Some(chosen.unwrap_or(&self.default).clone())
    }
}

/// Builds an acceptor for `files`: TLS 1.2+ only, ALPN `h2` then `http/1.1`, SNI choice.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    let default = certified_key(&files.cert, &files.key)?;
    let mut by_name = HashMap::new();
    for (names, cert, key) in &files.sni {
        let certified = certified_key(cert, key)?;
        for name in names {
            by_name.insert(name.to_ascii_lowercase(), certified.clone());
        }
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { default, by_name }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Every name the server's certificates are for: the DNS and IP subject alternative names of
/// the default certificate (its common name when it has none) and every `server.tls.sni` name.
/// Lower-cased; wildcards stay as `*.example.com`.
pub fn served_names(files: &TlsFiles) -> Result<Vec<String>, String> {
    let pem = read(&files.cert)?;
    let cert = openssl::x509::X509::from_pem(&pem)
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    let mut names: Vec<String> = Vec::new();
    if let Some(alternatives) = cert.subject_alt_names() {
        for name in &alternatives {
            if let Some(dns) = name.dnsname() {
                names.push(dns.to_ascii_lowercase());
            } else if let Some(ip) = name.ipaddress() {
                let ip = match ip.len() {
                    4 => <[u8; 4]>::try_from(ip).ok().map(std::net::IpAddr::from),
                    16 => <[u8; 16]>::try_from(ip).ok().map(std::net::IpAddr::from),
                    _ => None,
                };
                names.extend(ip.map(|ip| ip.to_string()));
            }
        }
    }
    if names.is_empty() {
        let common = cert
            .subject_name()
            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
            .filter_map(|entry| entry.data().to_string().ok())
            .map(|name| name.to_ascii_lowercase());
        names.extend(common);
    }
    for (sni, _, _) in &files.sni {
        names.extend(sni.iter().map(|name| name.to_ascii_lowercase()));
    }
    Ok(names)
}

/// Whether `host` (no port) is one of `names`: exactly, or under a `*.` wildcard that stands
/// for one label, as in a certificate.
pub fn is_served(host: &str, names: &[String]) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    names.iter().any(|name| match name.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => *name == host,
    })
}

/// Builds every TLS setting of `config` as a start would (the server's certificates and each
/// upstream's and the backend's client settings) and says what fails, with its key path.
pub fn problems(config: &crate::Config) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if let Some(files) = &config.server.tls {
        if let Err(err) = acceptor(files) {
            problems.push(("server.tls".to_owned(), err));
        }
    }
    let clients = config
        .upstreams
        .iter()
        .map(|u| (format!("upstreams.{}", u.name), &u.client))
        .chain(
            config
                .backend
                .iter()
                .map(|b| ("backend".to_owned(), &b.client)),
        );
    for (path, settings) in clients {
        if let Err(err) = client_config(settings) {
            problems.push((path, err));
        }
    }
    problems
}

/// The client side: the configured CA (or the public webpki roots) and an optional client
/// certificate. ALPN is left to the connector (`upstream::client`), which offers `h2` only
/// when HTTP/2 is asked for.
pub fn client_config(settings: &ClientTls) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &settings.ca_pem {
        Some(pem) => {
            for cert in certs(pem, "ca_file")? {
                roots.add(cert).map_err(|e| format!("ca_file: {e}"))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots);
    let config = match &settings.client_pem {
        Some((cert, key_pem)) => builder
            .with_client_auth_cert(certs(cert, "client_cert")?, key(key_pem, "client_key")?)
            .map_err(|e| format!("client certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}
