//! One lazily connected HTTP/2 connection per workload class, with bounded
//! exponential backoff on connect failures.
//!
//! tonic reconnects a lazy `Channel` on the next call after the connection
//! drops; left alone it would redial on every call while a switch reloads.
//! The connector below records every TCP connect and failure per class: after
//! `n` consecutive failures the class refuses to dial for
//! `min(initial * 2^(n-1), max)`, and calls during that window fail fast
//! with `Unavailable { retry_after }`. One success resets the count.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use super::error::{ClientError, ConnectFailed};
use super::metrics::ClientMetrics;
use super::settings::{DeviceTarget, GnoiSettings, Timeouts};
use super::{WorkloadClass, tls};

/// Observable connection state of one workload class of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionState {
    /// The class.
    pub class: WorkloadClass,
    /// Successful TCP connects so far (1 while the first connection lives).
    pub connects: u64,
    /// Failed connect attempts so far.
    pub connect_failures: u64,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Time left before the class dials again, if it is backing off.
    pub backoff_remaining: Option<Duration>,
    /// The last connect error.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    connects: u64,
    connect_failures: u64,
    consecutive_failures: u32,
    backoff_until: Option<Instant>,
    last_error: Option<String>,
}

/// Connect bookkeeping of one class.
#[derive(Debug)]
pub(crate) struct ClassState {
    class: WorkloadClass,
    backoff_initial: Duration,
    backoff_max: Duration,
    metrics: ClientMetrics,
    inner: Mutex<Inner>,
}

impl ClassState {
    pub(crate) fn new(class: WorkloadClass, timeouts: &Timeouts, metrics: ClientMetrics) -> Self {
        Self {
            class,
            backoff_initial: timeouts.backoff_initial,
            backoff_max: timeouts.backoff_max.max(timeouts.backoff_initial),
            metrics,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update is a few plain field writes; a poisoned lock holds a
        // consistent enough counter set to keep using.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Time left in the backoff window, if any.
    pub(crate) fn backoff_remaining(&self) -> Option<Duration> {
        let inner = self.lock();
        let until = inner.backoff_until?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    fn connected(&self) {
        let mut inner = self.lock();
        inner.connects += 1;
        inner.consecutive_failures = 0;
        inner.backoff_until = None;
        drop(inner);
        self.metrics.lease_event(self.class, "connect");
    }

    fn failed(&self, message: String) {
        let mut inner = self.lock();
        inner.connect_failures += 1;
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let exp = inner.consecutive_failures.saturating_sub(1).min(20);
        let delay = self
            .backoff_initial
            .saturating_mul(1u32 << exp)
            .min(self.backoff_max);
        inner.backoff_until = Some(Instant::now() + delay);
        inner.last_error = Some(message);
        drop(inner);
        self.metrics.lease_event(self.class, "connect_error");
    }

    pub(crate) fn snapshot(&self) -> ConnectionState {
        let remaining = self.backoff_remaining();
        let inner = self.lock();
        ConnectionState {
            class: self.class,
            connects: inner.connects,
            connect_failures: inner.connect_failures,
            consecutive_failures: inner.consecutive_failures,
            backoff_remaining: remaining,
            last_error: inner.last_error.clone(),
        }
    }
}

/// The TCP half of a class's connector; tonic layers TLS on top for
/// `https` endpoints.
#[derive(Clone)]
struct ClassConnector {
    host: Arc<str>,
    port: u16,
    connect_timeout: Duration,
    state: Arc<ClassState>,
}

type ConnectFuture =
    Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, ConnectFailed>> + Send>>;

impl tower::Service<Uri> for ClassConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectFailed;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (host, port) = (&*this.host, this.port);
            if let Some(left) = this.state.backoff_remaining() {
                this.state.metrics.lease_event(this.state.class, "backoff");
                return Err(ConnectFailed(format!(
                    "{} to {host}:{port} is backing off for {left:?} after connect failures: {}",
                    this.state.class,
                    this.state.last_error().unwrap_or_default()
                )));
            }
            match tokio::time::timeout(this.connect_timeout, TcpStream::connect((host, port))).await
            {
                Ok(Ok(stream)) => {
                    // Small control RPCs must not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    this.state.connected();
                    tracing::debug!(class = %this.state.class, %host, port, "gNOI connection established");
                    Ok(TokioIo::new(stream))
                }
                Ok(Err(e)) => {
                    let msg = format!("TCP connect to {host}:{port} failed: {e}");
                    this.state.failed(msg.clone());
                    Err(ConnectFailed(msg))
                }
                Err(_) => {
                    let msg = format!(
                        "TCP connect to {host}:{port} timed out after {:?}",
                        this.connect_timeout
                    );
                    this.state.failed(msg.clone());
                    Err(ConnectFailed(msg))
                }
            }
        })
    }
}

/// Where and how one device is reached, resolved from target + settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPlan {
    /// Host (IP without brackets, or name).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS or plaintext.
    pub tls: bool,
}

impl EndpointPlan {
    pub(crate) fn resolve(
        target: &DeviceTarget,
        settings: &GnoiSettings,
    ) -> Result<Self, ClientError> {
        let host = target
            .address
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(ClientError::InvalidTarget(format!(
                "device {:?} has an empty address",
                target.name
            )));
        }
        if host.contains(['/', ' ', '@', '?', '#']) {
            return Err(ClientError::InvalidTarget(format!(
                "device {:?} address {:?} is not an IP address or host name",
                target.name, target.address
            )));
        }
        if target.port == Some(0) {
            return Err(ClientError::InvalidTarget(format!(
                "device {:?} port 0 is not a TCP port (1-65535)",
                target.name
            )));
        }
        Ok(Self {
            port: settings.port_for(target),
            tls: settings.uses_tls(target),
            host,
        })
    }

    fn uri(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for EndpointPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let u = self.uri();
        f.write_str(&u)
    }
}

/// Builds the lazily connected channel of one class.
pub(crate) fn build_channel(
    plan: &EndpointPlan,
    target: &DeviceTarget,
    settings: &GnoiSettings,
    class: WorkloadClass,
    state: Arc<ClassState>,
) -> Result<Channel, ClientError> {
    let t = &settings.timeouts;
    let mut ep = Endpoint::from_shared(plan.uri())
        .map_err(|e| {
            ClientError::InvalidTarget(format!(
                "device {:?}: cannot form an endpoint from {:?}: {e}",
                target.name, target.address
            ))
        })?
        .tcp_nodelay(true)
        // Detects a switch that vanished (reload, cable) on idle connections,
        // so the next call redials instead of waiting for TCP to give up.
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(class == WorkloadClass::Telemetry);
    if class == WorkloadClass::BulkTransfer {
        // Room for 4 MiB install chunks without stalling on window updates,
        // and File.Get content in frames of up to 1 MiB instead of 16 KiB.
        ep = ep
            .initial_stream_window_size(8 * 1024 * 1024)
            .initial_connection_window_size(16 * 1024 * 1024)
            .max_frame_size(1024 * 1024);
    }
    if plan.tls {
        ep = configure_tls(ep, plan, target, t.connect)?;
    }
    let connector = ClassConnector {
        host: Arc::from(plan.host.as_str()),
        port: plan.port,
        connect_timeout: t.connect,
        state,
    };
    Ok(ep.connect_with_connector_lazy(connector))
}

fn configure_tls(
    ep: Endpoint,
    plan: &EndpointPlan,
    target: &DeviceTarget,
    handshake_timeout: Duration,
) -> Result<Endpoint, ClientError> {
    let m = &target.tls;
    let mut cfg = ClientTlsConfig::new()
        .timeout(handshake_timeout)
        // Some gNxI stacks skip ALPN; gRPC is HTTP/2 either way.
        .assume_http2(true);
    if let Some(name) = &m.server_name {
        cfg = cfg.domain_name(name.clone());
    }
    match (&m.client_cert_pem, &m.client_key_pem) {
        (Some(cert), Some(key)) => {
            tls::check_pem_certs(cert, "client certificate")?;
            tls::check_pem_key(key)?;
            cfg = cfg.identity(Identity::from_pem(cert, key));
        }
        (None, None) => {}
        _ => {
            return Err(ClientError::InvalidTarget(format!(
                "device {:?}: a client certificate and a client key must be given together for mTLS",
                target.name
            )));
        }
    }
    let tls_err =
        |e: tonic::transport::Error| ClientError::Tls(format!("{}: {}", plan, tls::error_text(&e)));
    if m.insecure_skip_verify {
        tracing::warn!(device = %target.name, "TLS server certificate verification is OFF for this device (insecure_skip_verify)");
        return ep
            .tls_config_with_verifier(cfg, tls::no_verification())
            .map_err(tls_err);
    }
    cfg = match &m.ca_pem {
        Some(ca) => {
            tls::check_pem_certs(ca, "CA bundle")?;
            cfg.ca_certificate(Certificate::from_pem(ca))
        }
        None => cfg.with_native_roots(),
    };
    ep.tls_config(cfg).map_err(tls_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let t = Timeouts {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(350),
            ..Timeouts::default()
        };
        let s = ClassState::new(WorkloadClass::Control, &t, ClientMetrics::default());
        assert_eq!(s.backoff_remaining(), None);
        let mut seen = Vec::new();
        for _ in 0..4 {
            s.failed("x".into());
            seen.push(s.backoff_remaining().unwrap());
        }
        assert!(seen[0] <= Duration::from_millis(100) && seen[0] > Duration::from_millis(50));
        assert!(seen[1] <= Duration::from_millis(200) && seen[1] > Duration::from_millis(150));
        assert!(seen[2] <= Duration::from_millis(350) && seen[2] > Duration::from_millis(300));
        assert!(seen[3] <= Duration::from_millis(350));
        let snap = s.snapshot();
        assert_eq!((snap.connect_failures, snap.consecutive_failures), (4, 4));
        s.connected();
        let snap = s.snapshot();
        assert_eq!(snap.connects, 1);
        assert_eq!(snap.consecutive_failures, 0);
        assert_eq!(snap.backoff_remaining, None);
    }

    #[test]
    fn endpoint_plans() {
        let s = GnoiSettings {
            insecure: true,
            ..Default::default()
        };
        let p = EndpointPlan::resolve(&DeviceTarget::new("d", "::1"), &s).unwrap();
        assert_eq!(p.to_string(), "http://[::1]:50052");
        let p = EndpointPlan::resolve(&DeviceTarget::new("d", "[2001:db8::1]"), &s).unwrap();
        assert_eq!(p.host, "2001:db8::1");
        let p = EndpointPlan::resolve(&DeviceTarget::new("d", "sw1.lab"), &GnoiSettings::default())
            .unwrap();
        assert_eq!(p.to_string(), "https://sw1.lab:9339");
        for bad in ["", "  ", "http://x", "a b"] {
            let e = EndpointPlan::resolve(&DeviceTarget::new("d", bad), &s).unwrap_err();
            assert_eq!(e.category(), "invalid_target", "{bad:?}");
        }
    }
}
