//! What the client connects to ([`DeviceTarget`]) and how
//! ([`GnoiSettings`]), and the rules that turn both into an endpoint.
//!
//! Port rule: the device's explicit port, else `CISCO_VK_GNOI_PORT`, else
//! 50052 for the insecure gNxI listener and 9339 for the TLS one.
//!
//! Transport rule for [`Transport::Auto`]: TLS when the target carries TLS
//! material; otherwise plaintext when the insecure gate
//! (`CISCO_VK_GNOI_INSECURE`) is on; otherwise TLS verified against the
//! operating system's trust store (`/etc/ssl/certs` and friends, read through
//! rustls-native-certs). [`Transport::Tls`] is never downgraded by the
//! insecure gate, as upstream.

use std::fmt;
use std::time::Duration;

/// Port of the insecure IOS-XE gNxI listener (`gnxi server`).
pub const INSECURE_PORT: u16 = 50052;
/// Port of the TLS IOS-XE gNxI listener (`gnxi secure-server`).
pub const TLS_PORT: u16 = 9339;

/// Environment variable: use the insecure listener (`1`/`true`).
pub const ENV_INSECURE: &str = "CISCO_VK_GNOI_INSECURE";
/// Environment variable: pin the gNOI port (1-65535).
pub const ENV_PORT: &str = "CISCO_VK_GNOI_PORT";
/// Environment variable: switch gNOI off (`1`/`true`).
pub const ENV_DISABLED: &str = "CISCO_VK_GNOI_DISABLED";

/// How to secure the connection to one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Decide from the TLS material and the insecure gate (module docs).
    #[default]
    Auto,
    /// Always TLS.
    Tls,
    /// Always plaintext (the `gnxi server` listener).
    Insecure,
}

/// TLS material for one device, as PEM text.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TlsMaterial {
    /// CA bundle that signs the device certificate. Without it the system
    /// trust store is used.
    pub ca_pem: Option<String>,
    /// Client certificate chain for mTLS; needs `client_key_pem`.
    pub client_cert_pem: Option<String>,
    /// Client private key for mTLS; needs `client_cert_pem`.
    pub client_key_pem: Option<String>,
    /// Name to verify the device certificate against (and send as SNI)
    /// instead of the address, e.g. the trustpoint's subject name.
    pub server_name: Option<String>,
    /// **Lab only, unsafe:** accept any server certificate (encryption
    /// without authentication, as `spec.tls.insecureSkipVerify`). A CA given
    /// alongside is ignored.
    pub insecure_skip_verify: bool,
}

impl TlsMaterial {
    /// Whether anything is set (which makes `Transport::Auto` pick TLS).
    pub fn is_present(&self) -> bool {
        self.ca_pem.is_some()
            || self.client_cert_pem.is_some()
            || self.client_key_pem.is_some()
            || self.server_name.is_some()
            || self.insecure_skip_verify
    }
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_pem", &self.ca_pem.as_ref().map(|s| s.len()))
            .field(
                "client_cert_pem",
                &self.client_cert_pem.as_ref().map(|s| s.len()),
            )
            .field(
                "client_key_pem",
                &self.client_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .field("server_name", &self.server_name)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

/// Device credentials, sent as gRPC metadata `username` / `password` on
/// every call (as gnoic and IOS-XE's `gnxi secure-password-auth` expect).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One device as the client sees it: plain data, no Kubernetes types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTarget {
    /// Key of the device in the pool and the capability cache (the caller
    /// makes it unique, e.g. `namespace/name`).
    pub name: String,
    /// IP address (v4 or v6, without brackets) or host name.
    pub address: String,
    /// Explicit gNOI port (`spec.gnoi.port`).
    pub port: Option<u16>,
    /// Transport choice.
    pub transport: Transport,
    /// TLS material.
    pub tls: TlsMaterial,
    /// Credentials; `None` sends no metadata.
    pub credentials: Option<Credentials>,
}

impl DeviceTarget {
    /// A target with defaults: auto transport, no TLS material, no
    /// credentials.
    pub fn new(name: impl Into<String>, address: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            address: address.into(),
            port: None,
            transport: Transport::Auto,
            tls: TlsMaterial::default(),
            credentials: None,
        }
    }
}

/// Deadlines and connection policy, per workload class where it matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Deadline of every unary control RPC (upstream: 30 s).
    pub control: Duration,
    /// Deadline of OS.Activate (upstream: 90 s). IOS-XE usually closes the
    /// connection well before it.
    pub activate: Duration,
    /// Longest pause without progress on a bulk stream (Install, Put, Get)
    /// or a ping/traceroute stream before it is abandoned.
    pub stream_idle: Duration,
    /// How long to wait for Validated after TransferEnd (the device runs
    /// `install add`, which takes minutes on a Catalyst 9300).
    pub install_validation: Duration,
    /// TCP connect timeout.
    pub connect: Duration,
    /// First reconnect backoff after a failed connect.
    pub backoff_initial: Duration,
    /// Largest reconnect backoff.
    pub backoff_max: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            control: Duration::from_secs(30),
            activate: Duration::from_secs(90),
            stream_idle: Duration::from_secs(120),
            install_validation: Duration::from_secs(30 * 60),
            connect: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// Process-wide gNOI settings: the `CISCO_VK_GNOI_*` variables plus the
/// client's policy knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GnoiSettings {
    /// `CISCO_VK_GNOI_INSECURE`: `Auto` targets without TLS material use
    /// plaintext.
    pub insecure: bool,
    /// `CISCO_VK_GNOI_PORT`: port for targets without an explicit port.
    pub port: Option<u16>,
    /// `CISCO_VK_GNOI_DISABLED`: no client is built.
    pub disabled: bool,
    /// How long an UNIMPLEMENTED answer keeps a service marked unsupported.
    pub capability_ttl: Duration,
    /// Deadlines and backoff.
    pub timeouts: Timeouts,
    /// All workload classes of a device share one HTTP/2 connection instead
    /// of one connection per class. Off by default; it exists as the
    /// baseline of the control-latency benchmark (`BENCHMARKS.md`), which
    /// measures what the classed connections buy.
    pub single_channel: bool,
}

impl Default for GnoiSettings {
    fn default() -> Self {
        Self {
            insecure: false,
            port: None,
            disabled: false,
            capability_ttl: Duration::from_secs(600),
            timeouts: Timeouts::default(),
            single_channel: false,
        }
    }
}

/// A `CISCO_VK_GNOI_*` variable with a value the client cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?} is invalid: {rule}")]
pub struct SettingsError {
    /// The variable.
    pub variable: &'static str,
    /// Its value.
    pub value: String,
    /// What is expected.
    pub rule: &'static str,
}

fn parse_bool(variable: &'static str, value: &str) -> Result<bool, SettingsError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "off" => Ok(false),
        "1" | "true" | "yes" | "on" => Ok(true),
        _ => Err(SettingsError {
            variable,
            value: value.to_owned(),
            rule: "expected 1, true, 0 or false",
        }),
    }
}

impl GnoiSettings {
    /// Reads the `CISCO_VK_GNOI_*` variables from the process environment;
    /// everything else keeps its default.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env) with an explicit lookup (tests).
    pub fn from_lookup(
        lookup: impl Fn(&'static str) -> Option<String>,
    ) -> Result<Self, SettingsError> {
        let mut s = Self::default();
        if let Some(v) = lookup(ENV_INSECURE) {
            s.insecure = parse_bool(ENV_INSECURE, &v)?;
        }
        if let Some(v) = lookup(ENV_DISABLED) {
            s.disabled = parse_bool(ENV_DISABLED, &v)?;
        }
        if let Some(v) = lookup(ENV_PORT) {
            let t = v.trim();
            if !t.is_empty() {
                s.port = match t.parse::<u16>() {
                    Ok(p) if p != 0 => Some(p),
                    _ => {
                        return Err(SettingsError {
                            variable: ENV_PORT,
                            value: v,
                            rule: "expected a TCP port 1-65535, or empty to infer 50052/9339",
                        });
                    }
                };
            }
        }
        Ok(s)
    }

    /// Whether `target` is reached over TLS.
    pub fn uses_tls(&self, target: &DeviceTarget) -> bool {
        match target.transport {
            Transport::Tls => true,
            Transport::Insecure => false,
            Transport::Auto => target.tls.is_present() || !self.insecure,
        }
    }

    /// The port `target` is reached on (module docs).
    pub fn port_for(&self, target: &DeviceTarget) -> u16 {
        target
            .port
            .or(self.port)
            .unwrap_or(if self.uses_tls(target) {
                TLS_PORT
            } else {
                INSECURE_PORT
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&'static str, &str)]) -> impl Fn(&'static str) -> Option<String> {
        let pairs: Vec<(&'static str, String)> =
            pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn env_parsing() {
        let s = GnoiSettings::from_lookup(env(&[])).unwrap();
        assert_eq!(s, GnoiSettings::default());
        let s = GnoiSettings::from_lookup(env(&[
            (ENV_INSECURE, "1"),
            (ENV_PORT, "57400"),
            (ENV_DISABLED, "true"),
        ]))
        .unwrap();
        assert!(s.insecure && s.disabled);
        assert_eq!(s.port, Some(57400));
        let s = GnoiSettings::from_lookup(env(&[(ENV_PORT, " ")])).unwrap();
        assert_eq!(s.port, None);
        for bad in ["0", "65536", "abc", "-1"] {
            let e = GnoiSettings::from_lookup(env(&[(ENV_PORT, bad)])).unwrap_err();
            assert_eq!(e.variable, ENV_PORT);
            assert!(e.to_string().contains("CISCO_VK_GNOI_PORT"), "{e}");
        }
        let e = GnoiSettings::from_lookup(env(&[(ENV_INSECURE, "maybe")])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("CISCO_VK_GNOI_INSECURE=\"maybe\""),
            "{e}"
        );
    }

    #[test]
    fn port_and_transport_inference() {
        let plain = DeviceTarget::new("d", "192.0.2.1");
        let with_ca = DeviceTarget {
            tls: TlsMaterial {
                ca_pem: Some("x".into()),
                ..Default::default()
            },
            ..plain.clone()
        };
        let explicit = DeviceTarget {
            port: Some(6030),
            ..plain.clone()
        };
        let forced_tls = DeviceTarget {
            transport: Transport::Tls,
            ..plain.clone()
        };
        let forced_plain = DeviceTarget {
            transport: Transport::Insecure,
            ..plain.clone()
        };
        let secure = GnoiSettings::default();
        let insecure = GnoiSettings {
            insecure: true,
            ..Default::default()
        };
        let pinned = GnoiSettings {
            port: Some(7000),
            ..insecure.clone()
        };
        // (settings, target, tls, port)
        for (s, t, tls, port) in [
            (&secure, &plain, true, 9339),
            (&insecure, &plain, false, 50052),
            (&insecure, &with_ca, true, 9339),
            (&insecure, &forced_tls, true, 9339),
            (&secure, &forced_plain, false, 50052),
            (&insecure, &explicit, false, 6030),
            (&pinned, &plain, false, 7000),
            (&pinned, &explicit, false, 6030),
        ] {
            assert_eq!(s.uses_tls(t), tls, "{s:?} {t:?}");
            assert_eq!(s.port_for(t), port, "{s:?} {t:?}");
        }
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let t = DeviceTarget {
            credentials: Some(Credentials {
                username: "admin".into(),
                password: "hunter2".into(),
            }),
            tls: TlsMaterial {
                client_key_pem: Some("-----BEGIN PRIVATE KEY-----secret".into()),
                ..Default::default()
            },
            ..DeviceTarget::new("d", "a")
        };
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("secret"), "{dbg}");
        assert!(dbg.contains("admin"));
    }
}
