//! One device's gRPC listener.
//!
//! Not tonic's `Server`: a reboot must close the listening socket and cut
//! every open connection at once (no graceful drain), then bind the same
//! address again. So the accept loop is ours, each connection is served by
//! hyper's HTTP/2 server, and each carries a kill token in its requests'
//! extensions ([`ConnCtx`]) that the journal and fault layers use.
//!
//! Request path: journal -> auth -> faults -> tonic routes (profile's services).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tower::{ServiceBuilder, ServiceExt};

pub use crate::rpc::{ConnCtx, GrpcRequest, GrpcResponse};

use crate::auth::AuthLayer;
use crate::device::{Device, Power};
use crate::faults::FaultLayer;
use crate::journal::JournalLayer;

/// HTTP/2 receive window per stream: room for several 1 MiB install chunks
/// in flight, so a client's upload is not paced by window updates (hyper's
/// default is 1 MiB).
pub const H2_STREAM_WINDOW: u32 = 8 * 1024 * 1024;
/// HTTP/2 receive window per connection (two streams' worth).
pub const H2_CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// Largest HTTP/2 frame the simulator accepts: a 1 MiB install chunk
/// arrives in one or two DATA frames instead of 64 (the protocol default
/// is 16 KiB). Measured in `BENCHMARKS.md`: together with the windows it
/// raised OS.Install from 0.42-0.44 to 0.63 of the SHA-256 rate.
pub const H2_MAX_FRAME: u32 = 1024 * 1024;

/// The device's whole service stack.
pub type DeviceService = tower::util::BoxCloneService<GrpcRequest, GrpcResponse, Infallible>;

/// Builds the layered service for a device.
pub fn device_service(
    device: &Arc<Device>,
    reflection: &crate::services::Reflection,
) -> DeviceService {
    let routes = crate::services::routes(device, reflection);
    let svc = ServiceBuilder::new()
        .layer(JournalLayer::new(device.journal().clone(), device.name()))
        .layer(AuthLayer::new(device.credentials().cloned()))
        .layer(FaultLayer::new(device.faults().clone()))
        .service(routes);
    tower::util::BoxCloneService::new(svc)
}

/// Binds `addr` with SO_REUSEADDR (so a reboot can rebind at once).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(1024)
}

/// Serves until the fleet stops, following the device's power state.
pub async fn run(
    device: Arc<Device>,
    first: TcpListener,
    svc: DeviceService,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let addr = first.local_addr().expect("bound listener has an address");
    let shutdown = device.shutdown_token().clone();
    let mut power = device.power_watch();
    let mut listener = Some(first);
    loop {
        let l = match listener.take() {
            Some(l) => l,
            None => {
                tokio::select! {
                    r = power.wait_for(|p| *p == Power::Up) => if r.is_err() { return },
                    _ = shutdown.cancelled() => return,
                }
                match rebind(addr, &shutdown).await {
                    Some(l) => l,
                    None => return,
                }
            }
        };
        let conns = CancellationToken::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => { conns.cancel(); return; }
                r = power.wait_for(|p| *p == Power::Down) => {
                    if r.is_err() { conns.cancel(); return; }
                    break;
                }
                r = l.accept() => {
                    let Ok((tcp, peer)) = r else { continue };
                    let _ = tcp.set_nodelay(true);
                    let ctx = ConnCtx { kill: conns.child_token(), peer };
                    tokio::spawn(serve_conn(tcp, ctx, svc.clone(), tls.clone()));
                }
            }
        }
        // Reboot: stop accepting, then cut every connection.
        drop(l);
        conns.cancel();
    }
}

async fn rebind(addr: SocketAddr, shutdown: &CancellationToken) -> Option<TcpListener> {
    for _ in 0..250 {
        match bind(addr) {
            Ok(l) => return Some(l),
            Err(e) => tracing::debug!(%addr, error = %e, "rebind failed, retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
    tracing::error!(%addr, "could not bind the device address again after 5 s");
    None
}

async fn serve_conn(
    tcp: tokio::net::TcpStream,
    ctx: ConnCtx,
    svc: DeviceService,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    match tls {
        None => serve_io(tcp, ctx, svc).await,
        Some(acc) => {
            let kill = ctx.kill.clone();
            let hs = tokio::time::timeout(Duration::from_secs(10), acc.accept(tcp));
            let io = tokio::select! {
                r = hs => match r { Ok(Ok(io)) => io, _ => return },
                _ = kill.cancelled() => return,
            };
            serve_io(io, ctx, svc).await
        }
    }
}

async fn serve_io<I>(io: I, ctx: ConnCtx, svc: DeviceService)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let kill = ctx.kill.clone();
    let hsvc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let svc = svc.clone();
        let ctx = ctx.clone();
        async move {
            let mut req = req.map(tonic::body::Body::new);
            req.extensions_mut().insert(ctx);
            svc.oneshot(req).await
        }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .max_concurrent_streams(256)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_frame_size(H2_MAX_FRAME);
    let conn = builder.serve_connection(TokioIo::new(io), hsvc);
    tokio::select! {
        _ = conn => {}
        _ = kill.cancelled() => {}
    }
}
