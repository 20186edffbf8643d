//! `ftp://`: a minimal passive, binary FTP client (RFC 959, EPSV from RFC
//! 2428). Anonymous without credentials. The data connection always goes
//! to the control connection's peer address (a PASV reply's host is
//! ignored, so a server cannot point us elsewhere).
//!
//! ```text
//!  220 <- connect   USER/PASS -> 230   TYPE I -> 200   SIZE f -> 213 n
//!  EPSV -> 229 (|||p|)  (or PASV -> 227)   connect data   RETR f -> 150
//!  data until EOF   <- 226   QUIT
//! ```

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::sink::Sink;
use super::url::SourceUrl;
use super::{SourceError, SourceSettings, UrlCredentials};

struct Control<'u> {
    url: &'u SourceUrl,
    settings: &'u SourceSettings,
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Control<'_> {
    fn unreachable(&self, detail: String) -> SourceError {
        SourceError::Unreachable {
            url: self.url.url.clone(),
            detail,
        }
    }

    fn protocol(&self, detail: String) -> SourceError {
        SourceError::Protocol {
            url: self.url.url.clone(),
            detail,
        }
    }

    /// Reads one (possibly multi-line) reply: (code, text).
    async fn reply(&mut self) -> Result<(u16, String), SourceError> {
        let mut text = String::new();
        let mut line = String::new();
        let mut first: Option<u16> = None;
        for _ in 0..1000 {
            line.clear();
            let n = tokio::time::timeout(self.settings.idle_timeout, self.r.read_line(&mut line))
                .await
                .map_err(|_| self.unreachable("no reply from the FTP server in time".into()))?
                .map_err(|e| self.unreachable(format!("reading a reply: {e}")))?;
            if n == 0 {
                return Err(self.unreachable("the FTP server closed the control connection".into()));
            }
            let l = line.trim_end_matches(['\r', '\n']);
            text.push_str(l);
            text.push('\n');
            let code = l.get(..3).and_then(|c| c.parse::<u16>().ok());
            match (first, code) {
                (None, Some(c)) => {
                    if l.as_bytes().get(3) != Some(&b'-') {
                        return Ok((c, text.trim_end().to_owned()));
                    }
                    first = Some(c);
                }
                (None, None) => return Err(self.protocol(format!("bad reply line '{l}'"))),
                (Some(f), Some(c)) if c == f && l.as_bytes().get(3) == Some(&b' ') => {
                    return Ok((f, text.trim_end().to_owned()));
                }
                _ => {}
            }
        }
        Err(self.protocol("reply longer than 1000 lines".into()))
    }

    async fn command(&mut self, cmd: &str) -> Result<(u16, String), SourceError> {
        self.w
            .write_all(format!("{cmd}\r\n").as_bytes())
            .await
            .map_err(|e| self.unreachable(format!("sending {}: {e}", verb(cmd))))?;
        self.reply().await
    }
}

fn verb(cmd: &str) -> &str {
    cmd.split(' ').next().unwrap_or(cmd)
}

async fn connect(addr: &str, settings: &SourceSettings) -> std::io::Result<TcpStream> {
    let s = tokio::time::timeout(settings.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Port from `229 Entering Extended Passive Mode (|||port|)`.
fn parse_epsv(text: &str) -> Option<u16> {
    let start = text.find('(')?;
    let inner = &text[start + 1..text[start..].find(')')? + start];
    let d = inner.chars().next()?;
    let parts: Vec<&str> = inner.split(d).collect();
    parts.get(3)?.parse().ok()
}

/// Port from `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)`.
fn parse_pasv(text: &str) -> Option<u16> {
    let start = text.find('(')?;
    let end = text[start..].find(')')? + start;
    let nums: Vec<u16> = text[start + 1..end]
        .split(',')
        .map(|n| n.trim().parse().ok())
        .collect::<Option<_>>()?;
    (nums.len() == 6 && nums[4] < 256 && nums[5] < 256).then(|| nums[4] * 256 + nums[5])
}

pub(crate) async fn fetch(
    url: &SourceUrl,
    credentials: Option<&UrlCredentials>,
    settings: &SourceSettings,
    sink: &mut Sink<'_>,
) -> Result<(), SourceError> {
    let tcp = connect(&url.authority(), settings)
        .await
        .map_err(|e| SourceError::Unreachable {
            url: url.url.clone(),
            detail: format!("connecting to {}: {e}", url.authority()),
        })?;
    let peer: SocketAddr = tcp
        .peer_addr()
        .map_err(|e| SourceError::io("FTP peer address", e))?;
    let (r, w) = tcp.into_split();
    let mut c = Control {
        url,
        settings,
        r: BufReader::new(r),
        w,
    };
    let (code, text) = c.reply().await?;
    if code != 220 {
        return Err(c.unreachable(format!("greeting: {text}")));
    }
    let (user, pass) = match credentials.and_then(|c| c.username.clone()) {
        Some(u) => (
            u,
            credentials
                .and_then(|c| c.password.clone())
                .unwrap_or_default(),
        ),
        None => ("anonymous".to_owned(), "cvk@".to_owned()),
    };
    let (code, text) = c.command(&format!("USER {user}")).await?;
    let code = match code {
        331 | 332 => c.command(&format!("PASS {pass}")).await?,
        _ => (code, text),
    };
    match code {
        (230 | 202, _) => {}
        (530, t) | (430, t) => {
            return Err(SourceError::AuthFailed {
                url: url.url.clone(),
                detail: format!("user '{user}': {t}"),
            });
        }
        (_, t) => return Err(c.protocol(format!("login: {t}"))),
    }
    let (code, text) = c.command("TYPE I").await?;
    if code != 200 {
        return Err(c.protocol(format!("TYPE I: {text}")));
    }
    // One leading '/' separates host and path; '%2F' makes it absolute.
    let path = url.path.strip_prefix('/').unwrap_or(&url.path);
    let size = match c.command(&format!("SIZE {path}")).await? {
        (213, t) => t.get(4..).and_then(|s| s.trim().parse::<u64>().ok()),
        (550, t) => {
            return Err(SourceError::NotFound {
                url: url.url.clone(),
                detail: t,
            });
        }
        _ => None,
    };
    if let Some(s) = size {
        sink.announce_total(s)?;
    }
    let port = match c.command("EPSV").await? {
        (229, t) => parse_epsv(&t).ok_or_else(|| c.protocol(format!("bad EPSV reply: {t}")))?,
        _ => match c.command("PASV").await? {
            (227, t) => parse_pasv(&t).ok_or_else(|| c.protocol(format!("bad PASV reply: {t}")))?,
            (_, t) => return Err(c.protocol(format!("passive mode refused: {t}"))),
        },
    };
    let data_addr = SocketAddr::new(peer.ip(), port).to_string();
    let mut data = connect(&data_addr, settings)
        .await
        .map_err(|e| c.unreachable(format!("data connection to {data_addr}: {e}")))?;
    match c.command(&format!("RETR {path}")).await? {
        (125 | 150, _) => {}
        (550, t) => {
            return Err(SourceError::NotFound {
                url: url.url.clone(),
                detail: t,
            });
        }
        (code @ (421 | 425 | 426 | 450 | 451), t) => {
            return Err(c.unreachable(format!("RETR {code}: {t}")));
        }
        (_, t) => return Err(c.protocol(format!("RETR: {t}"))),
    }
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = tokio::time::timeout(settings.idle_timeout, data.read(&mut buf))
            .await
            .map_err(|_| {
                c.unreachable(format!(
                    "no data for {} s after {} bytes",
                    settings.idle_timeout.as_secs(),
                    sink.written()
                ))
            })?
            .map_err(|e| {
                c.unreachable(format!(
                    "data connection broke after {} bytes: {e}",
                    sink.written()
                ))
            })?;
        if n == 0 {
            break;
        }
        sink.write(&buf[..n]).await?;
    }
    drop(data);
    let (code, text) = c.reply().await?;
    if code != 226 && code != 250 {
        return Err(c.unreachable(format!(
            "transfer ended with '{text}' after {} bytes",
            sink.written()
        )));
    }
    if let Some(s) = size
        && s != sink.written()
    {
        return Err(c.unreachable(format!(
            "data connection closed after {} of {s} bytes",
            sink.written()
        )));
    }
    let _ = c.command("QUIT").await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passive_replies() {
        assert_eq!(
            parse_epsv("229 Entering Extended Passive Mode (|||50123|)"),
            Some(50123)
        );
        assert_eq!(parse_epsv("229 bad"), None);
        assert_eq!(
            parse_pasv("227 Entering Passive Mode (127,0,0,1,195,80)"),
            Some(195 * 256 + 80)
        );
        assert_eq!(
            parse_pasv("227 Entering Passive Mode (127,0,0,1,300,80)"),
            None
        );
    }
}
