//! Platform profiles: what a given model and release looks like from a
//! gNOI/gNMI client. Profiles are YAML data files (`sim/profiles/*.yaml`);
//! the ones shipped with the crate are embedded as built-ins.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// A gRPC service a profile can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// `gnoi.system.System`
    System,
    /// `gnoi.file.File`
    File,
    /// `gnoi.os.OS`
    Os,
    /// `gnoi.certificate.CertificateManagement`
    Cert,
    /// `gnoi.factory_reset.FactoryReset`
    FactoryReset,
    /// `gnmi.gNMI`
    Gnmi,
}

impl ServiceKind {
    /// Full gRPC service name.
    pub fn grpc_name(self) -> &'static str {
        match self {
            ServiceKind::System => "gnoi.system.System",
            ServiceKind::File => "gnoi.file.File",
            ServiceKind::Os => "gnoi.os.OS",
            ServiceKind::Cert => "gnoi.certificate.CertificateManagement",
            ServiceKind::FactoryReset => "gnoi.factory_reset.FactoryReset",
            ServiceKind::Gnmi => "gnmi.gNMI",
        }
    }
}

/// One filesystem (`flash:` and friends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilesystemSpec {
    /// Prefix including the colon, e.g. `flash:`.
    pub name: String,
    /// Other prefixes naming the same filesystem (`bootflash:`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Capacity in bytes.
    pub size: u64,
    /// Bytes used by things that are not files the simulator lists
    /// (the OS, logs); counts against free space.
    #[serde(default)]
    pub reserved: u64,
    /// Writes refused with PERMISSION_DENIED.
    #[serde(default)]
    pub read_only: bool,
}

/// A file present at boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedFile {
    /// Full path with prefix; `{version}` is replaced by the running version.
    pub path: String,
    /// Size in bytes (content is synthetic unless `text` is given).
    #[serde(default)]
    pub size: u64,
    /// Literal content; `{version}` is replaced.
    #[serde(default)]
    pub text: Option<String>,
    /// Octal permissions written as decimal digits (644).
    #[serde(default = "default_perm")]
    pub permissions: u32,
    /// Remove refused with PERMISSION_DENIED.
    #[serde(default)]
    pub protected: bool,
}

fn default_perm() -> u32 {
    644
}

/// A gNMI model advertised in Capabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Model name.
    pub name: String,
    /// Organisation.
    pub organization: String,
    /// Revision.
    pub version: String,
}

/// A platform profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Profile name (`c9300-17.18`).
    pub name: String,
    /// Hardware model (`C9300-48P`).
    pub model: String,
    /// Platform family written in image headers (`cat9k`).
    pub platform_family: String,
    /// Marketing release (`17.18.02`).
    pub release: String,
    /// Full build version of the running image, as Verify reports it.
    pub version: String,
    /// Version a factory reset with `factory_os` returns to.
    #[serde(default)]
    pub factory_version: Option<String>,
    /// gRPC services served; others answer UNIMPLEMENTED.
    pub services: Vec<ServiceKind>,
    /// The device answers SSH on its CLI port (false: no CLI listener, as
    /// on a switch with `transport input none` on its vtys).
    #[serde(default = "default_true")]
    pub ssh_cli: bool,
    /// OS.Activate reloads without answering: the connection closes.
    #[serde(default)]
    pub activate_closes_connection: bool,
    /// The running image is committed right after the boot that activated it
    /// (otherwise it stays uncommitted until committed through the control API).
    #[serde(default)]
    pub auto_commit: bool,
    /// How long a reboot keeps the listener down, in milliseconds.
    pub reboot_ms: u64,
    /// Reboot methods accepted (names of `gnoi.system.RebootMethod`).
    #[serde(default = "default_methods")]
    pub reboot_methods: Vec<String>,
    /// TransferProgress every this many bytes during OS.Install (0: never).
    #[serde(default)]
    pub install_progress_bytes: u64,
    /// Largest gRPC message accepted, in bytes.
    #[serde(default = "default_max_msg")]
    pub max_message_bytes: usize,
    /// Hash method on the last File.Get message: md5, sha256 or sha512.
    #[serde(default = "default_get_hash")]
    pub file_get_hash: String,
    /// FactoryReset.Start honours factory_os.
    #[serde(default)]
    pub factory_os_supported: bool,
    /// FactoryReset.Start honours zero_fill.
    #[serde(default)]
    pub zero_fill_supported: bool,
    /// Physical memory in bytes (gNMI).
    pub memory_bytes: u64,
    /// Memory in use at idle, bytes (gNMI).
    pub memory_used_bytes: u64,
    /// Filesystems.
    pub filesystems: Vec<FilesystemSpec>,
    /// Files present at first boot.
    #[serde(default)]
    pub files: Vec<SeedFile>,
    /// Process names running at boot.
    pub processes: Vec<String>,
    /// gNMI version string in Capabilities.
    #[serde(default = "default_gnmi_version")]
    pub gnmi_version: String,
    /// Models advertised by gNMI Capabilities.
    #[serde(default)]
    pub gnmi_models: Vec<ModelSpec>,
}

fn default_true() -> bool {
    true
}
fn default_methods() -> Vec<String> {
    vec!["COLD".into()]
}
fn default_max_msg() -> usize {
    16 << 20
}
fn default_get_hash() -> String {
    "md5".into()
}
fn default_gnmi_version() -> String {
    "0.4.0".into()
}

/// Errors loading a profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// No built-in of that name and no such file.
    #[error("unknown profile {0:?} (built-ins: {1})")]
    Unknown(String, String),
    /// Unreadable file.
    #[error("reading {0}: {1}")]
    Io(String, std::io::Error),
    /// Bad YAML or a rule broken.
    #[error("profile {0}: {1}")]
    Invalid(String, String),
}

const BUILTINS: &[(&str, &str)] = &[
    ("c9300-17.14", include_str!("../profiles/c9300-17.14.yaml")),
    ("c9300-17.18", include_str!("../profiles/c9300-17.18.yaml")),
    ("c9300-26.01", include_str!("../profiles/c9300-26.01.yaml")),
];

impl Profile {
    /// Names of the built-in profiles.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTINS.iter().map(|(n, _)| *n).collect()
    }

    /// A built-in profile by name.
    pub fn builtin(name: &str) -> Result<Profile, ProfileError> {
        let (_, text) = BUILTINS
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| ProfileError::Unknown(name.into(), Self::builtin_names().join(", ")))?;
        Self::from_yaml(name, text)
    }

    /// Parses and checks a profile.
    pub fn from_yaml(origin: &str, text: &str) -> Result<Profile, ProfileError> {
        let p: Profile = serde_yaml::from_str(text)
            .map_err(|e| ProfileError::Invalid(origin.into(), e.to_string()))?;
        p.check()
            .map_err(|e| ProfileError::Invalid(origin.into(), e))?;
        Ok(p)
    }

    /// A built-in name, or a path to a YAML file.
    pub fn load(name_or_path: &str) -> Result<Profile, ProfileError> {
        if BUILTINS.iter().any(|(n, _)| *n == name_or_path) {
            return Self::builtin(name_or_path);
        }
        let path = Path::new(name_or_path);
        if path.exists() {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ProfileError::Io(name_or_path.into(), e))?;
            return Self::from_yaml(name_or_path, &text);
        }
        Err(ProfileError::Unknown(
            name_or_path.into(),
            Self::builtin_names().join(", "),
        ))
    }

    /// Serves this service?
    pub fn serves(&self, s: ServiceKind) -> bool {
        self.services.contains(&s)
    }

    fn check(&self) -> Result<(), String> {
        if self.version.is_empty() {
            return Err("version is empty".into());
        }
        if !self.filesystems.iter().any(|f| f.name == "flash:") {
            return Err("a flash: filesystem is required".into());
        }
        for f in &self.filesystems {
            if !f.name.ends_with(':') {
                return Err(format!("filesystem {} must end with ':'", f.name));
            }
            if f.reserved > f.size {
                return Err(format!("filesystem {}: reserved exceeds size", f.name));
            }
        }
        if !["md5", "sha256", "sha512"].contains(&self.file_get_hash.as_str()) {
            return Err(format!(
                "file_get_hash {} is not md5, sha256 or sha512",
                self.file_get_hash
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_differ() {
        let p14 = Profile::builtin("c9300-17.14").unwrap();
        assert!(!p14.serves(ServiceKind::System) && !p14.serves(ServiceKind::File));
        assert!(p14.serves(ServiceKind::Os) && p14.serves(ServiceKind::Cert));
        let p18 = Profile::builtin("c9300-17.18").unwrap();
        assert_eq!(p18.version, "17.18.02.0.4112.1766116039");
        assert!(p18.serves(ServiceKind::System) && p18.serves(ServiceKind::File));
        let p26 = Profile::builtin("c9300-26.01").unwrap();
        assert_eq!(p26.version, "26.01.01.0.340");
        assert!(Profile::load("nope").is_err());
    }

    #[test]
    fn rejects_profile_without_flash() {
        let mut p = Profile::builtin("c9300-17.18").unwrap();
        p.filesystems.retain(|f| f.name != "flash:");
        let y = serde_yaml::to_string(&p).unwrap();
        assert!(Profile::from_yaml("x", &y).is_err());
    }
}
