//! Cert.Install and Cert.Rotate over loopback with a tonic client: a CSR
//! from the device signed by a test CA, a client key pair, the errors, and
//! Rotate's rollback without finalize_rotation.
// cert.proto marks every RPC deprecated (in favour of gNSI certz); IOS-XE serves them.
#![allow(deprecated)]

mod common;

use std::time::Duration;

use common::{channel, eventually, fleet};
use cvk_proto::gnoi::cert::{
    self as pb, certificate_management_client::CertificateManagementClient,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer, DnType,
    IsCa, KeyPair,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

type Client = CertificateManagementClient<tonic::transport::Channel>;

fn test_ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "interop test CA");
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn csr_params(min_key_size: u32) -> pb::CsrParams {
    pb::CsrParams {
        r#type: pb::CertificateType::CtX509 as i32,
        min_key_size,
        key_type: pb::KeyType::KtRsa as i32,
        common_name: "sim-0.lab.example".into(),
        organization: "cvk".into(),
        ip_address: "192.0.2.10".into(),
        ..Default::default()
    }
}

fn load(id: &str, cert_pem: &str, key_pem: Option<&str>) -> pb::LoadCertificateRequest {
    pb::LoadCertificateRequest {
        certificate: Some(pb::Certificate {
            r#type: pb::CertificateType::CtX509 as i32,
            certificate: cert_pem.as_bytes().to_vec(),
        }),
        key_pair: key_pem.map(|k| pb::KeyPair {
            private_key: k.as_bytes().to_vec(),
            public_key: vec![],
        }),
        certificate_id: id.into(),
        ca_certificates: vec![],
    }
}

/// A certificate for a fresh client key, signed by `ca`: (cert PEM, key PEM).
fn client_cert(ca: &CertifiedIssuer<'static, KeyPair>, cn: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["sim-0".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    let c = p.signed_by(&key, ca).unwrap();
    (c.pem(), key.serialize_pem())
}

async fn pem_of(c: &mut Client, id: &str) -> Option<String> {
    c.get_certificates(pb::GetCertificatesRequest {})
        .await
        .unwrap()
        .into_inner()
        .certificate_info
        .into_iter()
        .find(|i| i.certificate_id == id)
        .map(|i| String::from_utf8(i.certificate.unwrap().certificate).unwrap())
}

fn install_msg(
    r: pb::install_certificate_request::InstallRequest,
) -> pb::InstallCertificateRequest {
    pb::InstallCertificateRequest {
        install_request: Some(r),
    }
}

fn rotate_msg(r: pb::rotate_certificate_request::RotateRequest) -> pb::RotateCertificateRequest {
    pb::RotateCertificateRequest {
        rotate_request: Some(r),
    }
}

#[tokio::test]
async fn install_with_a_device_csr_signed_by_a_ca() {
    use pb::install_certificate_request::InstallRequest as R;
    use pb::install_certificate_response::InstallResponse as A;
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let mut c = CertificateManagementClient::new(channel(&d).await);
    let ca = test_ca();

    let (tx, rx) = mpsc::channel(4);
    tx.send(install_msg(R::GenerateCsr(pb::GenerateCsrRequest {
        csr_params: Some(csr_params(3072)),
        certificate_id: "gnxi-cert".into(),
    })))
    .await
    .unwrap();
    let mut answers = c
        .install(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let Some(A::GeneratedCsr(g)) = answers.message().await.unwrap().unwrap().install_response
    else {
        panic!("first answer is generated_csr")
    };
    let csr = g.csr.unwrap();
    assert_eq!(csr.r#type, pb::CertificateType::CtX509 as i32);
    let csr_pem = String::from_utf8(csr.csr).unwrap();
    assert!(csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    // A real PKCS#10 request: parsed (signature checked) and signed by our CA.
    let req = CertificateSigningRequestParams::from_pem(&csr_pem).unwrap();
    assert_eq!(
        req.params
            .distinguished_name
            .get(&DnType::CommonName)
            .map(|v| format!("{v:?}")),
        Some(format!(
            "{:?}",
            rcgen::DnValue::Utf8String("sim-0.lab.example".into())
        ))
    );
    let signed = req.signed_by(&ca).unwrap().pem();

    tx.send(install_msg(R::LoadCertificate(load("", &signed, None))))
        .await
        .unwrap();
    let m = answers.message().await.unwrap().unwrap();
    assert!(matches!(m.install_response, Some(A::LoadCertificate(_))));
    assert!(answers.message().await.unwrap().is_none(), "stream ends");
    assert_eq!(
        pem_of(&mut c, "gnxi-cert").await.as_deref(),
        Some(signed.as_str())
    );
    let j = d.journal_for("/gnoi.certificate.CertificateManagement/Install");
    assert_eq!(j[0].fields.get("certificate_id").unwrap(), "gnxi-cert");
    assert_eq!(j[0].fields.get("result").unwrap(), "installed");

    // Install is for new ids only.
    let (cert, key) = client_cert(&ca, "again");
    let e = install_once(&mut c, load("gnxi-cert", &cert, Some(&key))).await;
    assert_eq!(e.unwrap_err().code(), Code::AlreadyExists);
    f.shutdown().await;
}

/// One load_certificate on an Install stream; the first answer or error.
async fn install_once(
    c: &mut Client,
    l: pb::LoadCertificateRequest,
) -> Result<pb::InstallCertificateResponse, tonic::Status> {
    let msgs = vec![install_msg(
        pb::install_certificate_request::InstallRequest::LoadCertificate(l),
    )];
    let mut s = c.install(tokio_stream::iter(msgs)).await?.into_inner();
    s.message()
        .await?
        .ok_or_else(|| tonic::Status::unknown("no answer"))
}

#[tokio::test]
async fn install_refuses_bad_requests_with_the_field_named() {
    use pb::install_certificate_request::InstallRequest as R;
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let mut c = CertificateManagementClient::new(channel(&d).await);
    let ca = test_ca();

    // A client key pair and its certificate: accepted.
    let (cert, key) = client_cert(&ca, "client-made");
    install_once(&mut c, load("client-tp", &cert, Some(&key)))
        .await
        .unwrap();
    assert_eq!(
        pem_of(&mut c, "client-tp").await.as_deref(),
        Some(cert.as_str())
    );

    let (other_cert, _) = client_cert(&ca, "other");
    for (l, code, text) in [
        (
            load("x1", &other_cert, Some(&key)),
            Code::InvalidArgument,
            "not the key pair's",
        ),
        (
            load("x2", &cert, None),
            Code::InvalidArgument,
            "key_pair is required",
        ),
        (
            load("", &cert, Some(&key)),
            Code::InvalidArgument,
            "certificate_id is required",
        ),
        (
            load("x3", "not pem", Some(&key)),
            Code::InvalidArgument,
            "certificate.certificate",
        ),
        (
            load("x4", &cert, Some("junk")),
            Code::InvalidArgument,
            "key_pair.private_key",
        ),
    ] {
        let e = install_once(&mut c, l).await.unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().contains(text), "{e:?}");
    }
    assert_eq!(pem_of(&mut c, "x1").await, None);

    for (p, text) in [
        (csr_params(8192), "min_key_size"),
        (
            pb::CsrParams {
                key_type: pb::KeyType::KtUnknown as i32,
                ..csr_params(2048)
            },
            "key_type",
        ),
        (
            pb::CsrParams {
                ip_address: "not-an-ip".into(),
                ..csr_params(2048)
            },
            "ip_address",
        ),
    ] {
        let msgs = vec![install_msg(R::GenerateCsr(pb::GenerateCsrRequest {
            csr_params: Some(p),
            certificate_id: "y".into(),
        }))];
        let mut s = c
            .install(tokio_stream::iter(msgs))
            .await
            .unwrap()
            .into_inner();
        let e = s.message().await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(text), "{e:?}");
    }

    // GenerateCSR alone is not an IOS-XE RPC.
    let e = c
        .generate_csr(pb::GenerateCsrRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(e.message().contains("use Install or Rotate"), "{e:?}");
    f.shutdown().await;
}

#[tokio::test]
async fn rotate_rolls_back_without_finalize_and_keeps_with_it() {
    use pb::rotate_certificate_request::RotateRequest as R;
    use pb::rotate_certificate_response::RotateResponse as A;
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let mut c = CertificateManagementClient::new(channel(&d).await);
    let ca = test_ca();
    let tp = d.snapshot().certificates[0].clone();
    let old = pem_of(&mut c, &tp).await.unwrap();

    // Unknown trustpoint.
    let (cert, key) = client_cert(&ca, "rotated");
    let msgs = vec![rotate_msg(R::LoadCertificate(load(
        "nope",
        &cert,
        Some(&key),
    )))];
    let mut s = c
        .rotate(tokio_stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.message().await.unwrap_err().code(), Code::NotFound);

    // Loaded, in place while the stream is open, rolled back when it closes.
    let (tx, rx) = mpsc::channel(4);
    tx.send(rotate_msg(R::LoadCertificate(load(&tp, &cert, Some(&key)))))
        .await
        .unwrap();
    let mut s = c
        .rotate(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let m = s.message().await.unwrap().unwrap();
    assert!(matches!(m.rotate_response, Some(A::LoadCertificate(_))));
    assert_eq!(pem_of(&mut c, &tp).await.as_deref(), Some(cert.as_str()));
    drop(tx);
    assert!(s.message().await.unwrap().is_none());
    let mut c2 = c.clone();
    let tp2 = tp.clone();
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut c = c2.clone();
            let tp = tp2.clone();
            let old = old.clone();
            async move { pem_of(&mut c, &tp).await == Some(old) }
        })
        .await,
        "rolled back"
    );
    let j = d.journal_for("/gnoi.certificate.CertificateManagement/Rotate");
    assert_eq!(
        j.last().unwrap().fields.get("result").unwrap(),
        "rolled_back"
    );

    // With a device CSR and finalize_rotation: kept.
    let (tx, rx) = mpsc::channel(4);
    tx.send(rotate_msg(R::GenerateCsr(pb::GenerateCsrRequest {
        csr_params: Some(csr_params(2048)),
        certificate_id: tp.clone(),
    })))
    .await
    .unwrap();
    let mut s = c2
        .rotate(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let Some(A::GeneratedCsr(g)) = s.message().await.unwrap().unwrap().rotate_response else {
        panic!("generated_csr first")
    };
    let csr = String::from_utf8(g.csr.unwrap().csr).unwrap();
    let signed = CertificateSigningRequestParams::from_pem(&csr)
        .unwrap()
        .signed_by(&ca)
        .unwrap()
        .pem();
    tx.send(rotate_msg(R::LoadCertificate(load(&tp, &signed, None))))
        .await
        .unwrap();
    assert!(matches!(
        s.message().await.unwrap().unwrap().rotate_response,
        Some(A::LoadCertificate(_))
    ));
    tx.send(rotate_msg(R::FinalizeRotation(pb::FinalizeRequest {})))
        .await
        .unwrap();
    assert!(s.message().await.unwrap().is_none());
    drop(tx);
    assert_eq!(pem_of(&mut c2, &tp).await.as_deref(), Some(signed.as_str()));
    let j = d.journal_for("/gnoi.certificate.CertificateManagement/Rotate");
    assert_eq!(j.last().unwrap().fields.get("result").unwrap(), "rotated");
    f.shutdown().await;
}
