//! Reboots and processes: System.Reboot and CancelReboot, the reboot
//! state RebootStatus reports, the outage (listener down, slow and endless
//! reboot faults), what a boot changes (activated version or fallback,
//! system packages, boot time, fresh processes), and System.KillProcess.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::fs::FileData;
use super::{Device, Power, State};
use crate::clock::wall_ns;
use crate::error::DomainError;
use crate::faults::FaultKind;
use crate::profile::Profile;

/// A running process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Name.
    pub name: String,
    /// Start time, ns since the epoch.
    pub started_ns: u64,
}

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) when_ns: u64,
    pub(super) delay_ns: u64,
    pub(super) method: i32,
    pub(super) reason: String,
    pub(super) cancel: CancellationToken,
}

#[derive(Debug, Default)]
pub(super) struct RebootState {
    pub(super) pending: Option<Pending>,
    pub(super) in_outage: bool,
    pub(super) count: u32,
    pub(super) last_method: i32,
    pub(super) last_reason: String,
}

/// Reboot state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RebootInfo {
    /// A reboot is pending or in progress.
    pub active: bool,
    /// The listener is down right now.
    pub in_outage: bool,
    /// When the pending reboot starts, ns since the epoch.
    pub when_ns: u64,
    /// Delay requested, ns.
    pub wait_ns: u64,
    /// Reason / message.
    pub reason: String,
    /// Reboots since the simulator started.
    pub count: u32,
}

impl Device {
    // ---- reboot ---------------------------------------------------------

    /// System.Reboot: `delay_ns` from now. Refused while one is pending.
    pub fn request_reboot(
        self: &Arc<Self>,
        method: i32,
        delay_ns: u64,
        reason: &str,
    ) -> Result<(), DomainError> {
        let names = [
            "UNKNOWN",
            "COLD",
            "POWERDOWN",
            "HALT",
            "WARM",
            "NSF",
            "",
            "POWERUP",
        ];
        let name = names.get(method as usize).copied().unwrap_or("");
        if method == 0 {
            return Err(DomainError::InvalidArgument(
                "reboot method UNKNOWN; use COLD".into(),
            ));
        }
        if name.is_empty() || !self.profile.reboot_methods.iter().any(|m| m == name) {
            return Err(DomainError::Unimplemented(format!(
                "reboot method {method} is not supported on {} (supported: {})",
                self.profile.model,
                self.profile.reboot_methods.join(", ")
            )));
        }
        self.schedule_reboot(method, Duration::from_nanos(delay_ns), reason)
    }

    pub(crate) fn schedule_reboot(
        self: &Arc<Self>,
        method: i32,
        delay: Duration,
        reason: &str,
    ) -> Result<(), DomainError> {
        let mut st = self.lock();
        if st.reboot.in_outage {
            return Err(DomainError::Unavailable("the device is rebooting".into()));
        }
        if st.reboot.pending.is_some() {
            return Err(DomainError::FailedPrecondition(
                "a reboot is already pending".into(),
            ));
        }
        let cancel = CancellationToken::new();
        let delay_ns = delay.as_nanos() as u64;
        st.reboot.pending = Some(Pending {
            when_ns: wall_ns() + delay_ns,
            delay_ns,
            method,
            reason: reason.to_owned(),
            cancel: cancel.clone(),
        });
        drop(st);
        self.touch();
        let dev = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.cancelled() => return,
                _ = dev.shutdown.cancelled() => return,
            }
            dev.run_outage().await;
        });
        Ok(())
    }

    /// System.CancelReboot.
    pub fn cancel_reboot(&self) -> Result<(), DomainError> {
        let mut st = self.lock();
        if st.reboot.in_outage {
            return Err(DomainError::Unavailable("the reboot has started".into()));
        }
        let p = st
            .reboot
            .pending
            .take()
            .ok_or_else(|| DomainError::FailedPrecondition("no reboot is pending".into()))?;
        p.cancel.cancel();
        drop(st);
        self.touch();
        Ok(())
    }

    /// RebootStatus.
    pub fn reboot_info(&self) -> (RebootInfo, i32) {
        let snap = self.snapshot().reboot;
        let st = self.lock();
        let method = st
            .reboot
            .pending
            .as_ref()
            .map(|p| p.method)
            .unwrap_or(st.reboot.last_method);
        (snap, method)
    }

    async fn run_outage(self: Arc<Self>) {
        let dur = {
            let mut st = self.lock();
            let Some(p) = st.reboot.pending.take() else {
                return;
            };
            st.reboot.in_outage = true;
            st.reboot.count += 1;
            st.reboot.last_method = p.method;
            st.reboot.last_reason = p.reason;
            Duration::from_millis(st.reboot_ms)
        };
        tracing::info!(device = %self.name, "reboot: listener down");
        self.power.send_replace(Power::Down);
        self.touch();
        let dur = match self
            .faults
            .take_device(|k| matches!(k, FaultKind::SlowReboot { .. }))
        {
            Some(FaultKind::SlowReboot { ms }) => Duration::from_millis(ms),
            _ => dur,
        };
        // An endless reboot lasts until the fault is cleared (or the fleet stops).
        let mut fw = self.faults.subscribe();
        while self
            .faults
            .has_device(|k| matches!(k, FaultKind::EndlessReboot))
        {
            tokio::select! {
                r = fw.changed() => if r.is_err() { return },
                _ = self.shutdown.cancelled() => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(dur) => {}
            _ = self.shutdown.cancelled() => return,
        }
        self.boot();
        tracing::info!(device = %self.name, version = %self.lock().running_version, "reboot: back up");
        self.power.send_replace(Power::Up);
        self.touch();
    }

    /// Applies what a boot changes: the activated version (or the fallback),
    /// boot time, fresh processes.
    fn boot(&self) {
        let mut st = self.lock();
        let now = wall_ns();
        let issu = std::mem::take(&mut st.issu_pending);
        if let Some(next) = st.boot_version.take()
            && next != st.running_version
        {
            let old = st.running_version.clone();
            let corrupt = st.staged.get(&next).is_some_and(|s| s.corrupt);
            let forced = match self
                .faults
                .take_device(|k| matches!(k, FaultKind::BootOldImage { .. }))
            {
                Some(FaultKind::BootOldImage { message }) => Some(
                    message
                        .unwrap_or_else(|| format!("{next} failed to boot; rolled back to {old}")),
                ),
                _ => None,
            };
            let fail = forced.or_else(|| {
                corrupt.then(|| {
                    format!("{next} failed image verification at boot; rolled back to {old}")
                })
            });
            match fail {
                Some(msg) => {
                    st.activation_fail_message = msg;
                    st.last_activation_issu = false;
                }
                None => {
                    st.activation_fail_message.clear();
                    st.last_activation_issu = issu;
                    st.previous_version = Some(old.clone());
                    st.running_version = next.clone();
                    st.committed = self.profile.auto_commit;
                    // System packages follow the running version.
                    for fs in &mut st.fs {
                        let renames: Vec<String> = fs
                            .files
                            .iter()
                            .filter(|(k, f)| f.protected && k.contains(&old))
                            .map(|(k, _)| k.clone())
                            .collect();
                        for k in renames {
                            if let Some(mut e) = fs.files.remove(&k) {
                                e.mtime_ns = now;
                                if let FileData::Inline(b) = &e.data {
                                    let t = String::from_utf8_lossy(b).replace(&old, &next);
                                    e.size = t.len() as u64;
                                    e.data = FileData::Inline(Bytes::from(t));
                                }
                                fs.files.insert(k.replace(&old, &next), e);
                            }
                        }
                        for (k, e) in fs.files.iter_mut() {
                            if k == "packages.conf"
                                && let FileData::Inline(b) = &e.data
                            {
                                let t = String::from_utf8_lossy(b).replace(&old, &next);
                                e.size = t.len() as u64;
                                e.data = FileData::Inline(Bytes::from(t));
                                e.mtime_ns = now;
                            }
                        }
                    }
                }
            }
        }
        let skew = self.skew_ns(&st);
        st.boot_time_ns = (now as i64 + skew).max(0) as u64;
        st.boot_count += 1;
        st.reboot.in_outage = false;
        st.install = None;
        let p = self.profile.clone();
        st.processes.clear();
        start_processes(&mut st, &p, now);
    }

    // ---- processes --------------------------------------------------------

    /// System.KillProcess.
    pub fn kill_process(
        &self,
        pid: u32,
        name: &str,
        restart: bool,
    ) -> Result<Process, DomainError> {
        let mut st = self.lock();
        let found = st
            .processes
            .values()
            .find(|p| {
                (pid != 0 && p.pid == pid) || (pid == 0 && !name.is_empty() && p.name == name)
            })
            .cloned();
        let Some(p) = found else {
            return Err(DomainError::NotFound(if pid != 0 {
                format!("no process with pid {pid}")
            } else {
                format!("no process named {name:?}")
            }));
        };
        if pid != 0 && !name.is_empty() && p.name != name {
            return Err(DomainError::InvalidArgument(format!(
                "pid {pid} is {}, not {name}",
                p.name
            )));
        }
        st.processes.remove(&p.pid);
        let out = if restart {
            let pid = st.next_pid;
            st.next_pid += 1;
            let np = Process {
                pid,
                name: p.name.clone(),
                started_ns: wall_ns(),
            };
            st.processes.insert(pid, np.clone());
            np
        } else {
            p
        };
        drop(st);
        self.touch();
        Ok(out)
    }
}

pub(super) fn start_processes(st: &mut State, p: &Profile, now: u64) {
    for name in &p.processes {
        let pid = st.next_pid;
        st.next_pid += 1 + (pid % 7);
        st.processes.insert(
            pid,
            Process {
                pid,
                name: name.clone(),
                started_ns: now,
            },
        );
    }
}
