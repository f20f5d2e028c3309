//! TLS for the Proxmox client: one rustls configuration per mode, all through an observing
//! verifier that remembers the SHA-256 fingerprint of the certificate the server presented,
//! so that a failed handshake can tell the user what to pin.
//!
//! Every mode checks the handshake signature against the presented certificate (so a pinned
//! or "insecure" connection still proves the server holds the certificate's key); they differ
//! in which certificates are accepted. The check runs inside the handshake, before any request
//! (and so before the token) is sent.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use super::settings::{TlsMode, format_fingerprint};

/// What the verifier saw on the last handshake that reached it.
#[derive(Debug, Default)]
pub struct Observed {
    inner: Mutex<ObservedInner>,
}

#[derive(Debug, Default, Clone)]
struct ObservedInner {
    /// `AB:CD:…` of the end-entity certificate last presented.
    fingerprint: Option<String>,
    /// Why the last rejected certificate was rejected.
    rejection: Option<String>,
}

impl Observed {
    /// The presented certificate's fingerprint and why it was rejected, if it was.
    pub fn rejection(&self) -> Option<(String, String)> {
        let g = self.inner.lock().ok()?;
        Some((g.fingerprint.clone()?, g.rejection.clone()?))
    }
    pub fn fingerprint(&self) -> Option<String> {
        self.inner.lock().ok()?.fingerprint.clone()
    }
    fn record(&self, fingerprint: String, rejection: Option<String>) {
        if let Ok(mut g) = self.inner.lock() {
            g.fingerprint = Some(fingerprint);
            g.rejection = rejection;
        }
    }
}

enum Check {
    /// A full WebPKI verifier (chain and name): system roots or the given CA.
    Delegate(Arc<dyn ServerCertVerifier>),
    Pin([u8; 32]),
    AcceptAny,
}

struct ObservingVerifier {
    check: Check,
    provider: Arc<CryptoProvider>,
    observed: Arc<Observed>,
}

impl std::fmt::Debug for ObservingVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.check {
            Check::Delegate(_) => "chain".to_owned(),
            Check::Pin(fp) => format!("pin {}", format_fingerprint(fp)),
            Check::AcceptAny => "insecure".to_owned(),
        };
        write!(f, "ObservingVerifier({mode})")
    }
}

impl ServerCertVerifier for ObservingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        let fp = format_fingerprint(&got);
        let result = match &self.check {
            Check::Delegate(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            Check::Pin(want) if *want == got => Ok(ServerCertVerified::assertion()),
            Check::Pin(want) => Err(rustls::Error::General(format!(
                "the certificate's SHA-256 fingerprint is {fp}, not the pinned {}",
                format_fingerprint(want)
            ))),
            Check::AcceptAny => Ok(ServerCertVerified::assertion()),
        };
        self.observed
            .record(fp, result.as_ref().err().map(describe_rustls_error));
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match &self.check {
            Check::Delegate(v) => v.verify_tls12_signature(message, cert, dss),
            _ => rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            ),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match &self.check {
            Check::Delegate(v) => v.verify_tls13_signature(message, cert, dss),
            _ => rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            ),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        match &self.check {
            Check::Delegate(v) => v.supported_verify_schemes(),
            _ => self
                .provider
                .signature_verification_algorithms
                .supported_schemes(),
        }
    }
}

/// A human reading of rustls's certificate errors.
pub fn describe_rustls_error(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "it is signed by a CA this machine does not trust (Proxmox's own cluster CA, or self-signed)".to_owned(),
            C::NotValidForName | C::NotValidForNameContext { .. } => "it is not issued for the host name in the API URL (Proxmox node certificates carry the node's name and IP addresses)".to_owned(),
            C::Expired | C::ExpiredContext { .. } => "it has expired".to_owned(),
            C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet (check this machine's clock)".to_owned(),
            C::Revoked => "it has been revoked".to_owned(),
            C::BadSignature => "its signature does not verify".to_owned(),
            other => format!("it was rejected ({other:?})"),
        },
        rustls::Error::General(m) => m.clone(),
        other => other.to_string(),
    }
}

/// Reads a PEM file of one or more CA certificates.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "--ca-cert {}: cannot read it ({e}); copy /etc/pve/pve-root-ca.pem from a Proxmox node",
            path.display()
        )
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "--ca-cert {}: not a PEM certificate file ({e:?})",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "--ca-cert {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The rustls client configuration for a mode, and the observer its verifier reports to.
pub fn client_config(mode: &TlsMode) -> Result<(rustls::ClientConfig, Arc<Observed>), String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let check = match mode {
        TlsMode::System => Check::Delegate(Arc::new(
            rustls_platform_verifier::Verifier::new(provider.clone())
                .map_err(|e| format!("cannot load this machine's CA certificates: {e}"))?,
        )),
        TlsMode::CaFile(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_ca_file(path)? {
                roots.add(c).map_err(|e| {
                    format!(
                        "--ca-cert {}: a certificate in it is unusable as a CA ({e})",
                        path.display()
                    )
                })?;
            }
            let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("--ca-cert {}: {e}", path.display()))?;
            Check::Delegate(v)
        }
        TlsMode::Fingerprint(fp) => Check::Pin(*fp),
        TlsMode::Insecure => Check::AcceptAny,
    };
    let observed = Arc::new(Observed::default());
    let verifier = ObservingVerifier {
        check,
        provider: provider.clone(),
        observed: observed.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok((config, observed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_files_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        let e = read_ca_file(&f).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = read_ca_file(&dir.path().join("nope.pem")).unwrap_err();
        assert!(
            e.contains("cannot read") && e.contains("pve-root-ca.pem"),
            "{e}"
        );
    }

    #[test]
    fn every_mode_builds() {
        for m in [
            TlsMode::System,
            TlsMode::Fingerprint([1; 32]),
            TlsMode::Insecure,
        ] {
            let (_, obs) = client_config(&m).unwrap();
            assert!(obs.rejection().is_none());
        }
    }

    #[test]
    fn rejections_read_well() {
        let e = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert!(describe_rustls_error(&e).contains("does not trust"));
    }
}
