//! Parsing and checking image URLs.

use super::SourceError;

/// The schemes an image URL may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `http://`.
    Http,
    /// `https://` (rustls).
    Https,
    /// `tftp://` (RFC 1350 with option negotiation).
    Tftp,
    /// `ftp://` (passive, binary).
    Ftp,
    /// `scp://` (over SSH).
    Scp,
    /// `sftp://` (over SSH).
    Sftp,
}

impl Scheme {
    /// The scheme as written in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Tftp => "tftp",
            Scheme::Ftp => "ftp",
            Scheme::Scp => "scp",
            Scheme::Sftp => "sftp",
        }
    }

    /// The protocol's default port.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
            Scheme::Tftp => 69,
            Scheme::Ftp => 21,
            Scheme::Scp | Scheme::Sftp => 22,
        }
    }

    /// Whether the scheme runs over SSH.
    pub fn is_ssh(self) -> bool {
        matches!(self, Scheme::Scp | Scheme::Sftp)
    }
}

/// A checked image URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceUrl {
    /// Scheme.
    pub scheme: Scheme,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (the scheme's default when the URL has none).
    pub port: u16,
    /// Percent-decoded path, starting with `/`.
    pub path: String,
    /// `insecureSkipHostKey=true` (or `insecure=true`) in the query.
    pub insecure_skip_host_key: bool,
    /// The URL as given (it carries no userinfo).
    pub url: String,
}

impl SourceUrl {
    /// Parses and checks `url`: a supported scheme, a host, a path naming a
    /// file, no userinfo (credentials belong in the urlSecretRef Secret).
    pub fn parse(url: &str) -> Result<Self, SourceError> {
        let invalid = |reason: &str| SourceError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let scheme_end = url
            .find("://")
            .ok_or_else(|| invalid("must start with <scheme>://"))?;
        let scheme = match url[..scheme_end].to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "tftp" => Scheme::Tftp,
            "ftp" => Scheme::Ftp,
            "scp" => Scheme::Scp,
            "sftp" => Scheme::Sftp,
            other => {
                return Err(SourceError::UnsupportedScheme {
                    scheme: other.to_owned(),
                });
            }
        };
        let parsed = ::url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid(
                "must not carry user or password; put them in the urlSecretRef Secret",
            ));
        }
        let host = match parsed.host() {
            Some(::url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(::url::Host::Ipv4(a)) => a.to_string(),
            Some(::url::Host::Ipv6(a)) => a.to_string(),
            _ => return Err(invalid("has no host")),
        };
        let port = parsed.port().unwrap_or(scheme.default_port());
        let path = percent_decode(parsed.path()).map_err(|e| invalid(&e))?;
        if path.is_empty() || path == "/" || path.ends_with('/') {
            return Err(invalid(
                "must name a file (the path is empty or ends with '/')",
            ));
        }
        if path.contains('\0') || path.contains('\n') || path.contains('\r') {
            return Err(invalid("path must not contain NUL or line breaks"));
        }
        let mut insecure = false;
        for (k, v) in parsed.query_pairs() {
            if (k == "insecureSkipHostKey" || k == "insecure") && scheme.is_ssh() {
                insecure = match v.as_ref() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(invalid(&format!(
                            "query {k}='{other}' must be true or false"
                        )));
                    }
                };
            }
        }
        Ok(Self {
            scheme,
            host,
            port,
            path,
            insecure_skip_host_key: insecure,
            url: url.to_owned(),
        })
    }

    /// `host:port`, with IPv6 hosts in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The last path segment.
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// Host for allowlist comparison: lowercase, no trailing dot, IPs normalized.
pub(crate) fn canonical_host(h: &str) -> String {
    let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
    let bare = h.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => h,
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape at byte {i} of the path"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "path is not UTF-8 after percent-decoding".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme_with_default_ports() {
        for (url, scheme, port) in [
            ("http://h/a.bin", Scheme::Http, 80),
            ("https://h/a.bin", Scheme::Https, 443),
            ("tftp://h/a.bin", Scheme::Tftp, 69),
            ("ftp://h/a.bin", Scheme::Ftp, 21),
            ("scp://h/a.bin", Scheme::Scp, 22),
            ("SFTP://h/a.bin", Scheme::Sftp, 22),
            ("tftp://h:6969/images/a%20b.bin", Scheme::Tftp, 6969),
        ] {
            let u = SourceUrl::parse(url).unwrap();
            assert_eq!(
                (u.scheme, u.port, u.host.as_str()),
                (scheme, port, "h"),
                "{url}"
            );
        }
        let u = SourceUrl::parse("tftp://h:6969/images/a%20b.bin").unwrap();
        assert_eq!(u.path, "/images/a b.bin");
        assert_eq!(u.file_name(), "a b.bin");
        let v6 = SourceUrl::parse("sftp://[::1]:2222/x").unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.authority(), "[::1]:2222");
    }

    #[test]
    fn refuses_bad_urls_with_the_rule() {
        for (url, needle) in [
            ("gopher://h/a", "unsupported URL scheme 'gopher'"),
            ("h/a", "<scheme>://"),
            ("ftp://user:pw@h/a", "must not carry user"),
            ("http://h/", "must name a file"),
            ("http://h", "must name a file"),
            (
                "sftp://h/a?insecureSkipHostKey=yes",
                "must be true or false",
            ),
            ("http://h/a%zz", "percent escape"),
        ] {
            let e = SourceUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains(needle), "{url}: {e}");
        }
    }

    #[test]
    fn insecure_opt_out_only_for_ssh() {
        assert!(
            SourceUrl::parse("sftp://h/a?insecureSkipHostKey=true")
                .unwrap()
                .insecure_skip_host_key
        );
        assert!(
            SourceUrl::parse("scp://h/a?insecure=true")
                .unwrap()
                .insecure_skip_host_key
        );
        assert!(
            !SourceUrl::parse("http://h/a?insecureSkipHostKey=true")
                .unwrap()
                .insecure_skip_host_key
        );
    }

    #[test]
    fn canonical_hosts() {
        assert_eq!(canonical_host("Example.COM."), "example.com");
        assert_eq!(canonical_host("[0:0::1]"), "::1");
        assert_eq!(canonical_host("127.0.0.1"), "127.0.0.1");
    }
}
