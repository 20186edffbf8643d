//! Test support for the device client tests: a small in-process gNOI/gNMI
//! device over real loopback sockets, a TCP proxy in front of it (counts
//! connections, can cut them all, as an IOS-XE reload does), a request
//! recorder, and rcgen certificates.
//!
//! Only the behaviour the client tests need is implemented; services left
//! out of a device answer UNIMPLEMENTED (tonic's router does that for
//! unknown services), as IOS-XE 17.14 does for System and File.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cvk_controller::client::{
    ClientMetrics, ClientPool, DeviceTarget, GnoiSettings, Timeouts, Transport,
};
use cvk_proto::gnmi;
use cvk_proto::gnoi::{factory_reset as fr, file, os, system, types};
use futures::Stream;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

pub const VERSION: &str = "17.18.02.0.4112.1766116039";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// One request the device saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub grpc_timeout: Option<String>,
}

/// Cuts every proxied connection when told to.
#[derive(Clone)]
pub struct Killer(Arc<watch::Sender<u64>>);

impl Killer {
    pub fn kill_all(&self) {
        self.0.send_modify(|g| *g += 1);
    }
}

/// TCP proxy in front of a device.
pub struct Proxy {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    pub killer: Killer,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = watch::channel(0u64);
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let mut kill = rx.clone();
                kill.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = kill.changed() => {}
                    }
                    // Dropping both sockets closes the connection on both
                    // sides, as a switch that starts to reload does.
                });
            }
        });
        Proxy {
            addr,
            accepted,
            killer: Killer(Arc::new(tx)),
        }
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InstallMode {
    #[default]
    Normal,
    AlreadyValidated,
    TooLarge,
    IntegrityFailAfterEnd,
    /// Cut every connection once this many content bytes arrived.
    KillAfter(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActivateMode {
    #[default]
    Ok,
    NonExistent,
    CloseConnection,
}

/// What the fake device does and what it saw.
#[derive(Default)]
pub struct DeviceState {
    pub time_delay: Option<Duration>,
    pub install: InstallMode,
    pub activate: ActivateMode,
    pub files: HashMap<String, Vec<u8>>,
    pub get_hash_method: Option<types::hash_type::HashMethod>,
    pub corrupt_get_hash: bool,
    pub install_chunks: Vec<usize>,
    pub install_bytes: u64,
    pub install_sha256: Option<String>,
    pub install_request: Option<os::TransferRequest>,
    pub install_ended_without_end: bool,
    pub put_discarded: Vec<String>,
    pub put_permissions: Vec<u32>,
    pub reboots: Vec<system::RebootRequest>,
    pub activations: Vec<os::ActivateRequest>,
    pub running_version: String,
}

#[derive(Clone)]
pub struct Device {
    pub state: Arc<Mutex<DeviceState>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    killer: Arc<Mutex<Option<Killer>>>,
}

impl Device {
    pub fn new() -> Self {
        Device {
            state: Arc::new(Mutex::new(DeviceState {
                running_version: "17.15.01.0.100".into(),
                ..Default::default()
            })),
            seen: Arc::new(Mutex::new(Vec::new())),
            killer: Arc::new(Mutex::new(None)),
        }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut DeviceState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// Requests seen for a full method path, e.g. `/gnoi.system.System/Time`.
    pub fn calls(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .count()
    }

    pub fn last_seen(&self) -> Option<Seen> {
        self.seen.lock().unwrap().last().cloned()
    }

    fn kill(&self) {
        if let Some(k) = self.killer.lock().unwrap().as_ref() {
            k.kill_all();
        }
    }
}

/// Which services the device serves.
#[derive(Debug, Clone, Copy)]
pub struct Services {
    pub system: bool,
    pub file: bool,
    pub os: bool,
    pub factory_reset: bool,
    pub gnmi: bool,
}

impl Services {
    /// Everything this fake implements (like the 17.18 profile).
    pub const FULL: Services = Services {
        system: true,
        file: true,
        os: true,
        factory_reset: true,
        gnmi: true,
    };
    /// OS, factory reset and gNMI only (like the 17.14 profile: System and
    /// File answer UNIMPLEMENTED).
    pub const IOSXE_17_14: Services = Services {
        system: false,
        file: false,
        os: true,
        factory_reset: true,
        gnmi: true,
    };
}

/// TLS material generated with rcgen.
pub struct Pki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl Pki {
    /// A CA, a server certificate for `localhost`/127.0.0.1 and a client
    /// certificate, all signed by the CA.
    pub fn generate() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cvk test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let server_cert =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap()
                .signed_by(&server_key, &issuer)
                .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(vec!["cvk-controller".to_owned()]).unwrap();
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }
}

/// Server-side TLS options.
pub enum ServerTls<'a> {
    None,
    Tls(&'a Pki),
    MutualTls(&'a Pki),
}

/// A running fake device behind a proxy.
pub struct Running {
    pub device: Device,
    pub proxy: Proxy,
    /// The server's own address (not proxied).
    pub direct: SocketAddr,
}

impl Running {
    /// A target pointing at the proxy.
    pub fn target(&self, name: &str) -> DeviceTarget {
        DeviceTarget {
            port: Some(self.proxy.addr.port()),
            transport: Transport::Insecure,
            ..DeviceTarget::new(name, "127.0.0.1")
        }
    }
}

pub async fn start(services: Services, tls: ServerTls<'_>) -> Running {
    start_device(Device::new(), services, tls).await
}

pub async fn start_device(device: Device, services: Services, tls: ServerTls<'_>) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let direct = listener.local_addr().unwrap();
    let seen = device.seen.clone();
    let recorder =
        tower::util::MapRequestLayer::new(move |req: http::Request<tonic::body::Body>| {
            let h = req.headers();
            let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
            seen.lock().unwrap().push(Seen {
                path: req.uri().path().to_owned(),
                username: get("username"),
                password: get("password"),
                grpc_timeout: get("grpc-timeout"),
            });
            req
        });
    let mut builder = Server::builder();
    builder = match tls {
        ServerTls::None => builder,
        ServerTls::Tls(p) => builder
            .tls_config(
                ServerTlsConfig::new()
                    .identity(Identity::from_pem(&p.server_cert_pem, &p.server_key_pem)),
            )
            .unwrap(),
        ServerTls::MutualTls(p) => builder
            .tls_config(
                ServerTlsConfig::new()
                    .identity(Identity::from_pem(&p.server_cert_pem, &p.server_key_pem))
                    .client_ca_root(Certificate::from_pem(&p.ca_pem)),
            )
            .unwrap(),
    };
    let mut router = builder.layer(recorder).add_optional_service(
        services
            .system
            .then(|| system::system_server::SystemServer::new(device.clone())),
    );
    router = router
        .add_optional_service(services.file.then(|| {
            file::file_server::FileServer::new(device.clone())
                .max_decoding_message_size(8 * 1024 * 1024)
        }))
        .add_optional_service(services.os.then(|| {
            os::os_server::OsServer::new(device.clone()).max_decoding_message_size(8 * 1024 * 1024)
        }))
        .add_optional_service(
            services
                .factory_reset
                .then(|| fr::factory_reset_server::FactoryResetServer::new(device.clone())),
        )
        .add_optional_service(
            services
                .gnmi
                .then(|| gnmi::g_nmi_server::GNmiServer::new(device.clone())),
        );
    tokio::spawn(async move {
        let _ = router
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let proxy = Proxy::start(direct).await;
    *device.killer.lock().unwrap() = Some(proxy.killer.clone());
    Running {
        device,
        proxy,
        direct,
    }
}

/// Short timeouts so failing tests fail fast.
pub fn fast_settings() -> GnoiSettings {
    GnoiSettings {
        insecure: true,
        capability_ttl: Duration::from_secs(600),
        timeouts: Timeouts {
            control: Duration::from_secs(5),
            activate: Duration::from_secs(5),
            stream_idle: Duration::from_secs(5),
            install_validation: Duration::from_secs(10),
            connect: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
        },
        ..Default::default()
    }
}

pub fn pool(settings: GnoiSettings) -> ClientPool {
    ClientPool::new(settings, ClientMetrics::default())
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[tonic::async_trait]
impl system::system_server::System for Device {
    type PingStream = BoxStream<system::PingResponse>;
    type TracerouteStream = BoxStream<system::TracerouteResponse>;

    async fn ping(
        &self,
        req: Request<system::PingRequest>,
    ) -> Result<Response<Self::PingStream>, Status> {
        let r = req.into_inner();
        let count = if r.count == 0 { 5 } else { r.count };
        let mut out: Vec<Result<system::PingResponse, Status>> = (1..=count)
            .map(|i| {
                Ok(system::PingResponse {
                    source: r.destination.clone(),
                    time: 1_000_000 * i64::from(i),
                    bytes: 64,
                    sequence: i,
                    ttl: 64,
                    ..Default::default()
                })
            })
            .collect();
        out.push(Ok(system::PingResponse {
            source: r.destination.clone(),
            time: 5_000_000,
            sent: count,
            received: count,
            min_time: 1_000_000,
            avg_time: 2_000_000,
            max_time: 3_000_000,
            ..Default::default()
        }));
        Ok(Response::new(Box::pin(futures::stream::iter(out))))
    }

    async fn traceroute(
        &self,
        req: Request<system::TracerouteRequest>,
    ) -> Result<Response<Self::TracerouteStream>, Status> {
        let r = req.into_inner();
        let mut out = vec![Ok(system::TracerouteResponse {
            destination_name: r.destination.clone(),
            destination_address: "192.0.2.9".into(),
            hops: r.max_ttl,
            packet_size: 60,
            ..Default::default()
        })];
        for hop in 1..=3 {
            out.push(Ok(system::TracerouteResponse {
                hop,
                address: format!("192.0.2.{hop}"),
                rtt: 1000 * i64::from(hop),
                ..Default::default()
            }));
        }
        Ok(Response::new(Box::pin(futures::stream::iter(out))))
    }

    async fn time(
        &self,
        _req: Request<system::TimeRequest>,
    ) -> Result<Response<system::TimeResponse>, Status> {
        if let Some(d) = self.with(|s| s.time_delay) {
            tokio::time::sleep(d).await;
        }
        Ok(Response::new(system::TimeResponse {
            time: 1_764_000_000_000_000_000,
        }))
    }

    async fn set_package(
        &self,
        _req: Request<Streaming<system::SetPackageRequest>>,
    ) -> Result<Response<system::SetPackageResponse>, Status> {
        Err(Status::unimplemented("SetPackage"))
    }

    async fn switch_control_processor(
        &self,
        _req: Request<system::SwitchControlProcessorRequest>,
    ) -> Result<Response<system::SwitchControlProcessorResponse>, Status> {
        Err(Status::unimplemented("SwitchControlProcessor"))
    }

    async fn reboot(
        &self,
        req: Request<system::RebootRequest>,
    ) -> Result<Response<system::RebootResponse>, Status> {
        self.with(|s| s.reboots.push(req.into_inner()));
        Ok(Response::new(system::RebootResponse {}))
    }

    async fn reboot_status(
        &self,
        _req: Request<system::RebootStatusRequest>,
    ) -> Result<Response<system::RebootStatusResponse>, Status> {
        let pending = self.with(|s| s.reboots.last().cloned());
        Ok(Response::new(system::RebootStatusResponse {
            active: pending.is_some(),
            wait: pending.as_ref().map(|r| r.delay).unwrap_or(0),
            reason: pending.map(|r| r.message).unwrap_or_default(),
            count: 1,
            method: system::RebootMethod::Cold as i32,
            ..Default::default()
        }))
    }

    async fn cancel_reboot(
        &self,
        _req: Request<system::CancelRebootRequest>,
    ) -> Result<Response<system::CancelRebootResponse>, Status> {
        self.with(|s| s.reboots.clear());
        Ok(Response::new(system::CancelRebootResponse {}))
    }

    async fn kill_process(
        &self,
        req: Request<system::KillProcessRequest>,
    ) -> Result<Response<system::KillProcessResponse>, Status> {
        let r = req.into_inner();
        if r.name == "nosuch" {
            return Err(Status::not_found("no process nosuch"));
        }
        Ok(Response::new(system::KillProcessResponse {}))
    }
}

#[tonic::async_trait]
impl file::file_server::File for Device {
    type GetStream = BoxStream<file::GetResponse>;

    async fn get(
        &self,
        req: Request<file::GetRequest>,
    ) -> Result<Response<Self::GetStream>, Status> {
        let path = req.into_inner().remote_file;
        let (data, method, corrupt) = self.with(|s| {
            (
                s.files.get(&path).cloned(),
                s.get_hash_method,
                s.corrupt_get_hash,
            )
        });
        let data = data.ok_or_else(|| Status::not_found(format!("{path}: no such file")))?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for c in data.chunks(64 * 1024) {
                let msg = file::GetResponse {
                    response: Some(file::get_response::Response::Contents(
                        bytes::Bytes::copy_from_slice(c),
                    )),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            if let Some(m) = method {
                use types::hash_type::HashMethod;
                let mut hash = match m {
                    HashMethod::Md5 => {
                        use md5::Digest as _;
                        md5::Md5::digest(&data).to_vec()
                    }
                    _ => Sha256::digest(&data).to_vec(),
                };
                if corrupt {
                    hash[0] ^= 0xff;
                }
                let _ = tx
                    .send(Ok(file::GetResponse {
                        response: Some(file::get_response::Response::Hash(types::HashType {
                            method: m as i32,
                            hash,
                        })),
                    }))
                    .await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn transfer_to_remote(
        &self,
        _req: Request<file::TransferToRemoteRequest>,
    ) -> Result<Response<file::TransferToRemoteResponse>, Status> {
        Err(Status::unimplemented("TransferToRemote"))
    }

    async fn put(
        &self,
        req: Request<Streaming<file::PutRequest>>,
    ) -> Result<Response<file::PutResponse>, Status> {
        use file::put_request::Request as R;
        let mut inbound = req.into_inner();
        let Some(file::PutRequest {
            request: Some(R::Open(open)),
        }) = inbound.message().await?
        else {
            return Err(Status::invalid_argument("first message must be open"));
        };
        let mut data = Vec::new();
        loop {
            match inbound.message().await? {
                Some(file::PutRequest {
                    request: Some(R::Contents(c)),
                }) => {
                    if c.len() > 64 * 1024 {
                        return Err(Status::invalid_argument("content message over 64 KiB"));
                    }
                    data.extend_from_slice(&c)
                }
                Some(file::PutRequest {
                    request: Some(R::Hash(h)),
                }) => {
                    if h.method != types::hash_type::HashMethod::Sha256 as i32
                        || h.hash != Sha256::digest(&data).to_vec()
                    {
                        return Err(Status::data_loss("hash mismatch"));
                    }
                    self.with(|s| {
                        s.put_permissions.push(open.permissions);
                        s.files.insert(open.remote_file.clone(), data)
                    });
                    return Ok(Response::new(file::PutResponse {}));
                }
                _ => {
                    self.with(|s| s.put_discarded.push(open.remote_file.clone()));
                    return Err(Status::invalid_argument("stream ended without hash"));
                }
            }
        }
    }

    async fn stat(
        &self,
        req: Request<file::StatRequest>,
    ) -> Result<Response<file::StatResponse>, Status> {
        let path = req.into_inner().path;
        let size = self
            .with(|s| s.files.get(&path).map(|d| d.len() as u64))
            .ok_or_else(|| Status::not_found(format!("{path}: no such file")))?;
        Ok(Response::new(file::StatResponse {
            stats: vec![file::StatInfo {
                path,
                last_modified: 1,
                permissions: 644,
                size,
                umask: 22,
            }],
        }))
    }

    async fn remove(
        &self,
        req: Request<file::RemoveRequest>,
    ) -> Result<Response<file::RemoveResponse>, Status> {
        let path = req.into_inner().remote_file;
        self.with(|s| s.files.remove(&path))
            .ok_or_else(|| Status::not_found(format!("{path}: no such file")))?;
        Ok(Response::new(file::RemoveResponse {}))
    }
}

#[tonic::async_trait]
impl os::os_server::Os for Device {
    type InstallStream = BoxStream<os::InstallResponse>;

    async fn install(
        &self,
        req: Request<Streaming<os::InstallRequest>>,
    ) -> Result<Response<Self::InstallStream>, Status> {
        use os::install_request::Request as In;
        use os::install_response::Response as Out;
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let dev = self.clone();
        tokio::spawn(async move {
            let send = |r: Out| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(Ok(os::InstallResponse { response: Some(r) })).await;
                }
            };
            let Ok(Some(os::InstallRequest {
                request: Some(In::TransferRequest(tr)),
            })) = inbound.message().await
            else {
                let _ = tx
                    .send(Err(Status::invalid_argument("expected TransferRequest")))
                    .await;
                return;
            };
            let mode = dev.with(|s| {
                s.install_request = Some(tr.clone());
                s.install
            });
            match mode {
                InstallMode::AlreadyValidated => {
                    return send(Out::Validated(os::Validated {
                        version: tr.version.clone(),
                        description: "already present".into(),
                    }))
                    .await;
                }
                InstallMode::TooLarge => {
                    return send(Out::InstallError(os::InstallError {
                        r#type: os::install_error::Type::TooLarge as i32,
                        detail: "not enough space on flash:".into(),
                    }))
                    .await;
                }
                _ => send(Out::TransferReady(os::TransferReady {})).await,
            }
            let mut hasher = Sha256::new();
            let mut received = 0u64;
            let mut next_ack = 1024 * 1024;
            loop {
                match inbound.message().await {
                    Ok(Some(os::InstallRequest {
                        request: Some(In::TransferContent(c)),
                    })) => {
                        received += c.len() as u64;
                        hasher.update(&c);
                        dev.with(|s| s.install_chunks.push(c.len()));
                        if let InstallMode::KillAfter(n) = mode
                            && received >= n
                        {
                            dev.kill();
                            return;
                        }
                        if received >= next_ack {
                            next_ack += 1024 * 1024;
                            send(Out::TransferProgress(os::TransferProgress {
                                bytes_received: received,
                            }))
                            .await;
                        }
                    }
                    Ok(Some(os::InstallRequest {
                        request: Some(In::TransferEnd(_)),
                    })) => break,
                    Ok(Some(_)) => {
                        let _ = tx
                            .send(Err(Status::invalid_argument("unexpected message")))
                            .await;
                        return;
                    }
                    Ok(None) | Err(_) => {
                        dev.with(|s| s.install_ended_without_end = true);
                        return;
                    }
                }
            }
            dev.with(|s| {
                s.install_bytes = received;
                s.install_sha256 = Some(hex::encode(hasher.clone().finalize()));
            });
            if mode == InstallMode::IntegrityFailAfterEnd {
                send(Out::InstallError(os::InstallError {
                    r#type: os::install_error::Type::IntegrityFail as i32,
                    detail: "image signature check failed".into(),
                }))
                .await;
            } else {
                send(Out::Validated(os::Validated {
                    version: tr.version.clone(),
                    description: format!("{received} bytes"),
                }))
                .await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn activate(
        &self,
        req: Request<os::ActivateRequest>,
    ) -> Result<Response<os::ActivateResponse>, Status> {
        use os::activate_response::Response as Out;
        let r = req.into_inner();
        let mode = self.with(|s| {
            s.activations.push(r.clone());
            s.activate
        });
        match mode {
            ActivateMode::Ok => Ok(Response::new(os::ActivateResponse {
                response: Some(Out::ActivateOk(os::ActivateOk {})),
            })),
            ActivateMode::NonExistent => Ok(Response::new(os::ActivateResponse {
                response: Some(Out::ActivateError(os::ActivateError {
                    r#type: os::activate_error::Type::NonExistentVersion as i32,
                    detail: format!("{} is not installed", r.version),
                })),
            })),
            ActivateMode::CloseConnection => {
                // IOS-XE reloads without answering.
                self.kill();
                std::future::pending().await
            }
        }
    }

    async fn verify(
        &self,
        _req: Request<os::VerifyRequest>,
    ) -> Result<Response<os::VerifyResponse>, Status> {
        Ok(Response::new(os::VerifyResponse {
            version: self.with(|s| s.running_version.clone()),
            ..Default::default()
        }))
    }
}

#[tonic::async_trait]
impl fr::factory_reset_server::FactoryReset for Device {
    async fn start(
        &self,
        req: Request<fr::StartRequest>,
    ) -> Result<Response<fr::StartResponse>, Status> {
        let r = req.into_inner();
        let response = if r.factory_os {
            fr::start_response::Response::ResetError(fr::ResetError {
                factory_os_unsupported: true,
                detail: "factory OS rollback unsupported".into(),
                ..Default::default()
            })
        } else {
            fr::start_response::Response::ResetSuccess(fr::ResetSuccess {})
        };
        Ok(Response::new(fr::StartResponse {
            response: Some(response),
        }))
    }
}

#[tonic::async_trait]
impl gnmi::g_nmi_server::GNmi for Device {
    type SubscribeStream = BoxStream<gnmi::SubscribeResponse>;

    async fn capabilities(
        &self,
        _req: Request<gnmi::CapabilityRequest>,
    ) -> Result<Response<gnmi::CapabilityResponse>, Status> {
        Ok(Response::new(gnmi::CapabilityResponse {
            supported_models: vec![gnmi::ModelData {
                name: "Cisco-IOS-XE-native".into(),
                organization: "Cisco Systems, Inc.".into(),
                version: "2025-03-01".into(),
            }],
            supported_encodings: vec![gnmi::Encoding::JsonIetf as i32],
            g_nmi_version: "0.4.0".into(),
            extension: vec![],
        }))
    }

    async fn get(
        &self,
        req: Request<gnmi::GetRequest>,
    ) -> Result<Response<gnmi::GetResponse>, Status> {
        let r = req.into_inner();
        if r.encoding != gnmi::Encoding::JsonIetf as i32 {
            return Err(Status::invalid_argument("only JSON_IETF"));
        }
        let version = self.with(|s| s.running_version.clone());
        let notification = r
            .path
            .into_iter()
            .map(|p| gnmi::Notification {
                timestamp: 42,
                prefix: None,
                update: vec![gnmi::Update {
                    val: Some(gnmi::TypedValue {
                        value: Some(gnmi::typed_value::Value::JsonIetfVal(
                            serde_json::to_vec(&serde_json::json!({ "version": version })).unwrap(),
                        )),
                    }),
                    path: Some(p),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        Ok(Response::new(gnmi::GetResponse {
            notification,
            ..Default::default()
        }))
    }

    async fn set(
        &self,
        _req: Request<gnmi::SetRequest>,
    ) -> Result<Response<gnmi::SetResponse>, Status> {
        Err(Status::unimplemented("Set"))
    }

    async fn subscribe(
        &self,
        req: Request<Streaming<gnmi::SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let mut inbound = req.into_inner();
        let Some(gnmi::SubscribeRequest {
            request: Some(gnmi::subscribe_request::Request::Subscribe(list)),
            ..
        }) = inbound.message().await?
        else {
            return Err(Status::invalid_argument("expected a SubscriptionList"));
        };
        let mut out = Vec::new();
        for s in list.subscription {
            out.push(Ok(gnmi::SubscribeResponse {
                response: Some(gnmi::subscribe_response::Response::Update(
                    gnmi::Notification {
                        timestamp: 7,
                        update: vec![gnmi::Update {
                            path: s.path,
                            val: Some(gnmi::TypedValue {
                                value: Some(gnmi::typed_value::Value::UintVal(99)),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }));
        }
        out.push(Ok(gnmi::SubscribeResponse {
            response: Some(gnmi::subscribe_response::Response::SyncResponse(true)),
            ..Default::default()
        }));
        Ok(Response::new(Box::pin(futures::stream::iter(out))))
    }
}
