//! From a CiscoDevice (and the Secrets it names) to the device client's
//! [`DeviceTarget`].
//!
//! The rules live in the pure [`build_target`], tested with plain tables;
//! [`resolve_target`] only reads the Secrets.
//!
//! * Credentials: `spec.credentialSecretRef` names a Secret with `password`
//!   (required) and `username` (used when `spec.username` is unset).
//! * Transport: `spec.gnoi.transportSecurity` `tls` is always TLS; `insecure`
//!   (or `plaintext`) is refused unless the controller runs with
//!   `CISCO_VK_GNOI_INSECURE=1`; `auto` is TLS when `spec.tls.enabled`, and
//!   otherwise left to the client (insecure listener only with the gate).
//! * Trust: `spec.gnoi.tls.secretRef` names a Secret with `ca.crt` and
//!   optionally the pair `tls.crt` + `tls.key` (mutual TLS).
//! * Port: `spec.gnoi.port`, else a non-standard `spec.port` when
//!   `CISCO_VK_GNOI_PORT` is unset, else the client's inference.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::client::cli::{CliTarget, DEFAULT_SSH_PORT, HostKeys};
use crate::client::{Credentials, DeviceTarget, GnoiSettings, TlsMaterial, Transport};
use crate::crd::CiscoDeviceSpec;
use crate::crd::device::{Driver, TransportSecurity};

/// Key of the password in the credential Secret.
pub const PASSWORD_KEY: &str = "password";
/// Key of the optional user name in the credential Secret.
pub const USERNAME_KEY: &str = "username";
/// Key of the CA bundle in the gNOI TLS Secret.
pub const CA_KEY: &str = "ca.crt";
/// Key of the client certificate in the gNOI TLS Secret.
pub const CERT_KEY: &str = "tls.crt";
/// Key of the client key in the gNOI TLS Secret.
pub const KEY_KEY: &str = "tls.key";
/// Key of the optional enable secret in the credential Secret.
pub const ENABLE_SECRET_KEY: &str = "enableSecret";
/// Key of an OpenSSH private key in the credential Secret: the CLI logs in
/// with it (public-key authentication) before trying the password.
pub const SSH_PRIVATE_KEY_KEY: &str = "sshPrivateKey";
/// Key of the known_hosts text in spec.ssh.knownHostsSecretRef.
pub const KNOWN_HOSTS_KEY: &str = "knownHosts";
/// The OpenSSH spelling of [`KNOWN_HOSTS_KEY`], also accepted.
pub const KNOWN_HOSTS_KEY_ALT: &str = "known_hosts";

/// Why a CiscoDevice cannot be turned into a connection target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The driver is accepted by the API but not driven by this controller.
    #[error("driver {0:?} is not driven by this controller; only XE (and FAKE for tests) are")]
    UnsupportedDriver(Driver),
    /// A referenced Secret does not exist.
    #[error("Secret {name:?} ({purpose}) does not exist in the device's namespace")]
    SecretNotFound {
        /// Secret name.
        name: String,
        /// What it is for.
        purpose: &'static str,
    },
    /// A referenced Secret lacks a key.
    #[error("Secret {name:?} has no key {key:?} ({purpose})")]
    SecretKeyMissing {
        /// Secret name.
        name: String,
        /// The key.
        key: &'static str,
        /// What it is for.
        purpose: &'static str,
    },
    /// A Secret value is not UTF-8 text.
    #[error("Secret {name:?} key {key:?} is not UTF-8 text")]
    SecretKeyNotText {
        /// Secret name.
        name: String,
        /// The key.
        key: &'static str,
    },
    /// No user name anywhere.
    #[error(
        "no user name: set spec.username or the key username in Secret {0:?} (spec.credentialSecretRef)"
    )]
    NoUsername(String),
    /// A user name without the Secret that holds the password.
    #[error(
        "spec.username is set but spec.credentialSecretRef is not; the password comes from that Secret's key password"
    )]
    NoPasswordSecret,
    /// Only one half of the client certificate pair.
    #[error("Secret {0:?} must hold both tls.crt and tls.key for mutual TLS, or neither")]
    IncompleteClientPair(String),
    /// The insecure transport without the controller-wide gate.
    #[error(
        "spec.gnoi.transportSecurity insecure needs the controller to run with CISCO_VK_GNOI_INSECURE=1 (--gnoi-insecure, Helm gnoi.insecure=true)"
    )]
    InsecureRefused,
    /// A port outside 1-65535.
    #[error("{field} {value} is not a TCP port (1-65535)")]
    BadPort {
        /// The field.
        field: &'static str,
        /// Its value.
        value: i32,
    },
    /// A CLI kind on a device without host-key trust.
    #[error(
        "the device CLI needs host-key trust: set spec.ssh.knownHostsSecretRef (a Secret with key knownHosts), or spec.ssh.insecureAcceptAnyHostKey: true in a lab"
    )]
    NoSshTrust,
    /// A CLI kind on a device without credentials.
    #[error(
        "the device CLI logs in with the device credentials: set spec.credentialSecretRef (key password, and username or spec.username)"
    )]
    NoCliCredentials,
    /// The knownHosts text does not parse.
    #[error("Secret {name:?} key knownHosts: {detail}")]
    KnownHostsInvalid {
        /// Secret name.
        name: String,
        /// The bad line.
        detail: String,
    },
    /// The sshPrivateKey value is not an unencrypted OpenSSH private key.
    #[error(
        "Secret {name:?} key sshPrivateKey: {detail} (an unencrypted OpenSSH private key is expected)"
    )]
    SshKeyInvalid {
        /// Secret name.
        name: String,
        /// Why it did not parse.
        detail: String,
    },
    /// Reading a Secret failed.
    #[error("reading Secret {name:?}: {source}")]
    Kube {
        /// Secret name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl TargetError {
    /// Stable snake_case category (metric label).
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnsupportedDriver(_) => "unsupported_driver",
            Self::SecretNotFound { .. } => "secret_not_found",
            Self::SecretKeyMissing { .. } => "secret_key_missing",
            Self::SecretKeyNotText { .. } => "secret_key_not_text",
            Self::NoUsername(_) => "no_username",
            Self::NoPasswordSecret => "no_password_secret",
            Self::IncompleteClientPair(_) => "incomplete_client_pair",
            Self::InsecureRefused => "insecure_refused",
            Self::BadPort { .. } => "bad_port",
            Self::NoSshTrust => "no_ssh_trust",
            Self::NoCliCredentials => "no_cli_credentials",
            Self::KnownHostsInvalid { .. } => "known_hosts_invalid",
            Self::SshKeyInvalid { .. } => "ssh_key_invalid",
            Self::Kube { .. } => "kube",
        }
    }

    /// CamelCase reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnsupportedDriver(_) => "UnsupportedDriver",
            Self::SecretNotFound { .. } => "SecretNotFound",
            Self::SecretKeyMissing { .. } => "SecretKeyMissing",
            Self::SecretKeyNotText { .. } => "SecretKeyNotText",
            Self::NoUsername(_) => "NoUsername",
            Self::NoPasswordSecret => "NoPasswordSecret",
            Self::IncompleteClientPair(_) => "IncompleteClientPair",
            Self::InsecureRefused => "InsecureTransportRefused",
            Self::BadPort { .. } => "InvalidPort",
            Self::NoSshTrust => "SSHTrustNotConfigured",
            Self::NoCliCredentials => "NoCredentials",
            Self::KnownHostsInvalid { .. } => "SSHKnownHostsInvalid",
            Self::SshKeyInvalid { .. } => "SSHKeyInvalid",
            Self::Kube { .. } => "SecretReadFailed",
        }
    }

    /// Whether retrying later may succeed without a spec change (a Secret
    /// may be created or fixed, the API may answer).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::SecretNotFound { .. }
                | Self::SecretKeyMissing { .. }
                | Self::SecretKeyNotText { .. }
                | Self::NoUsername(_)
                | Self::IncompleteClientPair(_)
                | Self::KnownHostsInvalid { .. }
                | Self::SshKeyInvalid { .. }
                | Self::Kube { .. }
        )
    }
}

/// The keys of one Secret, as read from the API.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretData {
    /// Secret name.
    pub name: String,
    /// Decoded values.
    pub data: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretData")
            .field("name", &self.name)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretData {
    /// From an API Secret.
    pub fn from_secret(name: &str, s: &Secret) -> Self {
        Self {
            name: name.to_owned(),
            data: s
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
        }
    }

    fn text(&self, key: &'static str) -> Result<Option<String>, TargetError> {
        match self.data.get(key) {
            None => Ok(None),
            Some(v) => {
                String::from_utf8(v.clone())
                    .map(Some)
                    .map_err(|_| TargetError::SecretKeyNotText {
                        name: self.name.clone(),
                        key,
                    })
            }
        }
    }

    fn required(&self, key: &'static str, purpose: &'static str) -> Result<String, TargetError> {
        self.text(key)?
            .ok_or_else(|| TargetError::SecretKeyMissing {
                name: self.name.clone(),
                key,
                purpose,
            })
    }
}

fn port(field: &'static str, value: i32) -> Result<u16, TargetError> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(TargetError::BadPort { field, value })
}

/// Builds the target of device `key` (`namespace/name`) from its spec and
/// the Secrets it references (`None` where the spec references none).
pub fn build_target(
    key: &str,
    spec: &CiscoDeviceSpec,
    credentials: Option<&SecretData>,
    tls: Option<&SecretData>,
    settings: &GnoiSettings,
) -> Result<DeviceTarget, TargetError> {
    match spec.driver {
        Driver::Xe | Driver::Fake => {}
        other => return Err(TargetError::UnsupportedDriver(other)),
    }
    let mut target = DeviceTarget::new(key, spec.address.clone());

    target.port = match spec.gnoi.as_ref().and_then(|g| g.port) {
        Some(p) => Some(port("spec.gnoi.port", p)?),
        None => match spec.port {
            // The management port is RESTCONF's; only a non-standard one
            // says "this device listens somewhere unusual", as upstream.
            Some(p) if settings.port.is_none() && p != 80 && p != 443 => {
                Some(port("spec.port", p)?)
            }
            _ => None,
        },
    };

    target.transport = match spec.transport_security() {
        TransportSecurity::Tls => Transport::Tls,
        TransportSecurity::Insecure | TransportSecurity::Plaintext => {
            if settings.insecure {
                Transport::Insecure
            } else {
                return Err(TargetError::InsecureRefused);
            }
        }
        TransportSecurity::Auto => {
            if spec.tls_enabled() {
                Transport::Tls
            } else {
                Transport::Auto
            }
        }
    };

    target.credentials = match (credentials, &spec.username) {
        (None, None) => None,
        (None, Some(_)) => return Err(TargetError::NoPasswordSecret),
        (Some(secret), user) => {
            let password = secret.required(PASSWORD_KEY, "device password")?;
            let username = match user {
                Some(u) => u.clone(),
                None => secret
                    .text(USERNAME_KEY)?
                    .ok_or_else(|| TargetError::NoUsername(secret.name.clone()))?,
            };
            Some(Credentials { username, password })
        }
    };

    let mut material = TlsMaterial::default();
    if let Some(secret) = tls {
        material.ca_pem = Some(secret.required(CA_KEY, "CA bundle of the device certificate")?);
        match (secret.text(CERT_KEY)?, secret.text(KEY_KEY)?) {
            (Some(cert), Some(key)) => {
                material.client_cert_pem = Some(cert);
                material.client_key_pem = Some(key);
            }
            (None, None) => {}
            _ => return Err(TargetError::IncompleteClientPair(secret.name.clone())),
        }
    }
    material.server_name = spec
        .gnoi
        .as_ref()
        .and_then(|g| g.tls.as_ref())
        .and_then(|t| t.server_name.clone());
    // Skipping verification is honoured only where the schema allows it:
    // auto transport on a device whose management plane uses TLS.
    material.insecure_skip_verify = spec.transport_security() == TransportSecurity::Auto
        && spec
            .tls
            .as_ref()
            .is_some_and(|t| t.enabled && t.insecure_skip_verify);
    target.tls = material;
    Ok(target)
}

async fn read_secret(
    api: &Api<Secret>,
    name: &str,
    purpose: &'static str,
) -> Result<SecretData, TargetError> {
    match api.get_opt(name).await {
        Ok(Some(s)) => Ok(SecretData::from_secret(name, &s)),
        Ok(None) => Err(TargetError::SecretNotFound {
            name: name.to_owned(),
            purpose,
        }),
        Err(source) => Err(TargetError::Kube {
            name: name.to_owned(),
            source,
        }),
    }
}

/// The credential and gNOI TLS Secrets `spec` references.
async fn read_device_secrets(
    api: &Api<Secret>,
    spec: &CiscoDeviceSpec,
) -> Result<(Option<SecretData>, Option<SecretData>), TargetError> {
    let credentials = match &spec.credential_secret_ref {
        Some(r) => Some(read_secret(api, &r.name, "device credentials").await?),
        None => None,
    };
    let tls = match spec.gnoi.as_ref().and_then(|g| g.tls.as_ref()) {
        Some(t) => Some(read_secret(api, &t.secret_ref.name, "gNOI TLS trust").await?),
        None => None,
    };
    Ok((credentials, tls))
}

/// Reads the Secrets `spec` references (in `namespace`) and builds the
/// target of device `namespace/name`.
pub async fn resolve_target(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: &CiscoDeviceSpec,
    settings: &GnoiSettings,
) -> Result<DeviceTarget, TargetError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let (credentials, tls) = read_device_secrets(&api, spec).await?;
    build_target(
        &device_key(namespace, name),
        spec,
        credentials.as_ref(),
        tls.as_ref(),
        settings,
    )
}

/// Builds the CLI target of device `key` from its spec, its gNOI target
/// (address and credentials) and the knownHosts Secret (pure).
pub fn build_cli_target(
    key: &str,
    spec: &CiscoDeviceSpec,
    target: &DeviceTarget,
    credentials: Option<&SecretData>,
    known_hosts: Option<&SecretData>,
) -> Result<CliTarget, TargetError> {
    let ssh = spec.ssh.clone().unwrap_or_default();
    let port = match ssh.port {
        Some(p) => port("spec.ssh.port", p)?,
        None => DEFAULT_SSH_PORT,
    };
    let host_keys = match (&known_hosts, ssh.insecure_accept_any_host_key) {
        (Some(secret), _) => {
            let text = match secret.text(KNOWN_HOSTS_KEY)? {
                Some(t) => t,
                None => secret
                    .required(KNOWN_HOSTS_KEY_ALT, "SSH known hosts of the device CLI")
                    .map_err(|_| TargetError::SecretKeyMissing {
                        name: secret.name.clone(),
                        key: KNOWN_HOSTS_KEY,
                        purpose: "SSH known hosts of the device CLI",
                    })?,
            };
            crate::client::known_hosts::parse(&text).map_err(|e| {
                TargetError::KnownHostsInvalid {
                    name: secret.name.clone(),
                    detail: e.to_string(),
                }
            })?;
            HostKeys::Known(text)
        }
        (None, true) => HostKeys::InsecureAcceptAny,
        (None, false) => return Err(TargetError::NoSshTrust),
    };
    let creds = target
        .credentials
        .as_ref()
        .ok_or(TargetError::NoCliCredentials)?;
    let (enable_secret, private_key) = match credentials {
        Some(c) => (c.text(ENABLE_SECRET_KEY)?, c.text(SSH_PRIVATE_KEY_KEY)?),
        None => (None, None),
    };
    if let (Some(text), Some(c)) = (&private_key, credentials) {
        let key = russh::keys::PrivateKey::from_openssh(text).map_err(|e| {
            TargetError::SshKeyInvalid {
                name: c.name.clone(),
                detail: e.to_string(),
            }
        })?;
        if key.is_encrypted() {
            return Err(TargetError::SshKeyInvalid {
                name: c.name.clone(),
                detail: "the key is encrypted with a passphrase".into(),
            });
        }
    }
    Ok(CliTarget {
        device: key.to_owned(),
        host: target.address.clone(),
        port,
        username: creds.username.clone(),
        password: creds.password.clone(),
        enable_secret,
        private_key,
        host_keys,
    })
}

/// Reads the Secrets `spec` references and builds both the gNOI target and
/// the CLI target of device `namespace/name`.
pub async fn resolve_cli_target(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: &CiscoDeviceSpec,
    settings: &GnoiSettings,
) -> Result<CliTarget, TargetError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let (credentials, tls) = read_device_secrets(&api, spec).await?;
    let target = build_target(
        &device_key(namespace, name),
        spec,
        credentials.as_ref(),
        tls.as_ref(),
        settings,
    )?;
    let known = match spec
        .ssh
        .as_ref()
        .and_then(|s| s.known_hosts_secret_ref.as_ref())
    {
        Some(r) => Some(read_secret(&api, &r.name, "SSH known hosts of the device CLI").await?),
        None => None,
    };
    build_cli_target(
        &device_key(namespace, name),
        spec,
        &target,
        credentials.as_ref(),
        known.as_ref(),
    )
}

/// Key of a device in the client pool and the capability cache.
pub fn device_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

#[cfg(test)]
mod tests;
