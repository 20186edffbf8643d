//! The CiscoDevice reconciler: resolve the connection target, probe the
//! device, write what was observed.
//!
//! ```text
//!  CiscoDevice + Secrets ─ resolve_target ─> DeviceTarget ─ pool ─> DeviceClient
//!  probe (ClassControl): System.Time, OS.Verify, gNMI Capabilities
//!  observe(previous status, probe, capability cache, now) ─> status   (pure)
//! ```
//!
//! The probe learns service support as a side effect: a System.Time answered
//! UNIMPLEMENTED (IOS-XE 17.14) marks System unsupported in the shared
//! capability cache, so a DeviceOperation of a System kind then fails fast
//! without another call. Status lists each gNOI service as Supported,
//! Unsupported or Unknown with the time it was learned.
//!
//! Phases: Ready (the device answered), Unreachable (no answer: connect
//! failure, UNAVAILABLE, deadline), Error (the configuration is unusable or
//! the device refused the credentials), Pending (gNOI disabled by
//! `CISCO_VK_GNOI_DISABLED`: nothing is probed). Probes repeat every
//! `--device-probe-interval-seconds` (sooner while not Ready).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action as KubeAction;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use super::engine::{self, write_status};
use super::target::{TargetError, device_key, resolve_target};
use super::{Context, ReconcileError, ns_name};
use crate::client::gnmi::GnmiCapabilities;
use crate::client::os::VerifyInfo;
use crate::client::system::DeviceTime;
use crate::client::{self, CapabilitySnapshot, ClientError, Support};
use crate::conditions::{self, DesiredCondition};
use crate::crd::common::ConditionStatus;
use crate::crd::device::{
    DevicePhase, GnmiStatus, GnoiService, GnoiServiceStatus, ServiceState, conditions as types,
};
use crate::crd::{CiscoDevice, CiscoDeviceStatus};
use crate::reason::{DeviceReason, client_reason};

/// Longest wait between probes of a device that is not Ready.
pub const RETRY_NOT_READY: Duration = Duration::from_secs(15);

/// What one probe returned.
#[derive(Debug)]
pub struct Probe {
    /// The endpoint probed, for messages.
    pub endpoint: String,
    /// System.Time.
    pub time: Result<DeviceTime, ClientError>,
    /// OS.Verify.
    pub verify: Result<VerifyInfo, ClientError>,
    /// gNMI Capabilities.
    pub gnmi: Result<GnmiCapabilities, ClientError>,
}

/// Whether an error proves the device answered (now, or when the capability
/// cache learned the service is missing).
fn answered(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Rpc { .. }
            | ClientError::Unauthenticated { .. }
            | ClientError::ServiceUnsupported { .. }
    )
}

fn time_of(t: SystemTime) -> Option<Time> {
    Timestamp::try_from(t).ok().map(Time)
}

/// The client's service knowledge as status entries (gNOI services only).
pub fn services_status(snapshot: &CapabilitySnapshot) -> Vec<GnoiServiceStatus> {
    snapshot
        .iter()
        .filter_map(|s| {
            let name = match s.service {
                client::GnoiService::System => GnoiService::System,
                client::GnoiService::File => GnoiService::File,
                client::GnoiService::Os => GnoiService::Os,
                client::GnoiService::Cert => GnoiService::Cert,
                client::GnoiService::FactoryReset => GnoiService::FactoryReset,
                client::GnoiService::Gnmi => return None,
            };
            let state = match s.support {
                Support::Supported => ServiceState::Supported,
                Support::Unsupported => ServiceState::Unsupported,
                Support::Unknown => ServiceState::Unknown,
            };
            Some(GnoiServiceStatus {
                name,
                state,
                observed_at: s.observed_at.and_then(time_of),
                message: (state == ServiceState::Unsupported)
                    .then(|| format!("{} answered UNIMPLEMENTED", s.service.proto_name())),
            })
        })
        .collect()
}

fn set(
    status: &mut CiscoDeviceStatus,
    type_: &'static str,
    ok: bool,
    reason: DeviceReason,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    conditions::merge(
        &mut status.conditions,
        DesiredCondition::new(type_, ConditionStatus::from(ok), reason.as_str(), message),
        generation,
        now,
    );
}

/// The status after a probe (pure).
pub fn observe(
    previous: &CiscoDeviceStatus,
    probe: &Probe,
    services: &CapabilitySnapshot,
    generation: Option<i64>,
    now: Timestamp,
) -> CiscoDeviceStatus {
    let mut s = previous.clone();
    s.observed_generation = generation;
    let errors: Vec<&ClientError> = [
        probe.time.as_ref().err(),
        probe.verify.as_ref().err(),
        probe.gnmi.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let reached = errors.len() < 3 || errors.iter().any(|e| answered(e));
    let refused = errors
        .iter()
        .find(|e| matches!(e, ClientError::Unauthenticated { .. }));

    if let Ok(v) = &probe.verify {
        s.running_version = Some(v.version.clone());
    }
    if let Ok(c) = &probe.gnmi {
        s.gnmi = Some(GnmiStatus {
            version: Some(c.gnmi_version.clone()).filter(|v| !v.is_empty()),
            encodings: c.encodings.clone(),
            model_count: Some(i32::try_from(c.models.len()).unwrap_or(i32::MAX)),
            observed_at: Some(Time(now)),
        });
    }
    s.gnoi_services = services_status(services);
    s.reachable = Some(reached);
    if reached {
        s.last_seen = Some(Time(now));
    }
    set(
        &mut s,
        types::GNOI_CONFIGURATION_READY,
        true,
        DeviceReason::Resolved,
        "credentials and trust material resolved".into(),
        generation,
        now,
    );

    let unsupported: Vec<&str> = s
        .gnoi_services
        .iter()
        .filter(|x| x.state == ServiceState::Unsupported)
        .map(|x| x.name.as_str())
        .collect();
    let (phase, reason, message) = if let Some(e) = refused {
        (
            DevicePhase::Error,
            DeviceReason::Client(client_reason(e)),
            format!("{} refused the credentials: {e}", probe.endpoint),
        )
    } else if reached {
        let mut m = format!("answering at {}", probe.endpoint);
        if let Some(v) = &s.running_version {
            m.push_str(&format!("; running {v}"));
        }
        if !unsupported.is_empty() {
            m.push_str(&format!("; gNOI {} unsupported", unsupported.join(", ")));
        }
        (DevicePhase::Ready, DeviceReason::Answered, m)
    } else {
        let first = errors[0];
        (
            DevicePhase::Unreachable,
            DeviceReason::Client(client_reason(first)),
            format!("{} did not answer: {first}", probe.endpoint),
        )
    };
    set(
        &mut s,
        types::REACHABLE,
        reached,
        if reached {
            DeviceReason::Answered
        } else {
            reason
        },
        if reached {
            format!("answering at {}", probe.endpoint)
        } else {
            message.clone()
        },
        generation,
        now,
    );
    set(
        &mut s,
        types::READY,
        phase == DevicePhase::Ready,
        reason,
        message.clone(),
        generation,
        now,
    );
    s.phase = Some(phase);
    s.message = Some(message);
    s
}

/// The status when the device cannot be configured (pure).
pub fn not_configured(
    previous: &CiscoDeviceStatus,
    reason: DeviceReason,
    message: String,
    phase: DevicePhase,
    generation: Option<i64>,
    now: Timestamp,
) -> CiscoDeviceStatus {
    let mut s = previous.clone();
    s.observed_generation = generation;
    s.phase = Some(phase);
    s.reachable = None;
    set(
        &mut s,
        types::GNOI_CONFIGURATION_READY,
        phase != DevicePhase::Error,
        reason,
        message.clone(),
        generation,
        now,
    );
    set(
        &mut s,
        types::READY,
        false,
        reason,
        message.clone(),
        generation,
        now,
    );
    s.message = Some(message);
    s
}

/// How far a reconcile got towards the device.
#[derive(Debug)]
pub enum Reach {
    /// gNOI is disabled in the controller's configuration.
    Disabled,
    /// The CiscoDevice and its Secrets do not make a target.
    Unconfigured(TargetError),
    /// The target is unusable for a client (TLS material, address).
    NoClient(ClientError),
    /// Probed at the time given, with the capability cache after the probe
    /// (boxed: the answers are large beside the other variants).
    Probed(Box<(Probe, CapabilitySnapshot)>, Timestamp),
}

/// The device's status and when to probe next (`None`: only when the
/// object changes), from how far the reconcile got (pure). A device that
/// is Ready is probed every `interval`; one that is not, at least every
/// [`RETRY_NOT_READY`]; a configuration error waits for a change unless it
/// may clear by itself (a Secret not there yet); disabled gNOI waits for a
/// change.
pub fn decide(
    previous: &CiscoDeviceStatus,
    reach: Reach,
    generation: Option<i64>,
    now: Timestamp,
    interval: Duration,
) -> (CiscoDeviceStatus, Option<Duration>) {
    let not_ready = interval.min(RETRY_NOT_READY);
    match reach {
        Reach::Disabled => (
            not_configured(
                previous,
                DeviceReason::Client(client_reason(&ClientError::Disabled)),
                ClientError::Disabled.to_string(),
                DevicePhase::Pending,
                generation,
                now,
            ),
            None,
        ),
        Reach::Unconfigured(e) => {
            let retry = e.is_transient().then_some(not_ready);
            (config_error(previous, &e, generation, now), retry)
        }
        Reach::NoClient(e) => (
            not_configured(
                previous,
                DeviceReason::Client(client_reason(&e)),
                e.to_string(),
                DevicePhase::Error,
                generation,
                now,
            ),
            Some(not_ready),
        ),
        Reach::Probed(probed, at) => {
            let (p, services) = *probed;
            let s = observe(previous, &p, &services, generation, at);
            let next = if s.phase == Some(DevicePhase::Ready) {
                interval
            } else {
                not_ready
            };
            (s, Some(next))
        }
    }
}

async fn probe(client: &client::DeviceClient) -> Probe {
    Probe {
        endpoint: client.endpoint().to_string(),
        time: client.time().await,
        verify: client.os_verify().await,
        gnmi: client.gnmi_capabilities().await,
    }
}

fn transition_event(phase: DevicePhase) -> EventType {
    match phase {
        DevicePhase::Ready | DevicePhase::Pending => EventType::Normal,
        DevicePhase::Unreachable | DevicePhase::Error => EventType::Warning,
    }
}

/// Reconciles one CiscoDevice.
pub async fn reconcile(
    dev: Arc<CiscoDevice>,
    ctx: Arc<Context>,
) -> Result<KubeAction, ReconcileError> {
    let (ns, name) = ns_name(dev.as_ref())?;
    engine::record_device(&name);
    let key = device_key(&ns, &name);
    let api: Api<CiscoDevice> = Api::namespaced(ctx.client.clone(), &ns);
    let fresh = match api.get_opt(&name).await? {
        Some(d) if d.metadata.deletion_timestamp.is_none() => d,
        _ => {
            ctx.pool.remove(&key);
            ctx.forget_probe(&key);
            return Ok(KubeAction::await_change());
        }
    };
    let generation = fresh.metadata.generation;
    if let Some((g, due)) = ctx.last_probe(&key)
        && g == generation
    {
        let now = Instant::now();
        if now < due {
            return Ok(KubeAction::requeue(due - now));
        }
    }

    let previous = fresh.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let reached = if ctx.settings.gnoi.disabled {
        Reach::Disabled
    } else {
        match resolve_target(&ctx.client, &ns, &name, &fresh.spec, &ctx.settings.gnoi).await {
            Err(e) => Reach::Unconfigured(e),
            Ok(target) => match ctx.pool.get_or_create(&target) {
                Err(e) => Reach::NoClient(e),
                Ok(client) => {
                    let p = probe(&client).await;
                    Reach::Probed(Box::new((p, client.capabilities())), Timestamp::now())
                }
            },
        }
    };
    let (status, next) = decide(
        &previous,
        reached,
        generation,
        now,
        ctx.settings.probe_interval,
    );

    if status != previous && write_status(&api, &fresh, status.clone()).await?.is_none() {
        // Written by someone else since it was read: probe again on the
        // fresh object.
        return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
    }
    ctx.record_probe(
        &key,
        generation,
        next.unwrap_or(Duration::from_secs(86_400)),
    );
    if status.phase != previous.phase
        && let Some(phase) = status.phase
    {
        let reason = status
            .conditions
            .iter()
            .find(|c| c.type_ == types::READY)
            .map(|c| c.reason.clone())
            .unwrap_or_default();
        tracing::info!(namespace = %ns, device = %fresh.name_any(), ?phase, %reason, "device phase changed");
        ctx.publish(
            &fresh,
            transition_event(phase),
            &reason,
            "Probe",
            status.message.clone().unwrap_or_default(),
        )
        .await;
    }
    Ok(match next {
        Some(d) => KubeAction::requeue(d),
        None => KubeAction::await_change(),
    })
}

fn config_error(
    previous: &CiscoDeviceStatus,
    e: &TargetError,
    generation: Option<i64>,
    now: Timestamp,
) -> CiscoDeviceStatus {
    not_configured(
        previous,
        DeviceReason::Target(e.reason()),
        e.to_string(),
        DevicePhase::Error,
        generation,
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ServiceSupport, Support};
    use tonic::Code;

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn verify(v: &str) -> Result<VerifyInfo, ClientError> {
        Ok(VerifyInfo {
            version: v.into(),
            activation_fail_message: String::new(),
            standby: None,
            individual_supervisor_install: false,
        })
    }

    fn gnmi() -> Result<GnmiCapabilities, ClientError> {
        Ok(GnmiCapabilities {
            gnmi_version: "0.4.0".into(),
            encodings: vec!["JSON_IETF".into()],
            models: vec![],
        })
    }

    fn down() -> ClientError {
        ClientError::Unavailable {
            message: "connection refused".into(),
            retry_after: None,
        }
    }

    fn snapshot(system: Support) -> CapabilitySnapshot {
        client::GnoiService::ALL
            .iter()
            .map(|&service| ServiceSupport {
                service,
                support: if service == client::GnoiService::System {
                    system
                } else {
                    Support::Unknown
                },
                observed_at: (system != Support::Unknown).then(SystemTime::now),
            })
            .collect()
    }

    #[test]
    fn a_device_is_judged_by_how_far_the_reconcile_got() {
        let probe = |time, verify, gnmi| {
            Reach::Probed(
                Box::new((
                    Probe {
                        endpoint: "http://127.0.0.1:50052".into(),
                        time,
                        verify,
                        gnmi,
                    },
                    snapshot(Support::Unknown),
                )),
                now(),
            )
        };
        let refused = || ClientError::Unauthenticated {
            code: Code::Unauthenticated,
            message: "bad password".into(),
        };
        let rpc = || ClientError::Rpc {
            service: client::GnoiService::System,
            method: "Time",
            code: Code::Internal,
            message: "boom".into(),
        };
        let ok_time = || Ok(DeviceTime { unix_nanos: 1 });
        let interval = Duration::from_secs(60);
        let secs = |s| Some(Duration::from_secs(s));
        // (how far it got, phase, Ready reason, next probe)
        let table: Vec<(Reach, DevicePhase, &str, Option<Duration>)> = vec![
            (Reach::Disabled, DevicePhase::Pending, "GNOIDisabled", None),
            (
                Reach::Unconfigured(TargetError::SecretNotFound {
                    name: "creds".into(),
                    purpose: "credentials",
                }),
                DevicePhase::Error,
                "SecretNotFound",
                secs(15),
            ),
            (
                Reach::Unconfigured(TargetError::InsecureRefused),
                DevicePhase::Error,
                "InsecureTransportRefused",
                None,
            ),
            (
                Reach::NoClient(ClientError::Tls("no CA".into())),
                DevicePhase::Error,
                "TLSError",
                secs(15),
            ),
            (
                probe(ok_time(), verify("17.18.01"), gnmi()),
                DevicePhase::Ready,
                "Answered",
                secs(60),
            ),
            // Any answer, even an error, proves the device is there.
            (
                probe(Err(rpc()), Err(down()), Err(down())),
                DevicePhase::Ready,
                "Answered",
                secs(60),
            ),
            (
                probe(Err(down()), Err(down()), Err(down())),
                DevicePhase::Unreachable,
                "Unavailable",
                secs(15),
            ),
            (
                probe(Err(refused()), Err(refused()), gnmi()),
                DevicePhase::Error,
                "Unauthenticated",
                secs(15),
            ),
        ];
        for (reach, phase, reason, next) in table {
            let what = format!("{reach:?}");
            let (s, got_next) = decide(
                &CiscoDeviceStatus::default(),
                reach,
                Some(1),
                now(),
                interval,
            );
            assert_eq!(s.phase, Some(phase), "{what}");
            let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
            assert_eq!(ready.reason, reason, "{what}");
            assert_eq!(got_next, next, "{what}");
        }
    }

    #[test]
    fn a_17_14_device_is_ready_with_system_unsupported() {
        let p = Probe {
            endpoint: "http://127.0.0.1:50052".into(),
            time: Err(ClientError::ServiceUnsupported {
                service: client::GnoiService::System,
                detail: "unimplemented".into(),
            }),
            verify: verify("17.14.01.0.1590.1711400034"),
            gnmi: gnmi(),
        };
        let s = observe(
            &CiscoDeviceStatus::default(),
            &p,
            &snapshot(Support::Unsupported),
            Some(1),
            now(),
        );
        assert_eq!(s.phase, Some(DevicePhase::Ready));
        assert_eq!(s.reachable, Some(true));
        assert_eq!(
            s.running_version.as_deref(),
            Some("17.14.01.0.1590.1711400034")
        );
        assert_eq!(s.last_seen, Some(Time(now())));
        assert_eq!(s.gnoi_services.len(), 5, "gNMI is not a gNOI service");
        let sys = s
            .gnoi_services
            .iter()
            .find(|x| x.name == GnoiService::System)
            .unwrap();
        assert_eq!(sys.state, ServiceState::Unsupported);
        assert!(sys.observed_at.is_some());
        assert!(
            s.message
                .as_deref()
                .unwrap()
                .contains("gNOI System unsupported")
        );
        assert_eq!(s.gnmi.as_ref().unwrap().version.as_deref(), Some("0.4.0"));
        assert!(crate::crd::common::is_condition_true(
            &s.conditions,
            "Ready"
        ));
    }

    #[test]
    fn no_answer_is_unreachable_and_keeps_what_was_seen() {
        let seen = CiscoDeviceStatus {
            running_version: Some("17.18.01".into()),
            last_seen: Some(Time(Timestamp::from_second(1).unwrap())),
            ..Default::default()
        };
        let p = Probe {
            endpoint: "https://192.0.2.1:9339".into(),
            time: Err(down()),
            verify: Err(down()),
            gnmi: Err(ClientError::DeadlineExceeded {
                rpc: "gnmi.gNMI/Capabilities",
                after: Duration::from_secs(1),
            }),
        };
        let s = observe(&seen, &p, &snapshot(Support::Unknown), Some(2), now());
        assert_eq!(s.phase, Some(DevicePhase::Unreachable));
        assert_eq!(s.reachable, Some(false));
        assert_eq!(s.running_version, seen.running_version);
        assert_eq!(s.last_seen, seen.last_seen);
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Unavailable")
        );
    }

    #[test]
    fn refused_credentials_are_an_error() {
        let refused = || ClientError::Unauthenticated {
            code: Code::Unauthenticated,
            message: "bad password".into(),
        };
        let p = Probe {
            endpoint: "e".into(),
            time: Err(refused()),
            verify: Err(refused()),
            gnmi: Err(refused()),
        };
        let s = observe(
            &CiscoDeviceStatus::default(),
            &p,
            &snapshot(Support::Unknown),
            None,
            now(),
        );
        assert_eq!(s.phase, Some(DevicePhase::Error));
        assert_eq!(s.reachable, Some(true));
        assert!(s.message.unwrap().contains("refused the credentials"));
    }

    #[test]
    fn configuration_errors_name_their_reason() {
        let e = TargetError::InsecureRefused;
        let s = config_error(&CiscoDeviceStatus::default(), &e, Some(1), now());
        assert_eq!(s.phase, Some(DevicePhase::Error));
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == types::GNOI_CONFIGURATION_READY)
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "InsecureTransportRefused")
        );
        assert!(s.message.unwrap().contains("CISCO_VK_GNOI_INSECURE=1"));
    }
}
