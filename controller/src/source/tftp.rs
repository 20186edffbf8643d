//! `tftp://`: an RFC 1350 read client negotiating `blksize` (RFC 2348),
//! `tsize` (RFC 2349), `timeout` (RFC 2349) and `windowsize` (RFC 7440)
//! through an OACK (RFC 2347).
//!
//! ```text
//!  RRQ file octet [blksize B tsize 0 timeout T windowsize W] -> server:69
//!  <- OACK (from the server's transfer port)   -> ACK 0
//!  <- DATA 1..W                                 -> ACK W   (window in order)
//!  <- DATA k out of order                       -> ACK last in-order block
//!  <- DATA with < blksize bytes                 -> ACK, done
//! ```
//!
//! A server that ignores options answers DATA 1 at once (512-byte blocks,
//! window 1); one that refuses them with ERROR 8 is asked again without
//! options. Each exchange waits `timeout` and is retransmitted at most
//! `retries` times. Block numbers wrap from 65535 to 0 for images over
//! 65535 blocks.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::sink::Sink;
use super::url::SourceUrl;
use super::{SourceError, SourceSettings, TftpOptions};

const OP_RRQ: u16 = 1;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;
/// Silence inside a window after which the blocks received are acknowledged.
const WINDOW_SILENCE: Duration = Duration::from_millis(40);

/// What the server agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Negotiated {
    blksize: usize,
    windowsize: u64,
    tsize: Option<u64>,
}

pub(crate) async fn fetch(
    url: &SourceUrl,
    settings: &SourceSettings,
    sink: &mut Sink<'_>,
) -> Result<(), SourceError> {
    let unreachable = |detail: String| SourceError::Unreachable {
        url: url.url.clone(),
        detail,
    };
    let server = tokio::net::lookup_host(url.authority())
        .await
        .map_err(|e| unreachable(format!("resolving {}: {e}", url.host)))?
        .next()
        .ok_or_else(|| unreachable(format!("{} has no address", url.host)))?;
    let file = url.path.trim_start_matches('/');
    let opts = settings.tftp;
    match transfer(url, server, file, Some(opts), opts, sink).await {
        Err(Refused::Options(msg)) => {
            tracing::info!(url = %url.url, server_said = %msg, "TFTP server refused options; retrying without");
            transfer(url, server, file, None, opts, sink)
                .await
                .map_err(Refused::into_error)
        }
        other => other.map_err(Refused::into_error),
    }
}

enum Refused {
    Options(String),
    Error(SourceError),
}

impl Refused {
    fn into_error(self) -> SourceError {
        match self {
            Refused::Error(e) => e,
            Refused::Options(msg) => SourceError::Protocol {
                url: String::new(),
                detail: format!("option negotiation refused: {msg}"),
            },
        }
    }
}

impl From<SourceError> for Refused {
    fn from(e: SourceError) -> Self {
        Refused::Error(e)
    }
}

fn rrq(file: &str, options: Option<TftpOptions>) -> Vec<u8> {
    let mut p = Vec::with_capacity(64 + file.len());
    p.extend_from_slice(&OP_RRQ.to_be_bytes());
    for s in [file, "octet"] {
        p.extend_from_slice(s.as_bytes());
        p.push(0);
    }
    if let Some(o) = options {
        let mut opt = |k: &str, v: String| {
            p.extend_from_slice(k.as_bytes());
            p.push(0);
            p.extend_from_slice(v.as_bytes());
            p.push(0);
        };
        if o.blksize != 512 {
            opt("blksize", o.blksize.clamp(8, 65464).to_string());
        }
        opt("tsize", "0".into());
        opt("timeout", o.timeout.as_secs().clamp(1, 255).to_string());
        if o.windowsize > 1 {
            opt("windowsize", o.windowsize.to_string());
        }
    }
    p
}

fn ack(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    let o = OP_ACK.to_be_bytes();
    [o[0], o[1], b[0], b[1]]
}

fn error_packet(code: u16, msg: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + msg.len());
    p.extend_from_slice(&OP_ERROR.to_be_bytes());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(msg.as_bytes());
    p.push(0);
    p
}

/// Parses an OACK against what was asked.
fn parse_oack(body: &[u8], asked: TftpOptions) -> Result<Negotiated, String> {
    let mut parts = body.split(|b| *b == 0);
    let mut n = Negotiated {
        blksize: 512,
        windowsize: 1,
        tsize: None,
    };
    while let Some(k) = parts.next() {
        if k.is_empty() {
            break;
        }
        let v = parts.next().ok_or("option without value")?;
        let k = String::from_utf8_lossy(k).to_ascii_lowercase();
        let v = std::str::from_utf8(v).map_err(|_| "option value not text")?;
        let num = || {
            v.parse::<u64>()
                .map_err(|_| format!("{k}='{v}' is not a number"))
        };
        match k.as_str() {
            "blksize" => {
                let b = num()?;
                if !(8..=u64::from(asked.blksize.max(8))).contains(&b) {
                    return Err(format!(
                        "server chose blksize {b} outside 8..={}",
                        asked.blksize
                    ));
                }
                n.blksize = b as usize;
            }
            "windowsize" => {
                let w = num()?;
                if !(1..=u64::from(asked.windowsize.max(1))).contains(&w) {
                    return Err(format!(
                        "server chose windowsize {w} outside 1..={}",
                        asked.windowsize
                    ));
                }
                n.windowsize = w;
            }
            "tsize" => n.tsize = Some(num()?),
            "timeout" => {}
            other => {
                return Err(format!(
                    "server acknowledged an option not asked for: {other}"
                ));
            }
        }
    }
    Ok(n)
}

async fn transfer(
    url: &SourceUrl,
    server: SocketAddr,
    file: &str,
    options: Option<TftpOptions>,
    cfg: TftpOptions,
    sink: &mut Sink<'_>,
) -> Result<(), Refused> {
    let unreachable = |detail: String| SourceError::Unreachable {
        url: url.url.clone(),
        detail,
    };
    let protocol = |detail: String| SourceError::Protocol {
        url: url.url.clone(),
        detail,
    };
    let bind: SocketAddr = if server.is_ipv6() {
        "[::]:0".parse().expect("addr")
    } else {
        "0.0.0.0:0".parse().expect("addr")
    };
    let sock = UdpSocket::bind(bind)
        .await
        .map_err(|e| SourceError::io("binding a UDP socket", e))?;
    let request = rrq(file, options);
    let timeout = cfg.timeout.max(Duration::from_millis(10));
    let mut buf = vec![0u8; 65536 + 4];
    // Last packet we sent to the server (RRQ, then ACKs) for retransmits.
    let mut last_sent: Vec<u8> = request.clone();
    let mut dest = server;
    sock.send_to(&request, dest)
        .await
        .map_err(|e| unreachable(format!("sending RRQ: {e}")))?;
    let mut peer: Option<SocketAddr> = None;
    let mut neg = Negotiated {
        blksize: 512,
        windowsize: 1,
        tsize: None,
    };
    // Absolute number of the next block expected (1-based), and how many
    // blocks arrived in order since the last ACK.
    let mut next: u64 = 1;
    let mut in_window: u64 = 0;
    let mut retries = 0u32;
    let mut gap_acked = false;
    loop {
        // Inside a window that has begun, a short silence means its tail was
        // lost (a full socket buffer drops datagrams): acknowledge what
        // arrived so the server goes on at once, instead of both sides
        // waiting a whole timeout. This is not counted as a retry.
        let window_open = in_window > 0 && neg.windowsize > 1;
        let wait = if window_open {
            timeout.min(WINDOW_SILENCE)
        } else {
            timeout
        };
        let (n, from) = match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
            Ok(Ok(r)) => r,
            Err(_) if window_open => {
                last_sent = ack(((next - 1) & 0xffff) as u16).to_vec();
                sock.send_to(&last_sent, dest)
                    .await
                    .map_err(|e| unreachable(format!("sending ACK: {e}")))?;
                in_window = 0;
                continue;
            }
            Ok(Err(e)) => {
                // ICMP port unreachable surfaces here on Linux.
                return Err(unreachable(format!("after {} bytes: {e}", sink.written())).into());
            }
            Err(_) => {
                retries += 1;
                if retries > cfg.retries {
                    return Err(unreachable(format!(
                        "no answer after {} retransmits of {} ms (received {} bytes)",
                        cfg.retries,
                        timeout.as_millis(),
                        sink.written()
                    ))
                    .into());
                }
                // Once the transfer runs, acknowledge the last block that
                // arrived in order: the server goes on from there (a lost
                // block at the end of a window is re-sent, RFC 7440).
                if peer.is_some() {
                    last_sent = ack(((next - 1) & 0xffff) as u16).to_vec();
                }
                sock.send_to(&last_sent, dest)
                    .await
                    .map_err(|e| unreachable(format!("retransmitting: {e}")))?;
                in_window = 0;
                continue;
            }
        };
        if from.ip() != server.ip() {
            continue;
        }
        match peer {
            None => {
                peer = Some(from);
                dest = from;
            }
            Some(p) if p != from => {
                let _ = sock
                    .send_to(&error_packet(5, "unknown transfer ID"), from)
                    .await;
                continue;
            }
            _ => {}
        }
        let pkt = &buf[..n];
        if pkt.len() < 4 {
            continue;
        }
        let op = u16::from_be_bytes([pkt[0], pkt[1]]);
        match op {
            OP_OACK if next == 1 && in_window == 0 && sink.written() == 0 => {
                let Some(asked) = options else {
                    return Err(protocol("OACK to a request without options".into()).into());
                };
                neg = parse_oack(&pkt[2..], asked).map_err(|e| {
                    let _ = sock.try_send_to(&error_packet(8, &e), from);
                    protocol(format!("bad OACK: {e}"))
                })?;
                if let Some(t) = neg.tsize {
                    sink.announce_total(t)?;
                }
                last_sent = ack(0).to_vec();
                sock.send_to(&last_sent, dest)
                    .await
                    .map_err(|e| unreachable(format!("sending ACK 0: {e}")))?;
                retries = 0;
            }
            OP_OACK => {}
            OP_ERROR => {
                let code = u16::from_be_bytes([pkt[2], pkt[3]]);
                let msg = String::from_utf8_lossy(&pkt[4..])
                    .trim_end_matches('\0')
                    .to_owned();
                return Err(match code {
                    1 => Refused::Error(SourceError::NotFound {
                        url: url.url.clone(),
                        detail: format!("TFTP error 1: {msg}"),
                    }),
                    2 => Refused::Error(SourceError::AuthFailed {
                        url: url.url.clone(),
                        detail: format!("TFTP error 2 (access violation): {msg}"),
                    }),
                    8 if options.is_some() && sink.written() == 0 => Refused::Options(msg),
                    _ => Refused::Error(protocol(format!("TFTP error {code}: {msg}"))),
                });
            }
            OP_DATA => {
                let block = u16::from_be_bytes([pkt[2], pkt[3]]);
                let data = &pkt[4..];
                if block == (next & 0xffff) as u16 {
                    if data.len() > neg.blksize {
                        return Err(protocol(format!(
                            "block {block} carries {} bytes, over blksize {}",
                            data.len(),
                            neg.blksize
                        ))
                        .into());
                    }
                    sink.write(data).await?;
                    retries = 0;
                    gap_acked = false;
                    in_window += 1;
                    let last = data.len() < neg.blksize;
                    if last || in_window >= neg.windowsize {
                        last_sent = ack(block).to_vec();
                        sock.send_to(&last_sent, dest)
                            .await
                            .map_err(|e| unreachable(format!("sending ACK: {e}")))?;
                        in_window = 0;
                    }
                    next += 1;
                    if last {
                        if let Some(t) = neg.tsize
                            && t != sink.written()
                        {
                            return Err(protocol(format!(
                                "tsize said {t} bytes but {} arrived",
                                sink.written()
                            ))
                            .into());
                        }
                        return Ok(());
                    }
                } else if !gap_acked {
                    // A block beyond the one expected (one went missing) or
                    // a duplicate (the server re-sent a window we partly
                    // had): tell the server where we are, once until the
                    // next block arrives in order, so it goes on from
                    // there (RFC 7440) and our window count realigns.
                    last_sent = ack(((next - 1) & 0xffff) as u16).to_vec();
                    sock.send_to(&last_sent, dest)
                        .await
                        .map_err(|e| unreachable(format!("sending ACK: {e}")))?;
                    in_window = 0;
                    gap_acked = true;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrq_carries_the_options() {
        let p = rrq(
            "images/a.bin",
            Some(TftpOptions {
                blksize: 1468,
                windowsize: 8,
                timeout: Duration::from_secs(2),
                retries: 3,
            }),
        );
        assert_eq!(
            p,
            b"\0\x01images/a.bin\0octet\0blksize\x001468\0tsize\x000\0timeout\x002\0windowsize\x008\0"
        );
        assert_eq!(rrq("a", None), b"\0\x01a\0octet\0");
    }

    #[test]
    fn oack_is_checked_against_the_request() {
        let asked = TftpOptions {
            blksize: 8192,
            windowsize: 16,
            ..TftpOptions::default()
        };
        let n = parse_oack(b"blksize\x001468\0tsize\x00100\0windowsize\x004\0", asked).unwrap();
        assert_eq!(
            n,
            Negotiated {
                blksize: 1468,
                windowsize: 4,
                tsize: Some(100)
            }
        );
        assert!(parse_oack(b"blksize\x009000\0", asked).is_err());
        assert!(parse_oack(b"windowsize\x0032\0", asked).is_err());
        assert!(parse_oack(b"multicast\x001\0", asked).is_err());
        assert!(parse_oack(b"tsize\0", asked).is_err());
    }
}
