//! Where the control plane's binaries come from.
//!
//! In order: `CVK_CONTROL_PLANE_BIN`, then `KUBEBUILDER_ASSETS` (the
//! directory controller-runtime's envtest uses), then the cache that
//! `harness/control-plane/build.sh` fills
//! (`${CVK_CACHE_DIR:-~/.cache/cvk}/control-plane/k8s-<v>-etcd-<v>/`). When
//! none has them and the build script is at hand (a source checkout), the
//! script is run once, with its progress on stderr.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::ControlPlaneError;

/// The pinned module file; the versions and the cache directory come from it.
const GO_MOD: &str = include_str!("../../control-plane/go.mod");

/// The build script, when this crate is used from a source checkout.
const BUILD_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/control-plane/build.sh");

/// The versions pinned in `harness/control-plane/go.mod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedVersions {
    /// `k8s.io/kubernetes`, for example `v1.36.3`.
    pub kubernetes: String,
    /// `go.etcd.io/etcd/server/v3`, for example `v3.6.8`.
    pub etcd: String,
}

impl PinnedVersions {
    /// Reads the versions from the checked-in `go.mod`.
    pub fn pinned() -> Self {
        Self::parse(GO_MOD).expect("harness/control-plane/go.mod pins kubernetes and etcd")
    }

    fn parse(go_mod: &str) -> Option<Self> {
        let find = |module: &str| {
            go_mod.lines().find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some(module))
                    .then(|| words.next())
                    .flatten()
                    .filter(|v| v.starts_with('v'))
                    .map(str::to_owned)
            })
        };
        Some(Self {
            kubernetes: find("k8s.io/kubernetes")?,
            etcd: find("go.etcd.io/etcd/server/v3")?,
        })
    }

    /// The cache directory name for these versions.
    pub fn dir_name(&self) -> String {
        format!("k8s-{}-etcd-{}", self.kubernetes, self.etcd)
    }
}

/// Paths of the binaries a control plane runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The directory holding them.
    pub dir: PathBuf,
    /// `kube-apiserver`.
    pub kube_apiserver: PathBuf,
    /// `etcd`.
    pub etcd: PathBuf,
    /// `kubectl`, when the directory has one (printed in instructions).
    pub kubectl: Option<PathBuf>,
}

impl Binaries {
    /// Finds the binaries, building them with the checked-in script if no
    /// configured directory or cache has them.
    pub fn locate_or_build() -> Result<Self, ControlPlaneError> {
        match Self::locate()? {
            Some(found) => Ok(found),
            None => {
                Self::build()?;
                Self::locate()?.ok_or_else(|| {
                    ControlPlaneError::Binaries(format!(
                        "{BUILD_SCRIPT} finished but {} has no kube-apiserver and etcd",
                        cache_dir().display()
                    ))
                })
            }
        }
    }

    /// Finds the binaries without building anything. An environment variable
    /// that names a directory without them is an error, not a fallback.
    pub fn locate() -> Result<Option<Self>, ControlPlaneError> {
        for var in ["CVK_CONTROL_PLANE_BIN", "KUBEBUILDER_ASSETS"] {
            if let Some(dir) = std::env::var_os(var).filter(|v| !v.is_empty()) {
                let dir = PathBuf::from(dir);
                return Self::in_dir(&dir).map(Some).ok_or_else(|| {
                    ControlPlaneError::Binaries(format!(
                        "{var}={} has no executable kube-apiserver and etcd",
                        dir.display()
                    ))
                });
            }
        }
        Ok(Self::in_dir(&cache_dir()))
    }

    fn in_dir(dir: &Path) -> Option<Self> {
        let kube_apiserver = dir.join("kube-apiserver");
        let etcd = dir.join("etcd");
        let kubectl = dir.join("kubectl");
        (kube_apiserver.is_file() && etcd.is_file()).then(|| Self {
            dir: dir.to_owned(),
            kube_apiserver,
            etcd,
            kubectl: kubectl.is_file().then_some(kubectl),
        })
    }

    fn build() -> Result<(), ControlPlaneError> {
        if !Path::new(BUILD_SCRIPT).is_file() {
            return Err(ControlPlaneError::Binaries(format!(
                "no kube-apiserver and etcd in {} and no build script at {BUILD_SCRIPT}; \
                 set CVK_CONTROL_PLANE_BIN to a directory that has them",
                cache_dir().display()
            )));
        }
        eprintln!("cvk-hil: building the local control plane binaries once ({BUILD_SCRIPT})");
        // stdout goes to stderr too: under `cargo test` it is then shown live.
        let status = Command::new("bash")
            .arg(BUILD_SCRIPT)
            .stdout(std::io::stderr())
            .status()
            .map_err(|e| {
                ControlPlaneError::Binaries(format!("running bash {BUILD_SCRIPT}: {e}"))
            })?;
        if status.success() {
            Ok(())
        } else {
            Err(ControlPlaneError::Binaries(format!(
                "bash {BUILD_SCRIPT} failed: {status}"
            )))
        }
    }
}

/// The cache directory `build.sh` fills for the pinned versions.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("CVK_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/".into());
            home.join(".cache/cvk")
        });
    base.join("control-plane")
        .join(PinnedVersions::pinned().dir_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pins_from_require_lines_not_tool_lines() {
        let go_mod = "module x\n\nrequire (\n\tgo.etcd.io/etcd/server/v3 v3.6.8 // indirect\n\
                      \tk8s.io/kubernetes v1.36.3\n)\n\ntool (\n\tgo.etcd.io/etcd/server/v3\n)\n";
        let v = PinnedVersions::parse(go_mod).unwrap();
        assert_eq!(v.kubernetes, "v1.36.3");
        assert_eq!(v.etcd, "v3.6.8");
        assert_eq!(v.dir_name(), "k8s-v1.36.3-etcd-v3.6.8");
    }

    #[test]
    fn the_checked_in_go_mod_pins_both() {
        let v = PinnedVersions::pinned();
        assert!(v.kubernetes.starts_with("v1."), "{v:?}");
        assert!(v.etcd.starts_with("v3."), "{v:?}");
    }
}
