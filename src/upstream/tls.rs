//! TLS to the master, following `core.ssl_verify` (reference §2): `true` verifies with
//! the OS trust store, a path verifies with exactly that PEM bundle, `false` skips
//! verification (but still checks handshake signatures). SNI and hostname checks always
//! apply when verifying. rustls with the `ring` provider does the work.
//!
//! [`TlsKey`] is what a client's TLS set-up was built from, so that a config change
//! that keeps it can keep the pooled client.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::uri::Scheme;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ConfigBuilder, DigitallySignedStruct, RootCertStore, SignatureScheme,
    WantsVerifier,
};

use super::UpstreamError;
use crate::dcos::config::{ClusterConfig, SslVerify};
use crate::files::{ReadError, read_bounded};

/// The largest CA bundle read (the Mozilla bundle is about 220 KiB).
const MAX_CA_BUNDLE: u64 = 16 * 1024 * 1024;

/// What the pooled client's TLS set-up was built from; a new config with an equal key
/// can keep the client (and its warm connections).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TlsKey {
    /// A plain-http master.
    Plain,
    /// The OS trust store.
    System,
    /// Exactly the certificates of this bundle, as read.
    Bundle(PathBuf, Arc<[u8]>),
    /// No verification.
    Insecure,
}

impl TlsKey {
    /// Read what `cluster`'s TLS set-up depends on (the CA bundle's bytes, if any).
    pub(crate) fn of(cluster: &ClusterConfig) -> Result<Self, UpstreamError> {
        if cluster.dcos_url.scheme() != Some(&Scheme::HTTPS) {
            return Ok(Self::Plain);
        }
        Ok(match &cluster.ssl_verify {
            SslVerify::System => Self::System,
            SslVerify::Insecure => Self::Insecure,
            SslVerify::CaBundle(path) => Self::Bundle(path.clone(), read_ca_pem(path)?.into()),
        })
    }
}

/// Build the rustls client configuration for a TLS set-up.
pub(crate) fn tls_config(key: &TlsKey) -> Result<ClientConfig, UpstreamError> {
    let (provider, builder) = config_builder()?;
    // hyper-rustls sets ALPN (http/1.1) itself.
    let config = match key {
        // A plain-http master needs no trust store: don't load (or warn about) one.
        TlsKey::Plain => builder
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
        TlsKey::System => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    "no CA certificates found in the OS trust store; TLS to the master will fail \
                     unless core.ssl_verify names the cluster CA (dcos_ca.crt)"
                );
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsKey::Bundle(path, pem) => builder
            .with_root_certificates(roots_from_pem(path, pem)?)
            .with_no_client_auth(),
        TlsKey::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// The ring provider and a client config builder using it, with rustls' safe default
/// protocol versions.
fn config_builder() -> Result<
    (
        Arc<CryptoProvider>,
        ConfigBuilder<ClientConfig, WantsVerifier>,
    ),
    rustls::Error,
> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    Ok((provider, builder))
}

/// The most certificate names quoted in a name-mismatch message.
const MAX_NAMES_SHOWN: usize = 4;
/// The longest certificate name quoted (longer ones are cut).
const MAX_NAME_CHARS: usize = 80;

/// What to say when the master's certificate does not name the host it was reached at:
/// the names it does carry (from the certificate, so bounded and escaped), and the two
/// fixes: a URL with one of those names, or `upstream.tls_server_name` when the master is
/// reached through a forward (`ssh -L`) or by IP address.
pub fn name_mismatch(expected: Option<&ServerName<'_>>, presented: &[String]) -> String {
    let shown: Vec<String> = presented
        .iter()
        .take(MAX_NAMES_SHOWN)
        .map(|n| {
            bare_name(n)
                .chars()
                .take(MAX_NAME_CHARS)
                .flat_map(char::escape_debug)
                .collect()
        })
        .collect();
    let expected = expected.map_or_else(String::new, |e| format!(" {}", e.to_str()));
    let names = match shown.len() {
        0 => String::new(),
        _ if presented.len() > MAX_NAMES_SHOWN => format!(" (it names {}, …)", shown.join(", ")),
        _ => format!(" (it names {})", shown.join(", ")),
    };
    // Suggest a concrete name: the first that is not a wildcard.
    let suggest = shown
        .iter()
        .find(|n| !n.starts_with('*'))
        .map_or("NAME", String::as_str);
    format!(
        "certificate does not match the master's host name{expected}{names}: use a name it \
         was issued for in core.dcos_url, or, when the master is reached through a forward \
         (ssh -L) or by address, pass --tls-server-name {suggest} (upstream.tls_server_name)"
    )
}

/// rustls reports presented names in their `Debug` form (`DnsName("master.mesos")`,
/// `IpAddress(10.0.0.1)`): the name alone.
fn bare_name(presented: &str) -> &str {
    match presented.split_once('(') {
        Some((_, rest)) => rest
            .strip_suffix(')')
            .map(|r| r.trim_matches('"'))
            .unwrap_or(presented),
        None => presented,
    }
}

fn read_ca_pem(path: &Path) -> Result<Vec<u8>, UpstreamError> {
    read_bounded(path, MAX_CA_BUNDLE).map_err(|e| UpstreamError::CaRead {
        path: path.to_owned(),
        error: match e {
            ReadError::Io(e) => e,
            ReadError::NotAFile => std::io::Error::other("not a regular file"),
            ReadError::TooLarge => std::io::Error::other("file is larger than 16 MiB"),
        },
    })
}

fn roots_from_pem(path: &Path, pem: &[u8]) -> Result<RootCertStore, UpstreamError> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_slice_iter(pem).filter_map(Result::ok);
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(UpstreamError::CaEmpty {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

/// `ssl_verify = false`: accept any certificate, but still check the handshake
/// signatures so the session keys belong to whoever presented the certificate.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_mismatch_names_the_certificate_and_the_setting() {
        let expected = ServerName::try_from("127.0.0.1").unwrap();
        let m = name_mismatch(
            Some(&expected),
            &[
                "DnsName(\"*.mesos\")".into(),
                "DnsName(\"master.mesos\")".into(),
                "x\ny".into(),
            ],
        );
        assert!(m.contains("host name 127.0.0.1"), "{m}");
        assert!(m.contains("it names *.mesos, master.mesos, x\\ny"), "{m}");
        assert!(m.contains("--tls-server-name master.mesos"), "{m}");
        assert!(m.contains("upstream.tls_server_name"), "{m}");
        let many: Vec<String> = (0..50).map(|i| format!("n{i}.example")).collect();
        let m = name_mismatch(None, &many);
        assert!(
            m.contains("n3.example, …)") && !m.contains("n4.example"),
            "{m}"
        );
    }
}
