//! Certificates: a fleet CA, one server certificate per device (SANs: its
//! address, `localhost`, its name), a client certificate for mTLS, and the
//! self-signed trustpoint every device shows in Cert.GetCertificates.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The fleet's certificate authority and what it signed for clients.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    /// CA certificate, PEM.
    pub ca_pem: String,
    /// Client certificate for mTLS, PEM.
    pub client_cert_pem: String,
    /// Client key for mTLS, PEM.
    pub client_key_pem: String,
    /// Where the PEM files were written, if anywhere.
    pub dir: Option<PathBuf>,
}

/// Paths of the files a client needs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PkiFiles {
    /// CA certificate.
    pub ca_cert: PathBuf,
    /// Client certificate (mTLS).
    pub client_cert: PathBuf,
    /// Client key (mTLS).
    pub client_key: PathBuf,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Pki {
    /// New CA and client certificate.
    pub fn generate() -> Result<Pki, String> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "iosxe-sim fleet CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().map_err(err)?).map_err(err)?;
        let ca_pem = ca.pem();
        let mut cp = CertificateParams::new(vec!["iosxe-sim-client".to_string()]).map_err(err)?;
        cp.distinguished_name
            .push(DnType::CommonName, "iosxe-sim client");
        cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let ck = KeyPair::generate().map_err(err)?;
        let cc = cp.signed_by(&ck, &ca).map_err(err)?;
        Ok(Pki {
            ca,
            ca_pem,
            client_cert_pem: cc.pem(),
            client_key_pem: ck.serialize_pem(),
            dir: None,
        })
    }

    /// Writes `ca.pem`, `client.pem`, `client-key.pem` into `dir`.
    pub fn write_to(&mut self, dir: &Path) -> std::io::Result<PkiFiles> {
        std::fs::create_dir_all(dir)?;
        let files = PkiFiles {
            ca_cert: dir.join("ca.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
        };
        std::fs::write(&files.ca_cert, &self.ca_pem)?;
        std::fs::write(&files.client_cert, &self.client_cert_pem)?;
        std::fs::write(&files.client_key, &self.client_key_pem)?;
        self.dir = Some(dir.to_owned());
        Ok(files)
    }

    /// A server certificate for a device, and its rustls config (h2 ALPN;
    /// client certificates required when `mtls`).
    pub fn server_config(
        &self,
        name: &str,
        ip: IpAddr,
        mtls: bool,
    ) -> Result<(String, Arc<rustls::ServerConfig>), String> {
        let mut p =
            CertificateParams::new(vec!["localhost".to_string(), name.to_string()]).map_err(err)?;
        p.subject_alt_names.push(SanType::IpAddress(ip));
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(err)?;
        let cert = p.signed_by(&key, &self.ca).map_err(err)?;
        let pem = cert.pem();
        let chain = vec![cert.der().clone()];
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(err)?;
        let mut cfg = if mtls {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from(self.ca.der().to_vec()))
                .map_err(err)?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(err)?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key_der)
                .map_err(err)?
        } else {
            builder
                .with_no_client_auth()
                .with_single_cert(chain, key_der)
                .map_err(err)?
        };
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok((pem, Arc::new(cfg)))
    }
}

/// A self-signed certificate like the `TP-self-signed-<n>` trustpoint
/// IOS-XE creates for itself.
pub fn self_signed_pem(serial: &str) -> Result<String, String> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    p.distinguished_name.push(
        DnType::CommonName,
        format!("IOS-Self-Signed-Certificate-{serial}"),
    );
    let key = KeyPair::generate().map_err(err)?;
    Ok(p.self_signed(&key).map_err(err)?.pem())
}
