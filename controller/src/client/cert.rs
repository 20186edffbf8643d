//! `gnoi.certificate.CertificateManagement`: GetCertificates and
//! CanGenerateCSR (control class). Upstream marks the service deprecated in
//! favour of gNSI Certz; IOS-XE 17.x still serves it.

#![allow(deprecated)]

use cvk_proto::gnoi::cert as pb;
use cvk_proto::gnoi::cert::certificate_management_client::CertificateManagementClient;
use serde::Serialize;

pub use pb::{CertificateType, KeyType};

use super::{ClientError, DeviceClient, MAX_DECODE_CONTROL, rpcs};

fn client(ch: tonic::transport::Channel) -> CertificateManagementClient<tonic::transport::Channel> {
    CertificateManagementClient::new(ch).max_decoding_message_size(MAX_DECODE_CONTROL)
}

/// One installed certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateEntry {
    /// Certificate id (the IOS-XE trustpoint name).
    pub certificate_id: String,
    /// `CT_X509` or `CT_UNKNOWN`.
    pub certificate_type: String,
    /// The certificate (PEM for X.509), lossily decoded as UTF-8.
    pub certificate: String,
    /// Endpoints using it, as `TYPE:endpoint`.
    pub endpoints: Vec<String>,
    /// Last change, nanoseconds since the epoch.
    pub modification_time_unix_nanos: i64,
}

impl DeviceClient {
    /// CertificateManagement.GetCertificates.
    pub async fn get_certificates(&self) -> Result<Vec<CertificateEntry>, ClientError> {
        let d = self.settings().timeouts.control;
        let r = self
            .unary(
                rpcs::CERT_GET,
                d,
                pb::GetCertificatesRequest {},
                |ch, req| async move { client(ch).get_certificates(req).await },
            )
            .await?;
        Ok(r.certificate_info
            .into_iter()
            .map(|c| {
                let (ty, pem) = match c.certificate {
                    Some(cert) => (
                        CertificateType::try_from(cert.r#type)
                            .map(|t| t.as_str_name().to_owned())
                            .unwrap_or_else(|_| format!("TYPE_{}", cert.r#type)),
                        String::from_utf8_lossy(&cert.certificate).into_owned(),
                    ),
                    None => ("CT_UNKNOWN".to_owned(), String::new()),
                };
                CertificateEntry {
                    certificate_id: c.certificate_id,
                    certificate_type: ty,
                    certificate: pem,
                    endpoints: c
                        .endpoints
                        .into_iter()
                        .map(|e| {
                            let ty = pb::endpoint::Type::try_from(e.r#type)
                                .map(|t| t.as_str_name().to_owned())
                                .unwrap_or_else(|_| format!("TYPE_{}", e.r#type));
                            format!("{ty}:{}", e.endpoint)
                        })
                        .collect(),
                    modification_time_unix_nanos: c.modification_time,
                }
            })
            .collect())
    }

    /// CertificateManagement.CanGenerateCSR.
    pub async fn can_generate_csr(
        &self,
        key_type: KeyType,
        certificate_type: CertificateType,
        key_size: u32,
    ) -> Result<bool, ClientError> {
        if !(1024..=8192).contains(&key_size) {
            return Err(ClientError::InvalidRequest(format!(
                "keySize {key_size} is out of range 1024-8192"
            )));
        }
        let d = self.settings().timeouts.control;
        let r = self
            .unary(
                rpcs::CERT_CAN_GENERATE_CSR,
                d,
                pb::CanGenerateCsrRequest {
                    key_type: key_type as i32,
                    certificate_type: certificate_type as i32,
                    key_size,
                },
                |ch, req| async move { client(ch).can_generate_csr(req).await },
            )
            .await?;
        Ok(r.can_generate)
    }
}
