//! `gnoi.certificate.CertificateManagement`: GetCertificates,
//! CanGenerateCSR, Install, Rotate, LoadCertificate, RevokeCertificates.
//! GenerateCSR (unary) and LoadCertificateAuthorityBundle answer
//! UNIMPLEMENTED, as IOS-XE does not list them.
//!
//! Install and Rotate follow cert.proto: an optional `generate_csr` (the
//! device makes an RSA key and answers a PKCS#10 CSR), then one
//! `load_certificate` (with the client's `key_pair`, or the key of the CSR),
//! answered with `load_certificate`. Install needs a new `certificate_id`
//! (ALREADY_EXISTS otherwise), Rotate an existing one (NOT_FOUND); a rotated
//! certificate is in place at once and rolled back unless
//! `finalize_rotation` arrives before the stream ends. The device's RSA keys
//! come from a fixed set (2048, 3072 and 4096 bits, the smallest that meets
//! `min_key_size`): the crypto stack signs with RSA but cannot generate RSA
//! keys, so devices share them. The CSRs are real and verifiable.

use std::net::IpAddr;
use std::sync::Arc;

use cvk_proto::gnoi::cert::{self as pb, certificate_management_server::CertificateManagement};
use futures::StreamExt;
use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData, SanType};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::note;
use crate::device::Device;
use crate::journal::CallNotes;

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

/// The device's RSA keys, by size.
const RSA_KEYS: [(u32, &str); 3] = [
    (2048, include_str!("cert_keys/rsa-2048.pem")),
    (3072, include_str!("cert_keys/rsa-3072.pem")),
    (4096, include_str!("cert_keys/rsa-4096.pem")),
];

#[derive(Clone, Copy, PartialEq)]
enum Flow {
    Install,
    Rotate,
}

/// One client message of Install or Rotate.
enum Step {
    Csr(pb::GenerateCsrRequest),
    Load(pb::LoadCertificateRequest),
    Finalize,
}

/// One answer of Install or Rotate.
enum Answer {
    Csr(pb::GenerateCsrResponse),
    Loaded,
}

/// Runs an Install or Rotate stream; answers go to `tx`.
async fn cert_flow<S>(
    dev: Arc<Device>,
    flow: Flow,
    mut steps: S,
    tx: mpsc::Sender<Result<Answer, Status>>,
    notes: Option<CallNotes>,
) where
    S: futures::Stream<Item = Result<Step, Status>> + Unpin,
{
    let note = |k: &str, v: &str| {
        if let Some(n) = &notes {
            n.note(k, v);
        }
    };
    let mut csr: Option<(String, KeyPair)> = None;
    // Rotate: the certificate that a missing finalize_rotation restores.
    let mut loaded: Option<(String, Option<String>)> = None;
    let outcome: Result<(), Status> = async {
        while let Some(step) = steps.next().await {
            match step? {
                Step::Csr(g) => {
                    if csr.is_some() || loaded.is_some() {
                        return Err(Status::failed_precondition(
                            "generate_csr must be the first message, and only one",
                        ));
                    }
                    note("certificate_id", &g.certificate_id);
                    check_id(&dev, flow, &g.certificate_id)?;
                    let (pem, key) = make_csr(g.csr_params.as_ref())?;
                    csr = Some((g.certificate_id, key));
                    let resp = pb::GenerateCsrResponse {
                        csr: Some(pb::Csr {
                            r#type: pb::CertificateType::CtX509 as i32,
                            csr: pem.into_bytes(),
                        }),
                    };
                    if tx.send(Ok(Answer::Csr(resp))).await.is_err() {
                        return Ok(());
                    }
                }
                Step::Load(l) => {
                    if loaded.is_some() {
                        return Err(Status::failed_precondition(
                            "load_certificate was already received on this stream",
                        ));
                    }
                    let id = match (&csr, l.certificate_id.as_str()) {
                        (Some((cid, _)), "") => cid.clone(),
                        (Some((cid, _)), id) if id != cid => {
                            return Err(Status::invalid_argument(format!(
                                "load_certificate.certificate_id {id:?} differs from the generate_csr certificate_id {cid:?}"
                            )));
                        }
                        (Some(_), id) => id.to_string(),
                        (None, id) => {
                            note("certificate_id", id);
                            check_id(&dev, flow, id)?;
                            id.to_string()
                        }
                    };
                    let pem = check_load(&l, csr.as_ref().map(|(_, k)| k))?;
                    let old = dev
                        .certificates()
                        .into_iter()
                        .find(|c| c.id == id)
                        .map(|c| c.pem);
                    if flow == Flow::Install && old.is_some() {
                        return Err(Status::already_exists(format!(
                            "trustpoint {id} already exists (Install adds a new one; Rotate replaces)"
                        )));
                    }
                    if flow == Flow::Rotate && old.is_none() {
                        return Err(Status::not_found(format!("no trustpoint named {id} to rotate")));
                    }
                    dev.put_certificate(&id, pem);
                    loaded = Some((id, old));
                    if tx.send(Ok(Answer::Loaded)).await.is_err() {
                        return Ok(());
                    }
                    if flow == Flow::Install {
                        note("result", "installed");
                        return Ok(());
                    }
                }
                Step::Finalize => {
                    if flow != Flow::Rotate {
                        return Err(Status::invalid_argument("finalize_rotation is for Rotate"));
                    }
                    match loaded.take() {
                        Some(_) => {
                            note("result", "rotated");
                            return Ok(());
                        }
                        None => {
                            return Err(Status::failed_precondition(
                                "finalize_rotation before load_certificate",
                            ))
                        }
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    if flow == Flow::Rotate
        && let Some((id, Some(old))) = loaded
    {
        dev.put_certificate(&id, old);
        note("result", "rolled_back");
    }
    if let Err(e) = outcome {
        let _ = tx.send(Err(e)).await;
    }
}

/// Install needs a new id, Rotate an existing one.
fn check_id(dev: &Device, flow: Flow, id: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("certificate_id is required"));
    }
    let exists = dev.certificates().iter().any(|c| c.id == id);
    match flow {
        Flow::Install if exists => Err(Status::already_exists(format!(
            "trustpoint {id} already exists (Install adds a new one; Rotate replaces)"
        ))),
        Flow::Rotate if !exists => Err(Status::not_found(format!(
            "no trustpoint named {id} to rotate"
        ))),
        _ => Ok(()),
    }
}

/// A CSR (PEM) for `params`, and its key.
fn make_csr(params: Option<&pb::CsrParams>) -> Result<(String, KeyPair), Status> {
    let p =
        params.ok_or_else(|| Status::invalid_argument("generate_csr.csr_params is required"))?;
    if p.r#type != pb::CertificateType::CtX509 as i32 {
        return Err(Status::invalid_argument("csr_params.type must be CT_X509"));
    }
    if p.key_type != pb::KeyType::KtRsa as i32 {
        return Err(Status::invalid_argument(
            "csr_params.key_type must be KT_RSA",
        ));
    }
    let (_, key_pem) = RSA_KEYS
        .iter()
        .find(|(bits, _)| *bits >= p.min_key_size)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "csr_params.min_key_size {} is over 4096",
                p.min_key_size
            ))
        })?;
    let key =
        KeyPair::from_pem(key_pem).map_err(|e| Status::internal(format!("device key: {e}")))?;
    let mut cp = CertificateParams::default();
    for (t, v) in [
        (DnType::CommonName, &p.common_name),
        (DnType::CountryName, &p.country),
        (DnType::StateOrProvinceName, &p.state),
        (DnType::LocalityName, &p.city),
        (DnType::OrganizationName, &p.organization),
        (DnType::OrganizationalUnitName, &p.organizational_unit),
    ] {
        if !v.is_empty() {
            cp.distinguished_name.push(t, v.as_str());
        }
    }
    if !p.ip_address.is_empty() {
        let ip: IpAddr = p.ip_address.parse().map_err(|_| {
            Status::invalid_argument(format!(
                "csr_params.ip_address {:?} is not an IP address",
                p.ip_address
            ))
        })?;
        cp.subject_alt_names.push(SanType::IpAddress(ip));
    }
    if !p.email_id.is_empty() {
        let email =
            p.email_id.as_str().try_into().map_err(|_| {
                Status::invalid_argument("csr_params.email_id is not an IA5 string")
            })?;
        cp.subject_alt_names.push(SanType::Rfc822Name(email));
    }
    let pem = cp
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| Status::internal(format!("CSR: {e}")))?;
    Ok((pem, key))
}

/// Checks a load_certificate: a PEM X.509 certificate whose public key is
/// the client's `key_pair` or the CSR's key; returns the certificate PEM.
fn check_load(l: &pb::LoadCertificateRequest, csr_key: Option<&KeyPair>) -> Result<String, Status> {
    let cert = l
        .certificate
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("load_certificate.certificate is required"))?;
    if cert.r#type != pb::CertificateType::CtX509 as i32 {
        return Err(Status::invalid_argument("certificate.type must be CT_X509"));
    }
    let der = CertificateDer::from_pem_slice(&cert.certificate).map_err(|_| {
        Status::invalid_argument("certificate.certificate must be a PEM X.509 certificate")
    })?;
    let client_key;
    let key = match l.key_pair.as_ref().filter(|k| !k.private_key.is_empty()) {
        Some(kp) => {
            let text = std::str::from_utf8(&kp.private_key)
                .map_err(|_| Status::invalid_argument("key_pair.private_key must be PEM"))?;
            client_key = KeyPair::from_pem(text).map_err(|e| {
                Status::invalid_argument(format!(
                    "key_pair.private_key is not a PKCS#8 PEM key: {e}"
                ))
            })?;
            &client_key
        }
        None => csr_key.ok_or_else(|| {
            Status::invalid_argument("key_pair is required when no generate_csr came first")
        })?,
    };
    let spki = key.subject_public_key_info();
    if !der.windows(spki.len()).any(|w| w == spki.as_slice()) {
        return Err(Status::invalid_argument(
            "the certificate's public key is not the key pair's",
        ));
    }
    for (i, ca) in l.ca_certificates.iter().enumerate() {
        CertificateDer::from_pem_slice(&ca.certificate).map_err(|_| {
            Status::invalid_argument(format!(
                "ca_certificates[{i}] must be a PEM X.509 certificate"
            ))
        })?;
    }
    String::from_utf8(cert.certificate.clone())
        .map_err(|_| Status::invalid_argument("certificate.certificate must be PEM text"))
}

fn answers<T, F>(rx: mpsc::Receiver<Result<Answer, Status>>, f: F) -> Stream<T>
where
    T: Send + 'static,
    F: Fn(Answer) -> T + Send + 'static,
{
    Box::pin(ReceiverStream::new(rx).map(move |r| r.map(&f)))
}

#[tonic::async_trait]
impl CertificateManagement for CertService {
    type RotateStream = Stream<pb::RotateCertificateResponse>;
    type InstallStream = Stream<pb::InstallCertificateResponse>;

    async fn rotate(
        &self,
        req: Request<Streaming<pb::RotateCertificateRequest>>,
    ) -> Result<Response<Self::RotateStream>, Status> {
        use pb::rotate_certificate_request::RotateRequest as R;
        use pb::rotate_certificate_response::RotateResponse as A;
        let notes = super::notes(&req);
        let steps = req.into_inner().map(|m| match m?.rotate_request {
            Some(R::GenerateCsr(g)) => Ok(Step::Csr(g)),
            Some(R::LoadCertificate(l)) => Ok(Step::Load(l)),
            Some(R::FinalizeRotation(_)) => Ok(Step::Finalize),
            None => Err(Status::invalid_argument("empty RotateCertificateRequest")),
        });
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(cert_flow(
            self.dev.clone(),
            Flow::Rotate,
            Box::pin(steps),
            tx,
            notes,
        ));
        Ok(Response::new(answers(rx, |a| {
            pb::RotateCertificateResponse {
                rotate_response: Some(match a {
                    Answer::Csr(c) => A::GeneratedCsr(c),
                    Answer::Loaded => A::LoadCertificate(pb::LoadCertificateResponse {}),
                }),
            }
        })))
    }

    async fn install(
        &self,
        req: Request<Streaming<pb::InstallCertificateRequest>>,
    ) -> Result<Response<Self::InstallStream>, Status> {
        use pb::install_certificate_request::InstallRequest as R;
        use pb::install_certificate_response::InstallResponse as A;
        let notes = super::notes(&req);
        let steps = req.into_inner().map(|m| match m?.install_request {
            Some(R::GenerateCsr(g)) => Ok(Step::Csr(g)),
            Some(R::LoadCertificate(l)) => Ok(Step::Load(l)),
            None => Err(Status::invalid_argument("empty InstallCertificateRequest")),
        });
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(cert_flow(
            self.dev.clone(),
            Flow::Install,
            Box::pin(steps),
            tx,
            notes,
        ));
        Ok(Response::new(answers(rx, |a| {
            pb::InstallCertificateResponse {
                install_response: Some(match a {
                    Answer::Csr(c) => A::GeneratedCsr(c),
                    Answer::Loaded => A::LoadCertificate(pb::LoadCertificateResponse {}),
                }),
            }
        })))
    }

    async fn generate_csr(
        &self,
        _req: Request<pb::GenerateCsrRequest>,
    ) -> Result<Response<pb::GenerateCsrResponse>, Status> {
        Err(Status::unimplemented(
            "GenerateCSR is not supported on IOS-XE: use Install or Rotate with generate_csr",
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
