//! Every RPC of every service, asserted by its full HTTP/2 path. The paths are
//! captured from the generated tonic clients talking to a recording transport,
//! so a wrong package, service or method name in a .proto file or in code
//! generation shows up here. The descriptor set is checked to hold exactly
//! these methods with the right streaming shape, and the generated servers to
//! carry the right service names.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use cvk_proto::gnmi::g_nmi_client::GNmiClient;
use cvk_proto::gnoi::cert::certificate_management_client::CertificateManagementClient;
use cvk_proto::gnoi::factory_reset::factory_reset_client::FactoryResetClient;
use cvk_proto::gnoi::file::file_client::FileClient;
use cvk_proto::gnoi::os::os_client::OsClient;
use cvk_proto::gnoi::system::system_client::SystemClient;
use cvk_proto::{gnmi, gnoi};
use prost::Message;
use tonic::server::NamedService;

/// A transport that records the request path and answers UNIMPLEMENTED.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl tower::Service<http::Request<tonic::body::Body>> for Recorder {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        self.0.lock().unwrap().push(req.uri().path().to_owned());
        let resp = http::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "12")
            .body(tonic::body::Body::empty())
            .unwrap();
        std::future::ready(Ok(resp))
    }
}

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn empty<T: Send + 'static>() -> tokio_stream::Iter<std::vec::IntoIter<T>> {
    tokio_stream::iter(Vec::new())
}

const EXPECTED: &[&str] = &[
    "/gnoi.system.System/Ping",
    "/gnoi.system.System/Traceroute",
    "/gnoi.system.System/Time",
    "/gnoi.system.System/SetPackage",
    "/gnoi.system.System/SwitchControlProcessor",
    "/gnoi.system.System/Reboot",
    "/gnoi.system.System/RebootStatus",
    "/gnoi.system.System/CancelReboot",
    "/gnoi.system.System/KillProcess",
    "/gnoi.file.File/Get",
    "/gnoi.file.File/TransferToRemote",
    "/gnoi.file.File/Put",
    "/gnoi.file.File/Stat",
    "/gnoi.file.File/Remove",
    "/gnoi.os.OS/Install",
    "/gnoi.os.OS/Activate",
    "/gnoi.os.OS/Verify",
    "/gnoi.certificate.CertificateManagement/Rotate",
    "/gnoi.certificate.CertificateManagement/Install",
    "/gnoi.certificate.CertificateManagement/GenerateCSR",
    "/gnoi.certificate.CertificateManagement/LoadCertificate",
    "/gnoi.certificate.CertificateManagement/LoadCertificateAuthorityBundle",
    "/gnoi.certificate.CertificateManagement/GetCertificates",
    "/gnoi.certificate.CertificateManagement/RevokeCertificates",
    "/gnoi.certificate.CertificateManagement/CanGenerateCSR",
    "/gnoi.factory_reset.FactoryReset/Start",
    "/gnmi.gNMI/Capabilities",
    "/gnmi.gNMI/Get",
    "/gnmi.gNMI/Set",
    "/gnmi.gNMI/Subscribe",
];

#[tokio::test]
#[allow(deprecated)]
async fn generated_clients_use_openconfig_method_paths() {
    use gnoi::{cert, factory_reset as fr, file, os, system};
    let rec = Recorder::default();

    let mut sys = SystemClient::new(rec.clone());
    let _ = sys.ping(system::PingRequest::default()).await;
    let _ = sys.traceroute(system::TracerouteRequest::default()).await;
    let _ = sys.time(system::TimeRequest::default()).await;
    let _ = sys.set_package(empty::<system::SetPackageRequest>()).await;
    let _ = sys
        .switch_control_processor(system::SwitchControlProcessorRequest::default())
        .await;
    let _ = sys.reboot(system::RebootRequest::default()).await;
    let _ = sys
        .reboot_status(system::RebootStatusRequest::default())
        .await;
    let _ = sys
        .cancel_reboot(system::CancelRebootRequest::default())
        .await;
    let _ = sys
        .kill_process(system::KillProcessRequest::default())
        .await;

    let mut f = FileClient::new(rec.clone());
    let _ = f.get(file::GetRequest::default()).await;
    let _ = f
        .transfer_to_remote(file::TransferToRemoteRequest::default())
        .await;
    let _ = f.put(empty::<file::PutRequest>()).await;
    let _ = f.stat(file::StatRequest::default()).await;
    let _ = f.remove(file::RemoveRequest::default()).await;

    let mut o = OsClient::new(rec.clone());
    let _ = o.install(empty::<os::InstallRequest>()).await;
    let _ = o.activate(os::ActivateRequest::default()).await;
    let _ = o.verify(os::VerifyRequest::default()).await;

    let mut c = CertificateManagementClient::new(rec.clone());
    let _ = c.rotate(empty::<cert::RotateCertificateRequest>()).await;
    let _ = c.install(empty::<cert::InstallCertificateRequest>()).await;
    let _ = c.generate_csr(cert::GenerateCsrRequest::default()).await;
    let _ = c
        .load_certificate(cert::LoadCertificateRequest::default())
        .await;
    let _ = c
        .load_certificate_authority_bundle(cert::LoadCertificateAuthorityBundleRequest::default())
        .await;
    let _ = c
        .get_certificates(cert::GetCertificatesRequest::default())
        .await;
    let _ = c
        .revoke_certificates(cert::RevokeCertificatesRequest::default())
        .await;
    let _ = c
        .can_generate_csr(cert::CanGenerateCsrRequest::default())
        .await;

    let mut r = FactoryResetClient::new(rec.clone());
    let _ = r.start(fr::StartRequest::default()).await;

    let mut g = GNmiClient::new(rec.clone());
    let _ = g.capabilities(gnmi::CapabilityRequest::default()).await;
    let _ = g.get(gnmi::GetRequest::default()).await;
    let _ = g.set(gnmi::SetRequest::default()).await;
    let _ = g.subscribe(empty::<gnmi::SubscribeRequest>()).await;

    assert_eq!(rec.take(), EXPECTED);
}

#[test]
fn generated_servers_carry_openconfig_service_names() {
    use gnmi::g_nmi_server::GNmiServer;
    use gnoi::cert::certificate_management_server::CertificateManagementServer;
    use gnoi::factory_reset::factory_reset_server::FactoryResetServer;
    use gnoi::file::file_server::FileServer;
    use gnoi::os::os_server::OsServer;
    use gnoi::system::system_server::SystemServer;

    fn name<S: NamedService>() -> &'static str {
        S::NAME
    }
    // The generic parameter is irrelevant to the name; any type works.
    struct Never;
    assert_eq!(name::<SystemServer<Never>>(), "gnoi.system.System");
    assert_eq!(name::<FileServer<Never>>(), "gnoi.file.File");
    assert_eq!(name::<OsServer<Never>>(), "gnoi.os.OS");
    assert_eq!(
        name::<CertificateManagementServer<Never>>(),
        "gnoi.certificate.CertificateManagement"
    );
    assert_eq!(
        name::<FactoryResetServer<Never>>(),
        "gnoi.factory_reset.FactoryReset"
    );
    assert_eq!(name::<GNmiServer<Never>>(), "gnmi.gNMI");
}

#[test]
fn descriptor_set_holds_exactly_these_methods_with_their_streaming_shape() {
    let fds = prost_types::FileDescriptorSet::decode(cvk_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut found = Vec::new();
    for file in &fds.file {
        let package = file.package();
        for svc in &file.service {
            for m in &svc.method {
                let shape = match (m.client_streaming(), m.server_streaming()) {
                    (false, false) => "unary",
                    (false, true) => "server-stream",
                    (true, false) => "client-stream",
                    (true, true) => "bidi",
                };
                found.push((format!("/{package}.{}/{}", svc.name(), m.name()), shape));
            }
        }
    }
    let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
    let mut sorted_found = paths.clone();
    sorted_found.sort_unstable();
    let mut sorted_expected = EXPECTED.to_vec();
    sorted_expected.sort_unstable();
    assert_eq!(sorted_found, sorted_expected);

    let shape = |p: &str| found.iter().find(|(x, _)| x == p).unwrap().1;
    assert_eq!(shape("/gnoi.os.OS/Install"), "bidi");
    assert_eq!(shape("/gnoi.file.File/Put"), "client-stream");
    assert_eq!(shape("/gnoi.file.File/Get"), "server-stream");
    assert_eq!(shape("/gnoi.system.System/Ping"), "server-stream");
    assert_eq!(shape("/gnoi.system.System/Traceroute"), "server-stream");
    assert_eq!(shape("/gnoi.system.System/SetPackage"), "client-stream");
    assert_eq!(shape("/gnmi.gNMI/Subscribe"), "bidi");
    assert_eq!(
        shape("/gnoi.certificate.CertificateManagement/Rotate"),
        "bidi"
    );
    assert_eq!(
        shape("/gnoi.certificate.CertificateManagement/Install"),
        "bidi"
    );
    for p in [
        "/gnoi.os.OS/Activate",
        "/gnoi.os.OS/Verify",
        "/gnoi.system.System/Reboot",
        "/gnoi.system.System/Time",
        "/gnoi.factory_reset.FactoryReset/Start",
        "/gnmi.gNMI/Capabilities",
        "/gnmi.gNMI/Get",
    ] {
        assert_eq!(shape(p), "unary", "{p}");
    }
}

#[test]
fn descriptor_set_imports_use_openconfig_paths() {
    let fds = prost_types::FileDescriptorSet::decode(cvk_proto::FILE_DESCRIPTOR_SET).unwrap();
    let os = fds
        .file
        .iter()
        .find(|f| f.package() == "gnoi.os")
        .expect("gnoi.os file");
    assert_eq!(os.name(), "github.com/openconfig/gnoi/os/os.proto");
    assert_eq!(
        os.dependency,
        ["github.com/openconfig/gnoi/types/types.proto"]
    );
    let gnmi = fds.file.iter().find(|f| f.package() == "gnmi").unwrap();
    assert!(
        gnmi.dependency
            .iter()
            .any(|d| d == "github.com/openconfig/gnmi/proto/gnmi_ext/gnmi_ext.proto")
    );
}
