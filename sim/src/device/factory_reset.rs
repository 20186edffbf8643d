//! FactoryReset.Start: wipes the writable filesystems (system files stay),
//! staged images and, unless retained, certificates, optionally selects the
//! factory version for the next boot, and seeds the profile's default files
//! again once only system files are left.

use bytes::Bytes;

use super::fs::{FileData, FileEntry, fill, resolve};
use super::{Device, State};
use crate::clock::wall_ns;
use crate::error::DomainError;

impl Device {
    // ---- factory reset --------------------------------------------------------

    /// FactoryReset.Start: wipes writable filesystems (system files stay),
    /// staged images and, unless `retain_certs`, certificates; optionally
    /// returns to the factory version. The caller schedules the reboot.
    pub fn factory_reset(&self, factory_os: bool, retain_certs: bool) -> Result<(), DomainError> {
        let mut st = self.lock();
        if st.install.is_some() {
            return Err(DomainError::FailedPrecondition(
                "an install is in progress".into(),
            ));
        }
        let mut spools = Vec::new();
        for fs in &mut st.fs {
            if fs.spec.read_only {
                continue;
            }
            fs.files.retain(|_, f| {
                if f.protected {
                    return true;
                }
                if let FileData::Spool(p) = &f.data {
                    spools.push(p.clone());
                }
                false
            });
        }
        st.staged.clear();
        if !retain_certs {
            st.certs.clear();
        }
        if factory_os && let Some(v) = self.profile.factory_version.clone() {
            st.boot_version = Some(v);
        }
        st.committed = true;
        st.previous_version = None;
        st.activation_fail_message.clear();
        let now = wall_ns();
        drop(st);
        for p in spools {
            let _ = std::fs::remove_file(p);
        }
        let mut st = self.lock();
        if st.fs.iter().all(|f| f.files.values().all(|e| e.protected)) {
            self.seed_unprotected(&mut st, now);
        }
        drop(st);
        self.touch();
        Ok(())
    }

    fn seed_unprotected(&self, st: &mut State, now: u64) {
        let version = st.running_version.clone();
        for f in self
            .profile
            .files
            .iter()
            .filter(|f| !f.protected && f.text.is_some())
        {
            let path = fill(&f.path, &version, &st.hostname);
            if let Ok(r) = resolve(&self.profile, &st.fs, &path) {
                let b = Bytes::from(fill(
                    f.text.as_deref().unwrap_or(""),
                    &version,
                    &st.hostname,
                ));
                let size = b.len() as u64;
                st.fs[r.fs].files.insert(
                    r.rel,
                    FileEntry {
                        data: FileData::Inline(b),
                        size,
                        permissions: f.permissions,
                        mtime_ns: now,
                        protected: false,
                    },
                );
            }
        }
    }
}
