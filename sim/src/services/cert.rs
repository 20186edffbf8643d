//! `gnoi.certificate.CertificateManagement`: GetCertificates,
//! CanGenerateCSR, LoadCertificate, RevokeCertificates. Install, Rotate and
//! GenerateCSR answer UNIMPLEMENTED (CSR generation would need RSA key
//! generation, which the simulator's crypto stack does not offer).

use std::sync::Arc;

use cvk_proto::gnoi::cert::{self as pb, certificate_management_server::CertificateManagement};
use tonic::{Request, Response, Status, Streaming};

use super::note;
use crate::device::Device;

/// Handler.
pub struct CertService {
    dev: Arc<Device>,
}

impl CertService {
    /// For `dev`.
    pub fn new(dev: Arc<Device>) -> Self {
        Self { dev }
    }
}

type Stream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl CertificateManagement for CertService {
    type RotateStream = Stream<pb::RotateCertificateResponse>;
    type InstallStream = Stream<pb::InstallCertificateResponse>;

    async fn rotate(
        &self,
        _req: Request<Streaming<pb::RotateCertificateRequest>>,
    ) -> Result<Response<Self::RotateStream>, Status> {
        Err(Status::unimplemented(
            "Rotate is not implemented by the simulator",
        ))
    }

    async fn install(
        &self,
        _req: Request<Streaming<pb::InstallCertificateRequest>>,
    ) -> Result<Response<Self::InstallStream>, Status> {
        Err(Status::unimplemented(
            "Install is not implemented by the simulator",
        ))
    }

    async fn generate_csr(
        &self,
        _req: Request<pb::GenerateCsrRequest>,
    ) -> Result<Response<pb::GenerateCsrResponse>, Status> {
        Err(Status::unimplemented(
            "GenerateCSR is not implemented by the simulator",
        ))
    }

    async fn load_certificate(
        &self,
        req: Request<pb::LoadCertificateRequest>,
    ) -> Result<Response<pb::LoadCertificateResponse>, Status> {
        let r = req.get_ref();
        note(&req, "certificate_id", &r.certificate_id);
        if r.certificate_id.is_empty() {
            return Err(Status::invalid_argument("certificate_id is required"));
        }
        let cert = r
            .certificate
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("certificate is required"))?;
        let text = String::from_utf8(cert.certificate.clone())
            .ok()
            .filter(|t| t.contains("-----BEGIN CERTIFICATE-----"))
            .ok_or_else(|| Status::invalid_argument("certificate must be PEM"))?;
        self.dev.put_certificate(&r.certificate_id, text);
        Ok(Response::new(pb::LoadCertificateResponse {}))
    }

    async fn load_certificate_authority_bundle(
        &self,
        _req: Request<pb::LoadCertificateAuthorityBundleRequest>,
    ) -> Result<Response<pb::LoadCertificateAuthorityBundleResponse>, Status> {
        Err(Status::unimplemented(
            "LoadCertificateAuthorityBundle is not supported on IOS-XE",
        ))
    }

    async fn get_certificates(
        &self,
        _req: Request<pb::GetCertificatesRequest>,
    ) -> Result<Response<pb::GetCertificatesResponse>, Status> {
        let certificate_info = self
            .dev
            .certificates()
            .into_iter()
            .map(|c| pb::CertificateInfo {
                certificate_id: c.id,
                certificate: Some(pb::Certificate {
                    r#type: pb::CertificateType::CtX509 as i32,
                    certificate: c.pem.into_bytes(),
                }),
                endpoints: vec![],
                modification_time: c.modified_ns as i64,
            })
            .collect();
        Ok(Response::new(pb::GetCertificatesResponse {
            certificate_info,
        }))
    }

    async fn revoke_certificates(
        &self,
        req: Request<pb::RevokeCertificatesRequest>,
    ) -> Result<Response<pb::RevokeCertificatesResponse>, Status> {
        note(
            &req,
            "certificate_id",
            req.get_ref().certificate_id.join(","),
        );
        let (ok, missing) = self.dev.revoke_certificates(&req.get_ref().certificate_id);
        Ok(Response::new(pb::RevokeCertificatesResponse {
            revoked_certificate_id: ok,
            certificate_revocation_error: missing
                .into_iter()
                .map(|id| pb::CertificateRevocationError {
                    error_message: format!("no trustpoint named {id}"),
                    certificate_id: id,
                })
                .collect(),
        }))
    }

    async fn can_generate_csr(
        &self,
        req: Request<pb::CanGenerateCsrRequest>,
    ) -> Result<Response<pb::CanGenerateCsrResponse>, Status> {
        let r = req.get_ref();
        let can = r.key_type == pb::KeyType::KtRsa as i32
            && r.certificate_type == pb::CertificateType::CtX509 as i32
            && [2048, 3072, 4096].contains(&r.key_size);
        Ok(Response::new(pb::CanGenerateCsrResponse {
            can_generate: can,
        }))
    }
}
