//! Fault injection.
//!
//! RPC faults live in a tower layer keyed by the full gRPC method name
//! (`/gnoi.os.OS/Activate`); the services never see them. Device faults
//! (slow or endless reboot, boot of the old image, corrupted image, flash
//! full, clock skew) are read by the device model at the moment they apply.
//! Every fault is persistent unless `once: true`, which removes it after its
//! first use.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Body as HttpBody, Frame};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::rpc::{ConnCtx, GrpcRequest, GrpcResponse};

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// RPC: answer UNIMPLEMENTED.
    Unimplemented,
    /// RPC: answer this status code (name such as `unavailable` or number).
    Status {
        /// gRPC code.
        code: String,
        /// Status message.
        #[serde(default)]
        message: String,
    },
    /// RPC: wait before handling.
    Latency {
        /// Milliseconds.
        ms: u64,
    },
    /// RPC: close the connection once the call has moved `after_bytes`
    /// HTTP/2 DATA bytes (both directions, gRPC framing included), or on each
    /// DATA frame with `probability` (seeded, reproducible).
    Cut {
        /// Byte budget before the cut.
        #[serde(default)]
        after_bytes: Option<u64>,
        /// Chance per DATA frame, 0..=1.
        #[serde(default)]
        probability: Option<f64>,
        /// Seed for `probability`.
        #[serde(default)]
        seed: u64,
    },
    /// RPC: stop reading and writing the call after `after_bytes` DATA bytes;
    /// the client sees a stream that hangs until its deadline.
    Stall {
        /// Bytes that pass before the stall.
        #[serde(default)]
        after_bytes: u64,
    },
    /// Device: reboots take this long instead of the profile's time.
    SlowReboot {
        /// Milliseconds.
        ms: u64,
    },
    /// Device: a reboot does not finish until this fault is cleared.
    EndlessReboot,
    /// Device: the boot after an activation comes back on the old image,
    /// and Verify reports `activation_fail_message`.
    BootOldImage {
        /// Message for Verify (a default names both versions).
        #[serde(default)]
        message: Option<String>,
    },
    /// Device: the next image written by OS.Install is corrupted on flash
    /// (INTEGRITY_FAIL); with `version`, an already staged image is
    /// corrupted (its activation fails to boot).
    CorruptImage {
        /// Staged version to corrupt.
        #[serde(default)]
        version: Option<String>,
    },
    /// Device: flash: reports no free space.
    FlashFull,
    /// Device: the clock is off by this much.
    ClockSkew {
        /// Milliseconds, may be negative.
        ms: i64,
    },
}

impl FaultKind {
    /// Acts on RPCs (needs a method) rather than on the device.
    pub fn is_rpc(&self) -> bool {
        matches!(
            self,
            FaultKind::Unimplemented
                | FaultKind::Status { .. }
                | FaultKind::Latency { .. }
                | FaultKind::Cut { .. }
                | FaultKind::Stall { .. }
        )
    }
}

/// A fault to inject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultSpec {
    /// Device name; none means every device (fleet-level injection only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// RPC faults: `/gnoi.os.OS/Activate`, `/gnoi.system.System/*`,
    /// `gnoi.system.System` (whole service) or `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// What happens.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Removed after its first use.
    #[serde(default)]
    pub once: bool,
}

impl FaultSpec {
    /// A persistent RPC fault on `method`.
    pub fn rpc(method: impl Into<String>, kind: FaultKind) -> Self {
        Self {
            device: None,
            method: Some(method.into()),
            kind,
            once: false,
        }
    }

    /// A persistent device fault.
    pub fn device(kind: FaultKind) -> Self {
        Self {
            device: None,
            method: None,
            kind,
            once: false,
        }
    }

    /// Only for the first use.
    pub fn once(mut self) -> Self {
        self.once = true;
        self
    }

    /// Only on this device.
    pub fn on(mut self, device: impl Into<String>) -> Self {
        self.device = Some(device.into());
        self
    }

    /// Checks the spec is usable.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.kind, &self.method) {
            (k, None) if k.is_rpc() => Err("an RPC fault needs a method".into()),
            (k, Some(_)) if !k.is_rpc() => Err("a device fault takes no method".into()),
            (FaultKind::Status { code, .. }, _) if crate::error::parse_code(code).is_none() => {
                Err(format!("unknown gRPC code {code:?}"))
            }
            (
                FaultKind::Cut {
                    after_bytes: None,
                    probability: None,
                    ..
                },
                _,
            ) => Err("cut needs after_bytes or probability".into()),
            (
                FaultKind::Cut {
                    probability: Some(p),
                    ..
                },
                _,
            ) if !(0.0..=1.0).contains(p) => Err("probability must be within 0..=1".into()),
            _ => Ok(()),
        }
    }
}

/// A file of faults (YAML or JSON): `faults: [ {method, kind, ...}, ... ]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FaultFile {
    /// The faults.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
}

impl FaultFile {
    /// Parses YAML (JSON is YAML too).
    pub fn parse(text: &str) -> Result<Self, String> {
        let f: FaultFile = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        for s in &f.faults {
            s.validate()?;
        }
        Ok(f)
    }
}

/// An injected fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveFault {
    /// Id for removal.
    pub id: u64,
    /// The spec.
    #[serde(flatten)]
    pub spec: FaultSpec,
    /// Times it took effect.
    pub hits: u64,
}

static NEXT_FAULT_ID: AtomicU64 = AtomicU64::new(1);

/// One device's faults.
#[derive(Debug)]
pub struct FaultStore {
    faults: Mutex<Vec<ActiveFault>>,
    changed: watch::Sender<u64>,
}

impl Default for FaultStore {
    fn default() -> Self {
        Self {
            faults: Mutex::new(Vec::new()),
            changed: watch::channel(0).0,
        }
    }
}

fn method_matches(pattern: &str, method: &str) -> bool {
    if pattern == "*" || pattern == method {
        return true;
    }
    let service = method
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("");
    let p = pattern
        .trim_start_matches('/')
        .trim_end_matches("/*")
        .trim_end_matches('/');
    p == service
}

impl FaultStore {
    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Adds a fault; returns its id.
    pub fn add(&self, spec: FaultSpec) -> u64 {
        let id = NEXT_FAULT_ID.fetch_add(1, Ordering::Relaxed);
        self.faults
            .lock()
            .unwrap()
            .push(ActiveFault { id, spec, hits: 0 });
        self.bump();
        id
    }

    /// Current faults.
    pub fn list(&self) -> Vec<ActiveFault> {
        self.faults.lock().unwrap().clone()
    }

    /// Removes one fault.
    pub fn remove(&self, id: u64) -> bool {
        let mut f = self.faults.lock().unwrap();
        let before = f.len();
        f.retain(|a| a.id != id);
        let removed = f.len() != before;
        drop(f);
        if removed {
            self.bump();
        }
        removed
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.faults.lock().unwrap().clear();
        self.bump();
    }

    /// Wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Takes the first RPC fault matching `method` (consuming it if one-shot).
    pub fn take_rpc(&self, method: &str) -> Option<FaultKind> {
        self.take(|s| {
            s.kind.is_rpc()
                && s.method
                    .as_deref()
                    .is_some_and(|p| method_matches(p, method))
        })
    }

    /// Takes the first device fault `pick` accepts (consuming it if one-shot).
    pub fn take_device(&self, pick: impl Fn(&FaultKind) -> bool) -> Option<FaultKind> {
        self.take(|s| !s.kind.is_rpc() && pick(&s.kind))
    }

    /// Is a device fault `pick` accepts present (without using it)?
    pub fn has_device(&self, pick: impl Fn(&FaultKind) -> bool) -> bool {
        self.faults
            .lock()
            .unwrap()
            .iter()
            .any(|a| !a.spec.kind.is_rpc() && pick(&a.spec.kind))
    }

    fn take(&self, pick: impl Fn(&FaultSpec) -> bool) -> Option<FaultKind> {
        let mut f = self.faults.lock().unwrap();
        let i = f.iter().position(|a| pick(&a.spec))?;
        f[i].hits += 1;
        let kind = f[i].spec.kind.clone();
        if f[i].spec.once {
            f.remove(i);
            drop(f);
            self.bump();
        }
        Some(kind)
    }
}

/// Small seeded generator (splitmix64) so probabilistic cuts repeat.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The fault layer for one device.
#[derive(Clone)]
pub struct FaultLayer {
    store: Arc<FaultStore>,
}

impl FaultLayer {
    /// Layer reading `store`.
    pub fn new(store: Arc<FaultStore>) -> Self {
        Self { store }
    }
}

impl<S> tower::Layer<S> for FaultLayer {
    type Service = FaultService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        FaultService {
            inner,
            store: self.store.clone(),
        }
    }
}

/// See [`FaultLayer`].
#[derive(Clone)]
pub struct FaultService<S> {
    inner: S,
    store: Arc<FaultStore>,
}

#[derive(Debug)]
enum Traffic {
    Cut {
        after: Option<u64>,
        probability: Option<f64>,
        rng: SplitMix,
        kill: Option<ConnCtx>,
    },
    Stall {
        after: u64,
    },
}

#[derive(Debug)]
struct TrafficState {
    moved: u64,
    tripped: bool,
    kind: Traffic,
}

impl TrafficState {
    /// Called before a DATA frame of `len` bytes passes. Returns false when
    /// the frame must not pass.
    fn admit(&mut self, len: u64) -> bool {
        if self.tripped {
            return false;
        }
        match &mut self.kind {
            Traffic::Stall { after } => {
                if self.moved + len > *after {
                    self.tripped = true;
                    return false;
                }
            }
            Traffic::Cut {
                after,
                probability,
                rng,
                kill,
            } => {
                let by_bytes = after.is_some_and(|a| self.moved + len > a);
                let by_chance = probability.is_some_and(|p| rng.next_f64() < p);
                if by_bytes || by_chance {
                    self.tripped = true;
                    if let Some(k) = kill {
                        k.kill.cancel();
                    }
                    return false;
                }
            }
        }
        self.moved += len;
        true
    }

    fn is_stall(&self) -> bool {
        matches!(self.kind, Traffic::Stall { .. })
    }
}

pin_project_lite::pin_project! {
    struct FaultBody {
        #[pin]
        inner: tonic::body::Body,
        state: Arc<Mutex<TrafficState>>,
        held: Option<Frame<Bytes>>,
    }
}

impl HttpBody for FaultBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.project();
        let mut st = this.state.lock().unwrap();
        if st.tripped {
            return if st.is_stall() {
                Poll::Pending
            } else {
                Poll::Ready(Some(Err(tonic::Status::unavailable(
                    "transfer cut by an injected fault",
                ))))
            };
        }
        let frame = match this.held.take() {
            Some(f) => f,
            None => match this.inner.poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => f,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            },
        };
        let len = frame.data_ref().map(|d| d.len() as u64).unwrap_or(0);
        if len == 0 || st.admit(len) {
            return Poll::Ready(Some(Ok(frame)));
        }
        if st.is_stall() {
            // Keep the frame: the stall holds the stream, it does not lose data.
            *this.held = Some(frame);
            Poll::Pending
        } else {
            Poll::Ready(Some(Err(tonic::Status::unavailable(
                "transfer cut by an injected fault",
            ))))
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }
}

impl<S> tower::Service<GrpcRequest> for FaultService<S>
where
    S: tower::Service<GrpcRequest, Response = GrpcResponse, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = GrpcResponse;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<GrpcResponse, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: GrpcRequest) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fault = self.store.take_rpc(req.uri().path());
        let method = req.uri().path().to_owned();
        if let Some(f) = &fault {
            let name = serde_json::to_value(f)
                .ok()
                .and_then(|v| v["kind"].as_str().map(str::to_owned));
            crate::journal::note(req.extensions(), "fault", name.unwrap_or_default());
        }
        Box::pin(async move {
            let traffic = match fault {
                None => return inner.call(req).await,
                Some(FaultKind::Unimplemented) => {
                    return Ok(tonic::Status::unimplemented(format!(
                        "{method} is not implemented"
                    ))
                    .into_http());
                }
                Some(FaultKind::Status { code, message }) => {
                    let code = crate::error::parse_code(&code).unwrap_or(tonic::Code::Unknown);
                    return Ok(tonic::Status::new(code, message).into_http());
                }
                Some(FaultKind::Latency { ms }) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    return inner.call(req).await;
                }
                Some(FaultKind::Cut {
                    after_bytes,
                    probability,
                    seed,
                }) => Traffic::Cut {
                    after: after_bytes,
                    probability,
                    rng: SplitMix::new(seed),
                    kill: req.extensions().get::<ConnCtx>().cloned(),
                },
                Some(FaultKind::Stall { after_bytes }) => Traffic::Stall { after: after_bytes },
                Some(_) => return inner.call(req).await,
            };
            let state = Arc::new(Mutex::new(TrafficState {
                moved: 0,
                tripped: false,
                kind: traffic,
            }));
            let req = req.map(|b| {
                tonic::body::Body::new(FaultBody {
                    inner: b,
                    state: state.clone(),
                    held: None,
                })
            });
            let resp = inner.call(req).await?;
            Ok(resp.map(|b| {
                tonic::body::Body::new(FaultBody {
                    inner: b,
                    state,
                    held: None,
                })
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_and_once() {
        let s = FaultStore::default();
        s.add(FaultSpec::rpc("/gnoi.os.OS/Activate", FaultKind::Unimplemented).once());
        s.add(FaultSpec::rpc(
            "gnoi.system.System",
            FaultKind::Latency { ms: 5 },
        ));
        assert_eq!(s.take_rpc("/gnoi.os.OS/Verify"), None);
        assert_eq!(
            s.take_rpc("/gnoi.os.OS/Activate"),
            Some(FaultKind::Unimplemented)
        );
        assert_eq!(s.take_rpc("/gnoi.os.OS/Activate"), None);
        assert_eq!(
            s.take_rpc("/gnoi.system.System/Time"),
            Some(FaultKind::Latency { ms: 5 })
        );
        assert_eq!(
            s.take_rpc("/gnoi.system.System/Reboot"),
            Some(FaultKind::Latency { ms: 5 })
        );
        assert_eq!(s.list()[0].hits, 2);
        assert!(method_matches("/gnoi.file.File/*", "/gnoi.file.File/Put"));
        assert!(!method_matches("/gnoi.file.File/*", "/gnoi.file.FileX/Put"));
    }

    #[test]
    fn fault_file_parses_and_validates() {
        let f = FaultFile::parse(
            "faults:\n  - {method: /gnoi.os.OS/Install, kind: cut, after_bytes: 1000, once: true}\n  \
             - {kind: slow_reboot, ms: 2000, device: sim-1}\n  - {method: '*', kind: status, code: unavailable}\n",
        )
        .unwrap();
        assert_eq!(f.faults.len(), 3);
        assert!(f.faults[0].once);
        assert_eq!(f.faults[1].device.as_deref(), Some("sim-1"));
        assert!(FaultFile::parse("faults: [{kind: latency, ms: 3}]").is_err());
        assert!(FaultFile::parse("faults: [{method: x, kind: status, code: bogus}]").is_err());
        assert!(FaultFile::parse("faults: [{method: x, kind: flash_full}]").is_err());
    }

    #[test]
    fn seeded_rng_repeats() {
        let a: Vec<u64> = (0..4)
            .scan(SplitMix::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..4)
            .scan(SplitMix::new(7), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert!(
            (0..1000)
                .map(|_| SplitMix::new(3).next_f64())
                .all(|x| (0.0..1.0).contains(&x))
        );
    }
}
