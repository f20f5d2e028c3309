//! The emulator's self-signed certificate and rustls server config.

use sha2::{Digest, Sha256};
use std::sync::Arc;

pub struct Tls {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub fingerprint: String,
    pub config: Arc<rustls::ServerConfig>,
}

/// `AB:CD:…`: upper-case hex bytes joined by ':' (how Proxmox shows fingerprints).
pub fn fingerprint(der: &[u8]) -> String {
    let digest: [u8; 32] = Sha256::digest(der).into();
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn generate() -> std::io::Result<Tls> {
    let err = |e: &dyn std::fmt::Display| std::io::Error::other(format!("certificate: {e}"));
    // "127.0.0.1" becomes an IP SAN, "localhost" a DNS SAN.
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .map_err(|e| err(&e))?;
    let cert_der = certified.cert.der().clone();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(
        rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()),
    );
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&e))?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der)
        .map_err(|e| err(&e))?;
    Ok(Tls {
        cert_pem: certified.cert.pem(),
        cert_der: cert_der.to_vec(),
        fingerprint: fingerprint(&cert_der),
        config: Arc::new(config),
    })
}
