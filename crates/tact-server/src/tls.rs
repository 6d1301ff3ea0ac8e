//! TLS for the gRPC port (rustls with the `ring` provider): the server's certificate
//! and key, and for mutual TLS the CAs client certificates must chain to. The
//! handshake runs inside tact's own connection ([`crate::transport`]), so the
//! handshake deadline covers it; the verified client certificate's subject CN (else
//! its first DNS name) names the client.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

use crate::error::ServerError;

/// Where the PEM files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Mutual TLS: client certificates must be signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

fn tls_error(what: &str, path: &Path, why: impl std::fmt::Display) -> ServerError {
    ServerError::Tls(format!("{what} {}: {why}", path.display()))
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|e| tls_error(what, path, e))
}

fn certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(what, path, e))?;
    if certs.is_empty() {
        return Err(tls_error(what, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The acceptor for `opts` (h2 by ALPN).
pub fn acceptor(opts: &TlsOptions) -> Result<TlsAcceptor, ServerError> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let chain = certs("certificate", &opts.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read("key", &opts.key)?)
        .map_err(|e| tls_error("key", &opts.key, e))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let builder = match &opts.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certs("client CA", ca)? {
                roots.add(cert).map_err(|e| tls_error("client CA", ca, e))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| tls_error("client CA", ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| tls_error("certificate and key", &opts.cert, e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The client a certificate names: its subject CN, else its first DNS name.
pub fn peer_name(cert: &CertificateDer<'_>) -> Option<String> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    common_name(parsed.subject()).or_else(|| parsed.valid_dns_names().next().map(str::to_owned))
}

/// One DER TLV: (tag, contents, rest).
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The commonName (2.5.4.3) of a DER Name's contents (a sequence of RDN sets).
fn common_name(mut name: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    while let Some((0x31, mut set, rest)) = tlv(name) {
        while let Some((0x30, attr, more)) = tlv(set) {
            if let Some((0x06, oid, value)) = tlv(attr)
                && oid == CN
                && let Some((tag, text, _)) = tlv(value)
                && matches!(tag, 0x0c | 0x13 | 0x16)
            {
                return std::str::from_utf8(text).ok().map(str::to_owned);
            }
            set = more;
        }
        name = rest;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_name_is_found_in_a_der_name() {
        // SET { SEQ { OID 2.5.4.10 (O), "acme" } }, SET { SEQ { OID 2.5.4.3 (CN), "crm" } }
        let name = [
            0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x04, b'a', b'c', b'm', b'e', 0x31,
            0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x03, b'c', b'r', b'm',
        ];
        assert_eq!(common_name(&name).as_deref(), Some("crm"));
        assert_eq!(common_name(&name[..15]), None);
        assert_eq!(common_name(&name[..20]), None, "truncated");
    }
}
