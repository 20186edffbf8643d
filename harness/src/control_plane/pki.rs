//! Certificates and keys of a local control plane, made fresh for each one:
//! a CA, the API server's serving certificate (127.0.0.1, localhost), an
//! admin client certificate in `system:masters`, and the service-account
//! signing key pair.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::ControlPlaneError;

/// PEM material written into the control plane's directory.
pub struct Pki {
    /// The CA certificate clients trust and the API server checks client
    /// certificates against.
    pub ca_cert: String,
    /// The API server's serving certificate and key.
    pub serving_cert: String,
    pub serving_key: String,
    /// The admin client certificate and key (`CN=cvk-admin, O=system:masters`).
    pub admin_cert: String,
    pub admin_key: String,
    /// The service-account token signing key and its public half.
    pub sa_key: String,
    pub sa_pub: String,
}

impl Pki {
    /// Generates everything; the keys are ECDSA P-256.
    pub fn generate() -> Result<Self, ControlPlaneError> {
        let err = |what: &str, e: rcgen::Error| ControlPlaneError::Pki(format!("{what}: {e}"));

        let ca_key = KeyPair::generate().map_err(|e| err("CA key", e))?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| err("CA", e))?;
        ca.distinguished_name = name("cvk local control plane CA", None);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).map_err(|e| err("CA", e))?;
        let issuer = Issuer::new(ca, &ca_key);

        let serving_key = KeyPair::generate().map_err(|e| err("serving key", e))?;
        let mut serving =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .map_err(|e| err("serving certificate", e))?;
        serving.distinguished_name = name("kube-apiserver", None);
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving
            .signed_by(&serving_key, &issuer)
            .map_err(|e| err("serving certificate", e))?;

        let admin_key = KeyPair::generate().map_err(|e| err("admin key", e))?;
        let mut admin = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| err("admin certificate", e))?;
        admin.distinguished_name = name("cvk-admin", Some("system:masters"));
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin
            .signed_by(&admin_key, &issuer)
            .map_err(|e| err("admin certificate", e))?;

        let sa = KeyPair::generate().map_err(|e| err("service-account key", e))?;

        Ok(Self {
            ca_cert: ca_cert.pem(),
            serving_cert: serving_cert.pem(),
            serving_key: serving_key.serialize_pem(),
            admin_cert: admin_cert.pem(),
            admin_key: admin_key.serialize_pem(),
            sa_key: sa.serialize_pem(),
            sa_pub: sa.public_key_pem(),
        })
    }
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}
