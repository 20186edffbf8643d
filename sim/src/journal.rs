//! A journal of every RPC a device received, and the outermost tower layer
//! of a device's stack that writes it (the credential check behind it is
//! [`crate::auth`]).
//!
//! An entry is written when the request arrives (code `IN_PROGRESS`) and
//! completed with the gRPC outcome, or `DROPPED` when the connection went
//! away first (a reboot, an OS.Activate that closes the connection, a cut).

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Body as HttpBody, Frame};
use serde::{Deserialize, Serialize};

use crate::clock::wall_ns;
use crate::rpc::{ConnCtx, GrpcRequest, GrpcResponse};

/// One RPC as the device saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Sequence number, increasing across the fleet.
    pub seq: u64,
    /// Arrival, ns since the Unix epoch (host clock, no device skew).
    pub time_ns: u64,
    /// Device name.
    pub device: String,
    /// Full method (`/gnoi.os.OS/Activate`).
    pub method: String,
    /// Key request fields the handler noted (version, path, no_reboot...).
    pub fields: BTreeMap<String, String>,
    /// `OK`, a gRPC code name, `IN_PROGRESS`, or `DROPPED`.
    pub code: String,
    /// Status message.
    pub message: String,
    /// Time from arrival to outcome.
    pub duration_ms: u64,
}

/// Query for [`Journal::entries`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JournalQuery {
    /// Only this device.
    #[serde(default)]
    pub device: Option<String>,
    /// Only methods containing this text (`Activate`, `/gnoi.os.OS/`).
    #[serde(default)]
    pub method: Option<String>,
    /// Only entries with a sequence number above this.
    #[serde(default)]
    pub since: Option<u64>,
}

/// The fleet's journal (bounded ring).
#[derive(Debug)]
pub struct Journal {
    entries: Mutex<VecDeque<(JournalEntry, Instant)>>,
    next: AtomicU64,
    cap: usize,
}

impl Default for Journal {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl Journal {
    /// A journal keeping the last `cap` entries.
    pub fn new(cap: usize) -> Self {
        Self {
            entries: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(1),
            cap: cap.max(1),
        }
    }

    /// Records an arrival.
    pub fn begin(&self, device: &str, method: &str) -> u64 {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let e = JournalEntry {
            seq,
            time_ns: wall_ns(),
            device: device.into(),
            method: method.into(),
            fields: BTreeMap::new(),
            code: "IN_PROGRESS".into(),
            message: String::new(),
            duration_ms: 0,
        };
        let mut q = self.entries.lock().unwrap();
        q.push_back((e, Instant::now()));
        while q.len() > self.cap {
            q.pop_front();
        }
        seq
    }

    fn with_entry(&self, seq: u64, f: impl FnOnce(&mut JournalEntry, Instant)) {
        let mut q = self.entries.lock().unwrap();
        let Some(front) = q.front().map(|(e, _)| e.seq) else {
            return;
        };
        if seq < front {
            return;
        }
        // Sequence numbers are allocated before the push, so two arrivals can
        // land out of order; search near the expected slot.
        let guess = ((seq - front) as usize).min(q.len().saturating_sub(1));
        let idx = (0..q.len())
            .map(|d| guess.saturating_sub(d))
            .find(|&i| q[i].0.seq == seq)
            .or_else(|| (guess..q.len()).find(|&i| q[i].0.seq == seq));
        if let Some(i) = idx {
            let (e, t) = &mut q[i];
            f(e, *t);
        }
    }

    /// Adds a key field to an entry.
    pub fn note(&self, seq: u64, key: &str, value: String) {
        self.with_entry(seq, |e, _| {
            e.fields.insert(key.into(), value);
        });
    }

    /// Completes an entry.
    pub fn finish(&self, seq: u64, code: &str, message: &str) {
        self.with_entry(seq, |e, t| {
            if e.code == "IN_PROGRESS" {
                e.code = code.into();
                e.message = message.into();
                e.duration_ms = t.elapsed().as_millis() as u64;
            }
        });
    }

    /// Entries matching `q`, oldest first.
    pub fn entries(&self, q: &JournalQuery) -> Vec<JournalEntry> {
        self.entries
            .lock()
            .unwrap()
            .iter()
            .map(|(e, _)| e)
            .filter(|e| q.device.as_deref().is_none_or(|d| e.device == d))
            .filter(|e| q.method.as_deref().is_none_or(|m| e.method.contains(m)))
            .filter(|e| q.since.is_none_or(|s| e.seq > s))
            .cloned()
            .collect()
    }

    /// Removes entries (of one device, or all).
    pub fn clear(&self, device: Option<&str>) {
        let mut q = self.entries.lock().unwrap();
        match device {
            Some(d) => q.retain(|(e, _)| e.device != d),
            None => q.clear(),
        }
    }
}

/// Handle a handler uses to add key fields to its journal entry; taken from
/// the request extensions (see [`note`]).
#[derive(Clone, Debug)]
pub struct CallNotes {
    journal: Arc<Journal>,
    seq: u64,
}

impl CallNotes {
    /// Adds a field.
    pub fn note(&self, key: &str, value: impl ToString) {
        self.journal.note(self.seq, key, value.to_string());
    }
}

/// Notes a key field on the journal entry of the RPC that carries `ext`.
pub fn note(ext: &http::Extensions, key: &str, value: impl ToString) {
    if let Some(n) = ext.get::<CallNotes>() {
        n.note(key, value);
    }
}

struct Guard {
    journal: Arc<Journal>,
    seq: u64,
    done: bool,
}

impl Guard {
    fn finish(&mut self, code: &str, msg: &str) {
        if !self.done {
            self.done = true;
            self.journal.finish(self.seq, code, msg);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.finish("DROPPED", "the call ended before its status was sent");
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<(String, String)> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    let msg = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some((
        crate::error::code_name(tonic::Code::from_i32(code)).to_owned(),
        msg,
    ))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pin_project_lite::pin_project! {
    struct JournalBody {
        #[pin]
        inner: tonic::body::Body,
        guard: Guard,
        kill: Option<Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>>,
    }
}

impl HttpBody for JournalBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.project();
        if let Some(k) = this.kill.as_mut()
            && k.as_mut().poll(cx).is_ready()
        {
            this.guard.finish("DROPPED", "connection closed");
            return Poll::Ready(Some(Err(tonic::Status::unavailable("connection closed"))));
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(t) = f.trailers_ref()
                    && let Some((code, msg)) = status_of(t)
                {
                    this.guard.finish(&code, &msg);
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.guard.finish("DROPPED", &e.to_string());
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.guard.finish("OK", "");
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

use std::future::Future;

/// Outermost layer: journal every call and drop handlers whose connection
/// has been closed (reboot, cut).
#[derive(Clone)]
pub struct JournalLayer {
    journal: Arc<Journal>,
    device: Arc<str>,
}

impl JournalLayer {
    /// Journal calls of `device` into `journal`.
    pub fn new(journal: Arc<Journal>, device: &str) -> Self {
        Self {
            journal,
            device: device.into(),
        }
    }
}

impl<S> tower::Layer<S> for JournalLayer {
    type Service = JournalService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        JournalService {
            inner,
            journal: self.journal.clone(),
            device: self.device.clone(),
        }
    }
}

/// See [`JournalLayer`].
#[derive(Clone)]
pub struct JournalService<S> {
    inner: S,
    journal: Arc<Journal>,
    device: Arc<str>,
}

impl<S> tower::Service<GrpcRequest> for JournalService<S>
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

    fn call(&mut self, mut req: GrpcRequest) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let seq = self.journal.begin(&self.device, req.uri().path());
        let journal = self.journal.clone();
        req.extensions_mut().insert(CallNotes {
            journal: journal.clone(),
            seq,
        });
        let kill = req.extensions().get::<ConnCtx>().map(|c| c.kill.clone());
        Box::pin(async move {
            let mut guard = Guard {
                journal,
                seq,
                done: false,
            };
            let resp = match &kill {
                Some(k) => tokio::select! {
                    r = inner.call(req) => r?,
                    _ = k.cancelled() => {
                        guard.finish("DROPPED", "connection closed");
                        return Ok(tonic::Status::unavailable("connection closed").into_http());
                    }
                },
                None => inner.call(req).await?,
            };
            if let Some((code, msg)) = status_of(resp.headers()) {
                guard.finish(&code, &msg);
            }
            let kill = kill.map(|k| Box::pin(k.cancelled_owned()));
            Ok(resp.map(|b| {
                tonic::body::Body::new(JournalBody {
                    inner: b,
                    guard,
                    kill,
                })
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_note_finish_query() {
        let j = Journal::new(3);
        let a = j.begin("sim-0", "/gnoi.os.OS/Activate");
        let b = j.begin("sim-1", "/gnoi.os.OS/Verify");
        j.note(a, "version", "26.01.01.0.340".into());
        j.finish(a, "OK", "");
        j.finish(a, "INTERNAL", "ignored: already finished");
        let all = j.entries(&JournalQuery::default());
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].code, "OK");
        assert_eq!(all[0].fields["version"], "26.01.01.0.340");
        assert_eq!(all[1].code, "IN_PROGRESS");
        let q = JournalQuery {
            device: Some("sim-1".into()),
            ..Default::default()
        };
        assert_eq!(j.entries(&q)[0].seq, b);
        for _ in 0..5 {
            j.begin("sim-0", "/x");
        }
        assert_eq!(j.entries(&JournalQuery::default()).len(), 3);
        j.clear(Some("sim-0"));
        assert!(j.entries(&JournalQuery::default()).is_empty());
    }

    #[test]
    fn grpc_message_is_percent_decoded() {
        assert_eq!(percent_decode("no%20such%20file"), "no such file");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%é"), "%é");
    }
}
