//! TLS helpers: early PEM checks (so a broken Secret is reported when the
//! client is built, naming what is wrong, not at the first call) and the
//! lab-only verifier behind `insecure_skip_verify`.

use std::error::Error as StdError;
use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::error::ClientError;

pub(crate) fn check_pem_certs(pem: &str, what: &str) -> Result<(), ClientError> {
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        cert.map_err(|e| ClientError::Tls(format!("{what} is not valid PEM: {e}")))?;
        n += 1;
    }
    if n == 0 {
        return Err(ClientError::Tls(format!(
            "{what} holds no PEM CERTIFICATE block"
        )));
    }
    Ok(())
}

pub(crate) fn check_pem_key(pem: &str) -> Result<(), ClientError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map(|_| ())
        .map_err(|e| ClientError::Tls(format!("client key is not a PEM private key: {e}")))
}

pub(crate) fn error_text(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text.push_str(": ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}

/// Accepts every server certificate but still checks the handshake
/// signatures (so the session keys belong to whoever holds the key the
/// server presented). Used only when the operator set
/// `insecure_skip_verify`.
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

pub(crate) fn no_verification() -> Arc<dyn ServerCertVerifier> {
    Arc::new(NoVerification(
        rustls::crypto::ring::default_provider().signature_verification_algorithms,
    ))
}

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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_checks_name_the_material() {
        let e = check_pem_certs("not pem", "CA bundle")
            .unwrap_err()
            .to_string();
        assert!(e.contains("CA bundle") && e.contains("no PEM"), "{e}");
        let e = check_pem_key("nope").unwrap_err().to_string();
        assert!(e.contains("client key"), "{e}");
        let cert = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        check_pem_certs(&cert.cert.pem(), "CA bundle").unwrap();
        check_pem_key(&cert.signing_key.serialize_pem()).unwrap();
    }
}
