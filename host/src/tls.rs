//! TLS for guests' stream sockets, terminated in the host (rustls on the `ring` provider).
//!
//! A guest asks for TLS on a connected stream socket (`start-tls`, MicroPython's
//! `ssl.wrap_socket`) or creates one with `IPPROTO_SEC`; the host runs the handshake and the
//! record layer, and the guest reads and writes plaintext with the usual stream calls. The
//! private keys an embedder configures here never enter guest memory.
//!
//! A [`TlsConfig`] says what the host trusts and which certificate a guest's server side
//! presents; give it to a guest with [`crate::UsocketCtx::with_tls`]. It is cheap to clone and
//! share between guests. Each guest keeps its own rustls configurations made from it (so no
//! TLS session cache is shared between guests).

use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig};

use crate::errno::Errno;

/// The most bytes of certificates or keys a guest may pass in one `start-tls` (a chain of a
/// few certificates is a few KiB; this bounds the parsing work a guest can cause).
pub(crate) const MAX_GUEST_PEM: usize = 256 * 1024;

/// Where a guest's TLS trust and server identity come from. See the [module docs](self).
#[derive(Clone)]
pub struct TlsConfig {
    roots: Arc<RootCertStore>,
    /// The server side's certificate chain and key, for guests that accept TLS connections
    /// without passing their own.
    identity: Option<Arc<Identity>>,
}

struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// A certificate, key or trust store that could not be used, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// No certificate in the PEM or DER data.
    #[error("no certificate found in {what}: give PEM (-----BEGIN CERTIFICATE-----) or DER")]
    NoCertificate {
        /// What was read (a file name, "the CA data").
        what: String,
    },
    /// No private key in the PEM or DER data.
    #[error(
        "no private key found in {what}: give a PEM PKCS#8, PKCS#1 (RSA) or SEC1 (EC) key, or DER"
    )]
    NoKey {
        /// What was read.
        what: String,
    },
    /// The private key is not the key of the certificate.
    #[error("in {what}, the private key is not the certificate's key: give the key made with it")]
    KeyMismatch {
        /// What was given.
        what: String,
    },
    /// rustls refused the certificate or key.
    #[error("{what} cannot be used: {reason}")]
    Refused {
        /// What was given.
        what: String,
        /// rustls's reason.
        reason: String,
    },
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("roots", &self.roots.len())
            .field("server_identity", &self.identity.is_some())
            .finish()
    }
}

impl Default for TlsConfig {
    /// The system's trust roots (read once per process), no server identity.
    fn default() -> Self {
        TlsConfig {
            roots: system_roots(),
            identity: None,
        }
    }
}

impl TlsConfig {
    /// Trusts nothing and has no server identity: every server certificate is refused until
    /// roots are added.
    pub fn empty() -> Self {
        TlsConfig {
            roots: Arc::new(RootCertStore::empty()),
            identity: None,
        }
    }

    /// Adds CA certificates (PEM, one or more blocks, or one DER certificate) to the trusted
    /// roots.
    pub fn add_roots(mut self, data: &[u8], what: &str) -> Result<Self, TlsConfigError> {
        let certs = certificates(data, what)?;
        let roots = Arc::make_mut(&mut self.roots);
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| refused(format!("a CA certificate in {what}"), e))?;
        }
        Ok(self)
    }

    /// The certificate chain (leaf first) and private key that a guest's server side presents
    /// when the guest passes none of its own (PEM, or DER).
    pub fn with_server_identity(
        mut self,
        chain: &[u8],
        key: &[u8],
        what: &str,
    ) -> Result<Self, TlsConfigError> {
        let identity = load_identity(chain, key, what)?;
        // Checked now, so a bad pair is the embedder's error, not every guest's.
        server_config(&identity).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsConfigError::KeyMismatch {
                what: what.to_string(),
            },
            e => refused(what.to_string(), e),
        })?;
        self.identity = Some(Arc::new(identity));
        Ok(self)
    }

    /// How many trusted roots there are.
    pub fn root_count(&self) -> usize {
        self.roots.len()
    }

    /// Whether a server identity is configured.
    pub fn has_server_identity(&self) -> bool {
        self.identity.is_some()
    }
}

/// One guest's rustls configurations, made from its [`TlsConfig`] when first needed.
#[derive(Default)]
pub(crate) struct GuestTls {
    /// Unset: the default (the system's roots, read when first needed).
    config: OnceLock<TlsConfig>,
    verified: OnceLock<Arc<ClientConfig>>,
    unverified: OnceLock<Arc<ClientConfig>>,
    server: OnceLock<Option<Arc<ServerConfig>>>,
}

impl GuestTls {
    pub(crate) fn new(config: TlsConfig) -> GuestTls {
        GuestTls {
            config: OnceLock::from(config),
            ..GuestTls::default()
        }
    }

    fn config(&self) -> &TlsConfig {
        self.config.get_or_init(TlsConfig::default)
    }

    /// A client configuration: verifying against `cadata` (the guest's own CAs) or the host's
    /// roots, or, for `verify == false`, not verifying the certificate (signatures still are).
    pub(crate) fn client(
        &self,
        verify: bool,
        cadata: Option<&[u8]>,
        identity: Option<(&[u8], &[u8])>,
    ) -> Result<Arc<ClientConfig>, Errno> {
        if cadata.is_none() && identity.is_none() {
            let cached = if verify {
                &self.verified
            } else {
                &self.unverified
            };
            if let Some(config) = cached.get() {
                return Ok(config.clone());
            }
            let config = Arc::new(client_config(verify, self.config().roots.clone(), None)?);
            return Ok(cached.get_or_init(|| config).clone());
        }
        let roots = match cadata {
            Some(data) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates(data, "cadata").map_err(|_| Errno::EINVAL)? {
                    roots.add(cert).map_err(|_| Errno::EINVAL)?;
                }
                Arc::new(roots)
            }
            None => self.config().roots.clone(),
        };
        let identity = match identity {
            Some((chain, key)) => {
                Some(load_identity(chain, key, "cert").map_err(|_| Errno::EINVAL)?)
            }
            None => None,
        };
        Ok(Arc::new(client_config(verify, roots, identity)?))
    }

    /// A server configuration: the guest's own certificate and key, or the embedder's.
    pub(crate) fn server(
        &self,
        identity: Option<(&[u8], &[u8])>,
    ) -> Result<Arc<ServerConfig>, Errno> {
        if let Some((chain, key)) = identity {
            let identity = load_identity(chain, key, "cert").map_err(|_| Errno::EINVAL)?;
            return Ok(Arc::new(
                server_config(&identity).map_err(|_| Errno::EINVAL)?,
            ));
        }
        self.server
            .get_or_init(|| {
                let identity = self.config().identity.as_ref()?;
                server_config(identity).ok().map(Arc::new)
            })
            .clone()
            .ok_or(Errno::EINVAL)
    }
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system's roots, read once per process (unreadable ones are skipped, as browsers do).
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for err in &found.errors {
                tracing::warn!(target: "usocket::tls", "system trust roots: {err}");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(target: "usocket::tls", added, ignored, "system trust roots");
            Arc::new(roots)
        })
        .clone()
}

fn client_config(
    verify: bool,
    roots: Arc<RootCertStore>,
    identity: Option<Identity>,
) -> Result<ClientConfig, Errno> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|_| Errno::EIO)?;
    let builder = if verify {
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    };
    match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .map_err(|_| Errno::EINVAL),
        None => Ok(builder.with_no_client_auth()),
    }
}

fn server_config(identity: &Identity) -> Result<ServerConfig, rustls::Error> {
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
}

fn refused(what: String, e: impl fmt::Display) -> TlsConfigError {
    TlsConfigError::Refused {
        what,
        reason: e.to_string(),
    }
}

/// Certificates from PEM (every CERTIFICATE block) or a single DER certificate.
fn certificates(data: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs: Vec<_> = if looks_like_pem(data) {
        CertificateDer::pem_slice_iter(data)
            .filter_map(Result::ok)
            .collect()
    } else if data.is_empty() {
        Vec::new()
    } else {
        vec![CertificateDer::from(data.to_vec())]
    };
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate {
            what: what.to_string(),
        });
    }
    Ok(certs)
}

fn load_identity(chain: &[u8], key: &[u8], what: &str) -> Result<Identity, TlsConfigError> {
    let chain = certificates(chain, what)?;
    let key = if looks_like_pem(key) {
        PrivateKeyDer::from_pem_slice(key).ok()
    } else {
        PrivateKeyDer::try_from(key.to_vec()).ok()
    };
    let key = key.ok_or_else(|| TlsConfigError::NoKey {
        what: what.to_string(),
    })?;
    Ok(Identity { chain, key })
}

fn looks_like_pem(data: &[u8]) -> bool {
    memchr_str(data, b"-----BEGIN ")
}

fn memchr_str(data: &[u8], needle: &[u8]) -> bool {
    data.windows(needle.len()).any(|w| w == needle)
}

/// CERT_NONE: any certificate is accepted, but the handshake's signatures are still checked
/// (so the peer holds the key of the certificate it sent).
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

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The errno of a TLS failure (the table in docs/contract.md#tls), and its reason in words for
/// the audit.
pub(crate) fn errno_of(err: &rustls::Error) -> Errno {
    use rustls::Error as E;
    match err {
        E::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => Errno::ENOKEY,
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => Errno::EKEYEXPIRED,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Errno::EKEYREJECTED
            }
            _ => Errno::EBADMSG,
        },
        E::NoCertificatesPresented => Errno::EBADMSG,
        _ => Errno::EPROTO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errno_table_of_certificate_failures() {
        let cert = |e| rustls::Error::InvalidCertificate(e);
        assert_eq!(
            errno_of(&cert(CertificateError::UnknownIssuer)),
            Errno::ENOKEY
        );
        assert_eq!(
            errno_of(&cert(CertificateError::Expired)),
            Errno::EKEYEXPIRED
        );
        assert_eq!(
            errno_of(&cert(CertificateError::NotValidYet)),
            Errno::EKEYEXPIRED
        );
        assert_eq!(
            errno_of(&cert(CertificateError::NotValidForName)),
            Errno::EKEYREJECTED
        );
        assert_eq!(
            errno_of(&cert(CertificateError::BadSignature)),
            Errno::EBADMSG
        );
        assert_eq!(
            errno_of(&rustls::Error::AlertReceived(
                rustls::AlertDescription::HandshakeFailure
            )),
            Errno::EPROTO
        );
    }

    #[test]
    fn pem_without_a_certificate_is_explained() {
        let err = TlsConfig::empty()
            .add_roots(
                b"-----BEGIN NOTHING-----\n-----END NOTHING-----\n",
                "ca.pem",
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("no certificate found in ca.pem"),
            "{err}"
        );
        assert!(TlsConfig::empty().add_roots(b"", "ca.pem").is_err());
    }

    #[test]
    fn a_generated_ca_and_identity_load() {
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let config = TlsConfig::empty()
            .add_roots(ca.cert.pem().as_bytes(), "ca")
            .unwrap()
            .with_server_identity(
                ca.cert.pem().as_bytes(),
                ca.signing_key.serialize_pem().as_bytes(),
                "identity",
            )
            .unwrap();
        assert_eq!(config.root_count(), 1);
        assert!(config.has_server_identity());
        let guest = GuestTls::new(config);
        assert!(guest.server(None).is_ok());
        assert!(guest.client(true, None, None).is_ok());
        // A key that is not a key.
        assert!(
            TlsConfig::empty()
                .with_server_identity(ca.cert.pem().as_bytes(), b"nonsense", "x")
                .is_err()
        );
    }
}
