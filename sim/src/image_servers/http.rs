//! HTTP/1.1 image server: `GET` and `HEAD` of files under a directory, with
//! `Content-Length` and single `Range: bytes=a-b` requests (206).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncSeekExt;
use tokio_util::sync::CancellationToken;

use super::{FaultKnob, ServerStats, resolve};

const CHUNK: usize = 256 * 1024;

type Body = BoxBody<Bytes, std::io::Error>;

/// A running HTTP server; stops when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    stats: Arc<ServerStats>,
    faults: Arc<FaultKnob>,
    stop: CancellationToken,
    ca_pem: Option<String>,
}

impl HttpServer {
    /// Serves `dir` on `addr` (port 0: any free port).
    pub async fn start(dir: &Path, addr: SocketAddr) -> std::io::Result<Self> {
        Self::start_inner(dir, addr, None).await
    }

    /// Serves `dir` over HTTPS with a certificate for `localhost` and the
    /// listen IP, signed by a fresh CA ([`HttpServer::ca_pem`]).
    pub async fn start_tls(dir: &Path, addr: SocketAddr) -> std::io::Result<Self> {
        let pki = crate::tls::Pki::generate().map_err(std::io::Error::other)?;
        let (_, cfg) = pki
            .server_config("localhost", addr.ip(), false)
            .map_err(std::io::Error::other)?;
        let mut cfg = (*cfg).clone();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let mut server = Self::start_inner(dir, addr, Some(acceptor)).await?;
        server.ca_pem = Some(pki.ca_pem.clone());
        Ok(server)
    }

    async fn start_inner(
        dir: &Path,
        addr: SocketAddr,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(ServerStats::default());
        let faults = Arc::new(FaultKnob::default());
        let stop = CancellationToken::new();
        let ctx = Arc::new(Ctx {
            root: dir.to_owned(),
            stats: Arc::clone(&stats),
            faults: Arc::clone(&faults),
        });
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                    _ = token.cancelled() => return,
                };
                let _ = tcp.set_nodelay(true);
                let ctx = Arc::clone(&ctx);
                let token = token.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let ctx = Arc::clone(&ctx);
                        async move { Ok::<_, Infallible>(ctx.handle(req).await) }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let conn = builder.serve_connection(TokioIo::new(tcp), svc);
                            tokio::select! {
                                _ = conn => {}
                                _ = token.cancelled() => {}
                            }
                        }
                        Some(acceptor) => {
                            let hs = tokio::time::timeout(
                                std::time::Duration::from_secs(10),
                                acceptor.accept(tcp),
                            );
                            let Ok(Ok(io)) = hs.await else { return };
                            let conn = builder.serve_connection(TokioIo::new(io), svc);
                            tokio::select! {
                                _ = conn => {}
                                _ = token.cancelled() => {}
                            }
                        }
                    }
                });
            }
        });
        tracing::info!(%addr, dir = %dir.display(), "HTTP image server listening");
        Ok(Self {
            addr,
            stats,
            faults,
            stop,
            ca_pem: None,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr/<file>` (`https://localhost:port/<file>` with TLS).
    pub fn url(&self, file: &str) -> String {
        match self.ca_pem {
            None => format!("http://{}/{}", self.addr, file.trim_start_matches('/')),
            Some(_) => format!(
                "https://localhost:{}/{}",
                self.addr.port(),
                file.trim_start_matches('/')
            ),
        }
    }

    /// The CA that signed the HTTPS certificate (PEM), when serving TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// What it served.
    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.stats
    }

    /// The cut-after-N-bytes knob.
    pub fn faults(&self) -> &Arc<FaultKnob> {
        &self.faults
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Ctx {
    root: PathBuf,
    stats: Arc<ServerStats>,
    faults: Arc<FaultKnob>,
}

fn simple(status: u16, text: &str) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(
            Full::new(Bytes::from(format!("{text}\n")))
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("static response")
}

/// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n` against `len`.
fn parse_range(v: &str, len: u64) -> Option<(u64, u64)> {
    let spec = v.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        (len.saturating_sub(n), len.checked_sub(1)?)
    } else {
        let s: u64 = a.parse().ok()?;
        let e = if b.is_empty() {
            len.checked_sub(1)?
        } else {
            b.parse::<u64>().ok()?.min(len.checked_sub(1)?)
        };
        (s, e)
    };
    (start <= end && end < len).then_some((start, end))
}

impl Ctx {
    async fn handle(&self, req: http::Request<hyper::body::Incoming>) -> http::Response<Body> {
        if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
            return simple(405, "only GET and HEAD");
        }
        let path = match percent_decode(req.uri().path()) {
            Some(p) => p,
            None => return simple(400, "bad path"),
        };
        let Some(file) = resolve(&self.root, &path) else {
            return simple(404, "not found");
        };
        let Ok(mut f) = tokio::fs::File::open(&file).await else {
            return simple(404, "not found");
        };
        let len = match f.metadata().await {
            Ok(m) => m.len(),
            Err(_) => return simple(500, "stat failed"),
        };
        let range = req
            .headers()
            .get(http::header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(|v| parse_range(v, len));
        let (status, start, end) = match range {
            None => (200, 0, len),
            Some(Some((s, e))) => (206, s, e + 1),
            Some(None) => {
                let mut r = simple(416, "range not satisfiable");
                r.headers_mut().insert(
                    http::header::CONTENT_RANGE,
                    format!("bytes */{len}").parse().expect("header"),
                );
                return r;
            }
        };
        let mut builder = http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_LENGTH, end - start)
            .header(http::header::ACCEPT_RANGES, "bytes")
            .header(http::header::CONTENT_TYPE, "application/octet-stream");
        if status == 206 {
            builder = builder.header(
                http::header::CONTENT_RANGE,
                format!("bytes {start}-{}/{len}", end - 1),
            );
        }
        if req.method() == http::Method::HEAD {
            return builder
                .body(Full::new(Bytes::new()).map_err(|n| match n {}).boxed())
                .expect("response");
        }
        if start > 0 && f.seek(std::io::SeekFrom::Start(start)).await.is_err() {
            return simple(500, "seek failed");
        }
        self.stats.started(&path);
        let cut = self.faults.take();
        let stats = Arc::clone(&self.stats);
        // Read on a blocking thread with std's `read_to_end` into the
        // chunk's own uninitialised capacity: one copy out of the page
        // cache, no zeroing (tokio's file reads into a buffer of its own
        // and copies again).
        let f = Arc::new(f.into_std().await);
        let state = (f, start, stats, 0u64);
        let body = futures::stream::unfold(state, move |(f, pos, stats, sent)| async move {
            if pos >= end {
                stats.finished();
                return None;
            }
            if let Some(limit) = cut
                && sent >= limit
            {
                let e = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "fault: cut");
                return Some((Err(e), (f, end, stats, sent)));
            }
            let mut want = CHUNK.min((end - pos) as usize);
            if let Some(limit) = cut {
                want = want.min((limit - sent) as usize).max(1);
            }
            let file = Arc::clone(&f);
            let read = tokio::task::spawn_blocking(move || {
                use std::io::Read;
                let mut buf = Vec::with_capacity(want);
                (&*file).take(want as u64).read_to_end(&mut buf)?;
                if buf.len() < want {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
                }
                Ok(buf)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            match read {
                Ok(buf) => {
                    stats.sent(want as u64);
                    let n = want as u64;
                    Some((
                        Ok(Frame::data(Bytes::from(buf))),
                        (f, pos + n, stats, sent + n),
                    ))
                }
                Err(e) => Some((Err(e), (f, end, stats, sent))),
            }
        });
        // After an error item hyper aborts the connection; stop polling.
        let body = body.scan(false, |failed, item| {
            let out = if *failed { None } else { Some(item) };
            if let Some(Err(_)) = &out {
                *failed = true;
            }
            futures::future::ready(out)
        });
        builder
            .body(BodyExt::boxed(StreamBody::new(body)))
            .expect("response")
    }
}

/// Percent-decodes a URL path; `None` if malformed or not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("/a%20b").as_deref(), Some("/a b"));
        assert_eq!(percent_decode("/a%2"), None);
    }
}
