//! Shared fixtures of the reconciler tests: a namespace on the real local
//! control plane, simulated devices on loopback, the controllers running
//! in-process, and bounded waits.

#![allow(dead_code)]

use std::time::Duration;

use cvk_controller::crd::{CiscoDevice, DeviceOperation};
use cvk_controller::reconcile::{ControllerSettings, run_controllers};
use cvk_hil::testing::{TestNamespace, install_project_crds, shared_control_plane};
use iosxe_sim::{Fleet, FleetConfig, FleetHandle, Profile};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// User name every simulated device expects.
pub const USER: &str = "cvk";
/// Password every simulated device expects.
pub const PASSWORD: &str = "sim-secret-pw";

/// A fresh client, the CRDs installed, and a namespace of its own.
pub async fn setup(prefix: &str) -> (Client, TestNamespace) {
    let client = shared_control_plane().client().await.expect("client");
    install_project_crds(&client).await.expect("CRDs");
    let ns = TestNamespace::create(&client, prefix)
        .await
        .expect("namespace");
    (client, ns)
}

/// The controllers, running until dropped.
pub struct Controllers {
    token: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Controllers {
    /// Starts `run_controllers` on this test's runtime.
    pub fn start(client: &Client, settings: ControllerSettings) -> Self {
        let token = CancellationToken::new();
        let task = tokio::spawn(run_controllers(client.clone(), settings, token.clone()));
        Self {
            token,
            task: Some(task),
        }
    }

    /// Stops them and waits (bounded) for the reconciles in flight.
    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("controllers stop within 30s")
                .expect("controller task");
        }
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// One reconciler test's world: a namespace of its own on the shared
/// control plane, a simulator fleet, the controllers, and CiscoDevices for
/// fleet members. Dropping it tears everything down (controllers cancelled,
/// namespace deleted), also when an assertion failed half-way;
/// [`Fixture::finish`] does the same gracefully, waiting for the
/// controllers to stop.
///
/// ```ignore
/// let fx = Fixture::builder("ops-all")
///     .fleet("c9300-17.18", 1)
///     .controllers(settings)
///     .device("sw1", 0)
///     .start()
///     .await;
/// let (client, ns) = (fx.client.clone(), fx.namespace());
/// ...
/// fx.finish().await;
/// ```
pub struct Fixture {
    /// A client of the shared control plane.
    pub client: Client,
    /// The simulators (`.fleet(..)`), if any.
    pub fleet: Option<FleetHandle>,
    ns: Option<TestNamespace>,
    ctl: Option<Controllers>,
}

type SettingsFn = Box<dyn FnOnce(&str) -> ControllerSettings + Send>;

/// Builds a [`Fixture`]; `start` creates, in order, the namespace, the
/// fleet, the controllers and the devices.
pub struct FixtureBuilder {
    prefix: String,
    fleet: Option<FleetConfig>,
    settings: Option<SettingsFn>,
    devices: Vec<(String, usize)>,
}

impl Fixture {
    /// A world whose namespace is named `<prefix>-<random>`.
    pub fn builder(prefix: &str) -> FixtureBuilder {
        FixtureBuilder {
            prefix: prefix.to_owned(),
            fleet: None,
            settings: None,
            devices: Vec::new(),
        }
    }

    /// The test's namespace.
    pub fn namespace(&self) -> &TestNamespace {
        self.ns
            .as_ref()
            .expect("the namespace lives as long as the fixture")
    }

    /// The simulators.
    pub fn fleet(&self) -> &FleetHandle {
        self.fleet.as_ref().expect("a fixture with a fleet")
    }

    /// Fleet member `i`.
    pub fn sim(&self, i: usize) -> iosxe_sim::DeviceHandle {
        self.fleet().nth(i).expect("fleet member")
    }

    /// Starts the controllers (again, after [`Fixture::stop_controllers`]).
    pub fn start_controllers(&mut self, settings: ControllerSettings) {
        assert!(self.ctl.is_none(), "the controllers are running already");
        self.ctl = Some(Controllers::start(&self.client, settings));
    }

    /// Stops the controllers and waits (bounded) for them.
    pub async fn stop_controllers(&mut self) {
        if let Some(ctl) = self.ctl.take() {
            ctl.stop().await;
        }
    }

    /// Stops the controllers gracefully, then deletes the namespace.
    pub async fn finish(mut self) {
        self.stop_controllers().await;
        if let Some(ns) = self.ns.take() {
            ns.delete().await;
        }
    }
}

impl FixtureBuilder {
    /// `n` simulated devices of `profile` (see [`fleet`]).
    pub fn fleet(self, profile: &str, n: usize) -> Self {
        self.fleet_config(fleet_config(profile, n))
    }

    /// A simulator fleet of this configuration (give it [`USER`] and
    /// [`PASSWORD`] for the devices' credential Secrets).
    pub fn fleet_config(mut self, cfg: FleetConfig) -> Self {
        self.fleet = Some(cfg);
        self
    }

    /// Runs the controllers with `settings(namespace)`.
    pub fn controllers(
        mut self,
        settings: impl FnOnce(&str) -> ControllerSettings + Send + 'static,
    ) -> Self {
        self.settings = Some(Box::new(settings));
        self
    }

    /// A CiscoDevice `name` (and its credential Secret) for fleet member
    /// `index`.
    pub fn device(mut self, name: &str, index: usize) -> Self {
        self.devices.push((name.to_owned(), index));
        self
    }

    /// Creates the world.
    pub async fn start(self) -> Fixture {
        let (client, ns) = setup(&self.prefix).await;
        let mut fx = Fixture {
            client,
            fleet: None,
            ns: Some(ns),
            ctl: None,
        };
        if let Some(cfg) = self.fleet {
            fx.fleet = Some(Fleet::start(cfg).await.expect("simulator"));
        }
        if let Some(settings) = self.settings {
            let s = settings(fx.namespace().name());
            fx.start_controllers(s);
        }
        for (name, index) in &self.devices {
            let port = fx.sim(*index).addr().port();
            device(&fx.client, fx.namespace().name(), name, port).await;
        }
        fx
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Cancelling is enough for the controllers (they stop at their next
        // await); the namespace needs an API call, made here when the
        // runtime allows blocking (multi-threaded test runtimes), else
        // spawned.
        drop(self.ctl.take());
        let Some(ns) = self.ns.take() else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
                tokio::task::block_in_place(|| rt.block_on(ns.delete()));
            } else {
                rt.spawn(ns.delete());
            }
        }
    }
}

/// Settings for tests: the namespace, the insecure listener allowed,
/// short deadlines.
pub fn settings(ns: &str) -> ControllerSettings {
    let mut s = ControllerSettings::for_namespace(ns);
    s.gnoi.insecure = true;
    s.gnoi.timeouts.control = Duration::from_secs(10);
    s.gnoi.timeouts.connect = Duration::from_secs(2);
    s.gnoi.timeouts.stream_idle = Duration::from_secs(10);
    s.probe_interval = Duration::from_secs(600);
    s
}

/// `n` simulated devices of `profile` on loopback (plaintext), with
/// credentials.
pub async fn fleet(profile: &str, n: usize) -> FleetHandle {
    Fleet::start(fleet_config(profile, n))
        .await
        .expect("simulator")
}

/// The configuration of [`fleet`].
pub fn fleet_config(profile: &str, n: usize) -> FleetConfig {
    FleetConfig::new(n, Profile::builtin(profile).expect("profile")).credentials(USER, PASSWORD)
}

/// Creates the credential Secret `<device>-credentials`.
pub async fn credentials_secret(client: &Client, ns: &str, device: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": format!("{device}-credentials") },
        "stringData": { "username": USER, "password": PASSWORD },
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("credential Secret");
}

/// Creates a CiscoDevice on the insecure listener at 127.0.0.1:`port`, with
/// its credential Secret.
pub async fn device(client: &Client, ns: &str, name: &str, port: u16) -> CiscoDevice {
    credentials_secret(client, ns, name).await;
    create(
        client,
        ns,
        json!({
            "apiVersion": "cisco.vk/v1alpha1", "kind": "CiscoDevice",
            "metadata": { "name": name },
            "spec": {
                "driver": "XE", "address": "127.0.0.1",
                "credentialSecretRef": { "name": format!("{name}-credentials") },
                "gnoi": { "port": port, "transportSecurity": "insecure" },
            },
        }),
    )
    .await
}

/// Creates an object from JSON.
pub async fn create<K>(client: &Client, ns: &str, value: serde_json::Value) -> K
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value).expect("object JSON");
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating {}: {e}", K::kind(&())))
}

/// Creates a DeviceOperation of `kind` on `device` with `gnoi` arguments.
pub async fn operation(
    client: &Client,
    ns: &str,
    name: &str,
    device: &str,
    kind: &str,
    gnoi: serde_json::Value,
) -> DeviceOperation {
    let mut op = json!({
        "apiVersion": "ops.cisco.vk/v1alpha1", "kind": "DeviceOperation",
        "metadata": { "name": name },
        "spec": { "deviceRef": { "name": device }, "operation": { "kind": kind } },
    });
    if !gnoi.is_null() {
        op["spec"]["operation"]["gnoi"] = gnoi;
    }
    create(client, ns, op).await
}

/// Polls `name` until `done` holds, at most `timeout`; panics with the last
/// state otherwise.
pub async fn wait_for<K, F>(api: &Api<K>, name: &str, timeout: Duration, mut done: F) -> K
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    F: FnMut(&K) -> bool,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Ok(Some(obj)) = api.get_opt(name).await {
            if done(&obj) {
                return obj;
            }
            last = Some(obj);
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{name}: condition not met within {timeout:?}; last state: {last:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `name` is gone.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while api.get_opt(name).await.expect("get").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} still exists after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the device is Ready.
pub async fn device_ready(client: &Client, ns: &str, name: &str) -> CiscoDevice {
    let api: Api<CiscoDevice> = Api::namespaced(client.clone(), ns);
    wait_for(&api, name, Duration::from_secs(30), |d| {
        d.status.as_ref().and_then(|s| s.phase)
            == Some(cvk_controller::crd::device::DevicePhase::Ready)
    })
    .await
}

/// Waits until the operation is terminal for its generation.
pub async fn finished(client: &Client, ns: &str, name: &str) -> DeviceOperation {
    let api: Api<DeviceOperation> = Api::namespaced(client.clone(), ns);
    wait_for(&api, name, Duration::from_secs(40), |o| {
        o.status.as_ref().is_some_and(|s| {
            s.phase.is_some_and(|p| p.is_terminal())
                && s.observed_generation == o.metadata.generation
        })
    })
    .await
}

/// The Ready condition's reason.
pub fn ready_reason(conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> String {
    conds
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

/// Events (events.k8s.io/v1) about the object named `name`.
pub async fn events_for(client: &Client, ns: &str, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// The Events about `name` once `done` holds for them, or as they are
/// after 10 s. A status and its Event are two writes, in that order: a test
/// that has seen a status waits for the Event rather than reading once.
pub async fn events_until(
    client: &Client,
    ns: &str,
    name: &str,
    done: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let evs = events_for(client, ns, name).await;
        if done(&evs) || tokio::time::Instant::now() >= deadline {
            return evs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for an Event about `name` with `reason`; returns all of them.
pub async fn events_with(client: &Client, ns: &str, name: &str, reason: &str) -> Vec<Event> {
    events_until(client, ns, name, |evs| {
        evs.iter().any(|e| e.reason.as_deref() == Some(reason))
    })
    .await
}

/// Journal entries of `dev` whose method starts with `prefix`
/// (`/gnoi.system.System/` for a whole service).
pub fn calls(dev: &iosxe_sim::DeviceHandle, prefix: &str) -> Vec<iosxe_sim::JournalEntry> {
    dev.journal()
        .into_iter()
        .filter(|e| e.method.starts_with(prefix))
        .collect()
}
