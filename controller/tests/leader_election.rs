//! Leader election between in-process replicas on the real local control
//! plane: one leads, the other stands by; a released Lease hands over at
//! once, a killed leader's Lease is taken over after the lease duration, and
//! an upgrade that was half done when its leader died finishes on the other
//! replica with one OS.Activate.

mod reconcile_common;

use std::time::{Duration, Instant};

use cvk_controller::crd::IOSXESoftwareUpgrade;
use cvk_controller::crd::upgrade::UpgradePhase;
use cvk_controller::leader::{ElectionConfig, Elector, Timings};
use cvk_controller::reconcile::{ControllerSettings, run_elected};
use iosxe_sim::{Fleet, FleetConfig, ImageSpec, Profile};
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::{Api, Client};
use reconcile_common::*;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const LEASE: &str = "cvk-test-leader";
const NEW: &str = "17.18.03.0.4200.1770000000";

fn timings() -> Timings {
    Timings {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(300),
    }
}

fn election(ns: &str, identity: &str) -> ElectionConfig {
    ElectionConfig {
        namespace: ns.to_owned(),
        name: LEASE.to_owned(),
        identity: identity.to_owned(),
        timings: timings(),
    }
}

fn replica_settings(ns: &str, identity: &str) -> ControllerSettings {
    let mut s = settings(ns);
    s.identity = identity.to_owned();
    s.gates.software_upgrade = true;
    s.upgrade.chunk_bytes = 64 * 1024;
    s.upgrade.image_cache_dir =
        std::env::temp_dir().join(format!("cvk-leader-cache-{ns}-{identity}"));
    s
}

struct Replica {
    token: CancellationToken,
    task: JoinHandle<Result<(), cvk_controller::reconcile::RunError>>,
}

impl Replica {
    /// SIGTERM: the replica stops cleanly (releasing a Lease it holds).
    async fn stop(self, who: &str) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap_or_else(|_| panic!("{who} did not stop within 10s"))
            .expect("task")
            .expect("a clean stop");
    }
}

async fn time_op(client: &Client, ns: &str, name: &str) {
    operation(client, ns, name, "sw", "GNOITime", serde_json::Value::Null).await;
    finished(client, ns, name).await;
}

fn replica(client: &Client, ns: &str, identity: &str) -> Replica {
    let token = CancellationToken::new();
    let task = tokio::spawn(run_elected(
        client.clone(),
        replica_settings(ns, identity),
        election(ns, identity),
        token.clone(),
    ));
    Replica { token, task }
}

async fn holder(client: &Client, ns: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(LEASE)
        .await
        .expect("lease")
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

async fn wait_holder(client: &Client, ns: &str, want: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if holder(client, ns).await.as_deref() == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{want} did not hold the Lease within {within:?} (holder {:?})",
            holder(client, ns).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn elector_writes_are_compare_and_swap() {
    let (client, ns) = setup("leader-cas").await;
    let mut a = Elector::new(client.clone(), election(ns.name(), "a"));
    let mut b = Elector::new(client.clone(), election(ns.name(), "b"));
    assert_eq!(
        a.try_acquire_or_renew().await.unwrap(),
        cvk_controller::leader::Attempt::Leading
    );
    // b sees a live holder, however often it asks within the duration.
    for _ in 0..3 {
        assert_eq!(
            b.try_acquire_or_renew().await.unwrap(),
            cvk_controller::leader::Attempt::Standby { leader: "a".into() }
        );
    }
    // A renew by a moves the record; b's observation starts again.
    assert_eq!(
        a.try_acquire_or_renew().await.unwrap(),
        cvk_controller::leader::Attempt::Leading
    );
    // A stale write (an old resourceVersion) is refused by the API server.
    let api = Api::<Lease>::namespaced(client.clone(), ns.name());
    let mut stale = api.get(LEASE).await.unwrap();
    assert!(a.try_acquire_or_renew().await.is_ok());
    stale.spec.as_mut().unwrap().holder_identity = Some("thief".into());
    let err = api
        .replace(LEASE, &PostParams::default(), &stale)
        .await
        .expect_err("a write on an old resourceVersion");
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 409),
        "{err}"
    );
    // Released: b takes it at once.
    assert!(a.release().await.unwrap());
    assert_eq!(holder(&client, ns.name()).await, None);
    assert_eq!(
        b.try_acquire_or_renew().await.unwrap(),
        cvk_controller::leader::Attempt::Leading
    );
    // a no longer holds it: releasing leaves b's Lease alone.
    assert!(!a.release().await.unwrap());
    assert_eq!(holder(&client, ns.name()).await.as_deref(), Some("b"));
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_over_at_once_and_only_the_leader_reconciles() {
    let (client, ns) = setup("leader-handover").await;
    let fleet = fleet("c9300-17.18", 1).await;
    let sim = fleet.device("sim-0").unwrap();
    let a = replica(&client, ns.name(), "replica-a");
    wait_holder(&client, ns.name(), "replica-a", Duration::from_secs(10)).await;
    let b = replica(&client, ns.name(), "replica-b");
    device(&client, ns.name(), "sw", sim.addr().port()).await;
    device_ready(&client, ns.name(), "sw").await;
    time_op(&client, ns.name(), "t1").await;
    assert_eq!(
        holder(&client, ns.name()).await.as_deref(),
        Some("replica-a")
    );

    a.stop("replica a").await;
    // Released, so b takes over at its next retry, well before a lease
    // duration would have run out.
    let took = wait_holder(&client, ns.name(), "replica-b", Duration::from_secs(5)).await;
    assert!(took < timings().lease_duration, "hand-over took {took:?}");
    time_op(&client, ns.name(), "t2").await;
    b.stop("replica b").await;
    assert_eq!(holder(&client, ns.name()).await, None, "no Lease left held");
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_mid_upgrade_the_standby_finishes_it_with_one_activate() {
    let (client, ns) = setup("leader-failover").await;
    let cfg = FleetConfig::new(1, Profile::builtin("c9300-17.18").unwrap())
        .credentials(USER, PASSWORD)
        .reboot_ms(1500);
    let fleet = Fleet::start(cfg).await.expect("simulator");
    let sim = fleet.nth(0).unwrap();
    let mut bytes = Vec::new();
    ImageSpec::new(NEW, 600 * 1024)
        .write_to(&mut bytes)
        .unwrap();
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("img".into()),
            ..Default::default()
        },
        binary_data: Some([("image".to_owned(), ByteString(bytes))].into()),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();

    let a = replica(&client, ns.name(), "replica-a");
    wait_holder(&client, ns.name(), "replica-a", Duration::from_secs(10)).await;
    let b = replica(&client, ns.name(), "replica-b");
    device(&client, ns.name(), "sw", sim.addr().port()).await;
    let _: IOSXESoftwareUpgrade = create(
        &client,
        ns.name(),
        json!({
            "apiVersion": "ops.cisco.vk/v1alpha1", "kind": "IOSXESoftwareUpgrade",
            "metadata": { "name": "up" },
            "spec": {
                "deviceRef": { "name": "sw" },
                "imageSource": { "configMapRef": { "name": "img" } },
                "targetVersion": "17.18.03",
                "rebootTimeoutSeconds": 60,
            },
        }),
    )
    .await;
    // Kill the leader (no release, no grace: its task is dropped) the moment
    // the device has the OS.Activate.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sim.journal_for("/gnoi.os.OS/Activate").is_empty() {
        assert!(Instant::now() < deadline, "no OS.Activate within 60s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.task.abort();
    let _ = a.task.await;
    // The Lease still names the dead leader until it runs out.
    wait_holder(&client, ns.name(), "replica-b", Duration::from_secs(15)).await;

    let api: Api<IOSXESoftwareUpgrade> = Api::namespaced(client.clone(), ns.name());
    let up = wait_for(&api, "up", Duration::from_secs(90), |u| {
        u.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p.is_terminal())
    })
    .await;
    let st = up.status.clone().unwrap();
    assert_eq!(st.phase, Some(UpgradePhase::Succeeded), "{st:#?}");
    assert_eq!(
        sim.journal_for("/gnoi.os.OS/Activate").len(),
        1,
        "one OS.Activate across both replicas"
    );
    assert_eq!(sim.journal_for("/gnoi.os.OS/Install").len(), 1);
    b.stop("replica b").await;
    ns.delete().await;
}
