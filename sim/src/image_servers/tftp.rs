//! TFTP image server (read only): RFC 1350 with `blksize`, `tsize`,
//! `timeout` and `windowsize` options (RFC 2347/2348/2349/7440), one UDP
//! socket per transfer, windows retransmitted from the first unacknowledged
//! block after a timeout, block numbers wrapping from 65535 to 0.

use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::{FaultKnob, ServerStats, resolve};

const OP_RRQ: u16 = 1;
const OP_WRQ: u16 = 2;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;
const MAX_RETRIES: u32 = 5;

/// A running TFTP server; stops when dropped.
pub struct TftpServer {
    addr: SocketAddr,
    stats: Arc<ServerStats>,
    faults: Arc<FaultKnob>,
    options: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl TftpServer {
    /// Serves `dir` on UDP `addr` (port 0: any free port).
    pub async fn start(dir: &Path, addr: SocketAddr) -> std::io::Result<Self> {
        let sock = UdpSocket::bind(addr).await?;
        let addr = sock.local_addr()?;
        let stats = Arc::new(ServerStats::default());
        let faults = Arc::new(FaultKnob::default());
        let options = Arc::new(AtomicBool::new(true));
        let stop = CancellationToken::new();
        let ctx = Arc::new(Ctx {
            root: dir.to_owned(),
            stats: Arc::clone(&stats),
            faults: Arc::clone(&faults),
            options: Arc::clone(&options),
            stop: stop.clone(),
        });
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                let (n, from) = tokio::select! {
                    r = sock.recv_from(&mut buf) => match r { Ok(r) => r, Err(_) => continue },
                    _ = ctx.stop.cancelled() => return,
                };
                let pkt = buf[..n].to_vec();
                let ctx = Arc::clone(&ctx);
                let local = addr;
                tokio::spawn(async move {
                    if let Err(e) = ctx.session(local, from, &pkt).await {
                        tracing::debug!(%from, error = %e, "TFTP session ended");
                    }
                });
            }
        });
        tracing::info!(%addr, dir = %dir.display(), "TFTP image server listening");
        Ok(Self {
            addr,
            stats,
            faults,
            options,
            stop,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `tftp://addr/<file>`.
    pub fn url(&self, file: &str) -> String {
        format!("tftp://{}/{}", self.addr, file.trim_start_matches('/'))
    }

    /// What it served.
    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.stats
    }

    /// The cut-after-N-bytes knob (the server goes silent mid-transfer).
    pub fn faults(&self) -> &Arc<FaultKnob> {
        &self.faults
    }

    /// With `false` the server ignores every option, like a plain RFC 1350
    /// server (512-byte blocks, window 1, no OACK).
    pub fn set_options_enabled(&self, on: bool) {
        self.options.store(on, Ordering::SeqCst);
    }
}

impl Drop for TftpServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Ctx {
    root: PathBuf,
    stats: Arc<ServerStats>,
    faults: Arc<FaultKnob>,
    options: Arc<AtomicBool>,
    stop: CancellationToken,
}

fn error_packet(code: u16, msg: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + msg.len());
    p.extend_from_slice(&OP_ERROR.to_be_bytes());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(msg.as_bytes());
    p.push(0);
    p
}

/// Options of a request: (lowercased key, value).
type Options = Vec<(String, String)>;

/// Request fields: file, mode, options.
fn parse_request(pkt: &[u8]) -> Option<(String, String, Options)> {
    let mut parts = pkt.get(2..)?.split(|b| *b == 0);
    let file = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let mode = String::from_utf8(parts.next()?.to_vec())
        .ok()?
        .to_ascii_lowercase();
    let mut opts = Vec::new();
    while let Some(k) = parts.next() {
        if k.is_empty() {
            break;
        }
        let v = parts.next()?;
        opts.push((
            String::from_utf8_lossy(k).to_ascii_lowercase(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    Some((file, mode, opts))
}

impl Ctx {
    async fn session(
        &self,
        local: SocketAddr,
        peer: SocketAddr,
        pkt: &[u8],
    ) -> std::io::Result<()> {
        let sock = UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await?;
        sock.connect(peer).await?;
        if pkt.len() < 4 {
            return Ok(());
        }
        let op = u16::from_be_bytes([pkt[0], pkt[1]]);
        if op == OP_WRQ {
            sock.send(&error_packet(2, "read-only server")).await?;
            return Ok(());
        }
        if op != OP_RRQ {
            sock.send(&error_packet(4, "expected RRQ")).await?;
            return Ok(());
        }
        let Some((file, mode, opts)) = parse_request(pkt) else {
            sock.send(&error_packet(4, "malformed request")).await?;
            return Ok(());
        };
        if mode != "octet" && mode != "netascii" {
            sock.send(&error_packet(4, "only octet mode")).await?;
            return Ok(());
        }
        let Some(path) = resolve(&self.root, &file) else {
            sock.send(&error_packet(1, "file not found")).await?;
            return Ok(());
        };
        let f = std::fs::File::open(&path)?;
        let size = f.metadata()?.len();
        let mut blksize: usize = 512;
        let mut window: u64 = 1;
        let mut timeout = Duration::from_secs(1);
        let mut oack: Vec<(String, String)> = Vec::new();
        if self.options.load(Ordering::SeqCst) {
            for (k, v) in &opts {
                match k.as_str() {
                    "blksize" => {
                        if let Ok(b) = v.parse::<usize>() {
                            blksize = b.clamp(8, 65464);
                            oack.push((k.clone(), blksize.to_string()));
                        }
                    }
                    "windowsize" => {
                        if let Ok(w) = v.parse::<u64>()
                            && (1..=65535).contains(&w)
                        {
                            window = w;
                            oack.push((k.clone(), w.to_string()));
                        }
                    }
                    "tsize" => oack.push((k.clone(), size.to_string())),
                    "timeout" => {
                        if let Ok(t) = v.parse::<u64>()
                            && (1..=255).contains(&t)
                        {
                            timeout = Duration::from_secs(t);
                            oack.push((k.clone(), t.to_string()));
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut buf = vec![0u8; 65536 + 4];
        if !oack.is_empty() {
            let mut p = OP_OACK.to_be_bytes().to_vec();
            for (k, v) in &oack {
                p.extend_from_slice(k.as_bytes());
                p.push(0);
                p.extend_from_slice(v.as_bytes());
                p.push(0);
            }
            let mut tries = 0;
            loop {
                sock.send(&p).await?;
                match tokio::time::timeout(timeout, sock.recv(&mut buf)).await {
                    Ok(Ok(n)) if n >= 4 => {
                        let op = u16::from_be_bytes([buf[0], buf[1]]);
                        let blk = u16::from_be_bytes([buf[2], buf[3]]);
                        if op == OP_ACK && blk == 0 {
                            break;
                        }
                        if op == OP_ERROR {
                            return Ok(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        tries += 1;
                        if tries > MAX_RETRIES {
                            return Ok(());
                        }
                    }
                }
            }
        }
        self.stats.started(&file);
        let cut = self.faults.take();
        // Blocks are 1-based; the last one is short (possibly empty).
        let blocks = size / blksize as u64 + 1;
        let mut base: u64 = 1;
        let mut tries = 0;
        let mut data = vec![0u8; blksize + 4];
        while base <= blocks {
            let end = (base + window - 1).min(blocks);
            for b in base..=end {
                let off = (b - 1) * blksize as u64;
                let len = (size - off).min(blksize as u64) as usize;
                if let Some(limit) = cut
                    && off + len as u64 > limit
                {
                    // Fault: go silent, as a server that died mid-transfer.
                    return Ok(());
                }
                data[..2].copy_from_slice(&OP_DATA.to_be_bytes());
                data[2..4].copy_from_slice(&((b & 0xffff) as u16).to_be_bytes());
                f.read_exact_at(&mut data[4..4 + len], off)?;
                sock.send(&data[..4 + len]).await?;
                self.stats.sent(len as u64);
            }
            // Wait for an ACK inside [base-1, end].
            let deadline = tokio::time::Instant::now() + timeout;
            let acked = loop {
                match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                    Ok(Ok(n)) if n >= 4 => {
                        let op = u16::from_be_bytes([buf[0], buf[1]]);
                        if op == OP_ERROR {
                            return Ok(());
                        }
                        if op != OP_ACK {
                            continue;
                        }
                        let blk = u16::from_be_bytes([buf[2], buf[3]]);
                        if let Some(abs) = (base - 1..=end).find(|a| (a & 0xffff) as u16 == blk) {
                            break Some(abs);
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_) => break None,
                }
            };
            match acked {
                Some(abs) if abs >= base => {
                    tries = 0;
                    base = abs + 1;
                }
                Some(_) => {
                    // The client repeated its last ACK: resend the window,
                    // counted as a retry so a confused peer cannot loop us.
                    tries += 1;
                    if tries > MAX_RETRIES {
                        return Ok(());
                    }
                }
                None => {
                    tries += 1;
                    if tries > MAX_RETRIES {
                        return Ok(());
                    }
                }
            }
        }
        self.stats.finished();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_with_options() {
        let (f, m, o) =
            parse_request(b"\0\x01images/a.bin\0OCTET\0BLKSIZE\x001468\0tsize\x000\0").unwrap();
        assert_eq!((f.as_str(), m.as_str()), ("images/a.bin", "octet"));
        assert_eq!(
            o,
            vec![
                ("blksize".to_string(), "1468".to_string()),
                ("tsize".to_string(), "0".to_string())
            ]
        );
        assert!(parse_request(b"\0\x01a").is_none());
    }
}
