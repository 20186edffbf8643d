//! End to end on the kind cluster of `cvk-hil cluster kind up`, against the
//! controller the Helm chart installed (two leader-elected replicas in
//! `cvk-system`, serving `cvk-lab`) and the simulated fleet and image
//! servers running as pods behind Services:
//!
//! 1. smoke: the CiscoDevices become Ready, read-only DeviceOperations
//!    succeed, the gated write-class action is refused, and the simulators'
//!    journals show what reached them;
//! 2. a ShowCommand over SSH to a simulator pod, host key pinned;
//! 3. the specification's walkthrough TFTP manifest
//!    (`kind/examples/iosxesoftwareupgrade-tftp.yaml`) with only names and
//!    digest changed, served by the in-cluster TFTP image Service: Succeeded
//!    with the specification's four conditions and PhaseTransition Events;
//! 4. an HTTP upgrade during which the leader pod is deleted
//!    (`--grace-period=0 --force`): Succeeded, with exactly one OS.Activate;
//! 5. a small IOSXESoftwareRollout over two switches of the fleet.
//!
//! Without the cluster the test says so and passes, unless
//! `CVK_REQUIRE_KIND=1` (as `.ci/run` sets once it brought the cluster up).

use std::time::{Duration, Instant};

use cvk_hil::kind::{
    self, IMAGES_SERVICE_DNS, KindCluster, LAB_NAMESPACE, SIM_CONTROL, SYSTEM_NAMESPACE,
};
use serde_json::Value;

/// The fleet's starting version (`c9300-17.18`).
const PROFILE: &str = "c9300-17.18";
/// The images `kind/sim/images.yaml` makes and serves.
const IMAGE_26: (&str, &str, u64) = (
    "cat9k_iosxe.26.01.01.SPA.bin",
    "26.01.01.0.5003.1780000000",
    32 << 20,
);
const IMAGE_17: (&str, &str, u64) = (
    "cat9k_iosxe.17.18.03.SPA.bin",
    "17.18.03.0.4200.1770000000",
    32 << 20,
);
const LEADER_LEASE: &str = "cvk-controller-leader";

struct E2e {
    c: KindCluster,
}

fn step(what: &str) {
    eprintln!("[kind-e2e] {what}");
}

impl E2e {
    async fn kubectl(&self, args: &[&str]) -> String {
        self.c
            .kubectl(args)
            .await
            .unwrap_or_else(|e| panic!("kubectl {}: {e:#}", args.join(" ")))
    }

    async fn apply_yaml(&self, yaml: &str) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), yaml).unwrap();
        self.kubectl(&["apply", "-f", &file.path().to_string_lossy()])
            .await;
    }

    async fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let out = self
            .c
            .kubectl([
                "-n",
                LAB_NAMESPACE,
                "get",
                kind,
                name,
                "-o",
                "json",
                "--ignore-not-found",
            ])
            .await
            .ok()?;
        if out.trim().is_empty() {
            return None;
        }
        serde_json::from_str(&out).ok()
    }

    /// Waits until `f` holds for the object, printing each new phase.
    async fn wait_for(
        &self,
        kind: &str,
        name: &str,
        within: Duration,
        what: &str,
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        let mut last_phase = String::new();
        loop {
            if let Some(o) = self.get(kind, name).await {
                let phase = o["status"]["phase"].as_str().unwrap_or("").to_owned();
                if phase != last_phase {
                    step(&format!("{kind}/{name}: phase {phase}"));
                    last_phase = phase;
                }
                if f(&o) {
                    return o;
                }
                assert!(
                    Instant::now() < deadline,
                    "{kind}/{name}: {what} not reached within {within:?}; status: {:#}",
                    o["status"]
                );
            } else {
                assert!(
                    Instant::now() < deadline,
                    "{kind}/{name} does not exist after {within:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn wait_phase(&self, kind: &str, name: &str, phase: &str, within: Duration) -> Value {
        self.wait_for(kind, name, within, &format!("phase {phase}"), |o| {
            let p = o["status"]["phase"].as_str().unwrap_or("");
            assert!(
                !(["Failed", "Cancelled"].contains(&p) && p != phase),
                "{kind}/{name} ended {p} while {phase} was expected: {:#}",
                o["status"]
            );
            p == phase
        })
        .await
    }

    async fn journal_count(&self, device: &str, method: &str) -> usize {
        let v = kind::http_get_json(&format!(
            "{SIM_CONTROL}/journal?device={device}&method={method}"
        ))
        .await
        .unwrap();
        v.as_array().map(Vec::len).unwrap_or(0)
    }

    async fn sim(&self, method: &str, path: &str, body: Option<Value>) {
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-fsS", "--max-time", "10", "-X", method]);
        if let Some(b) = &body {
            cmd.args(["-H", "content-type: application/json", "-d", &b.to_string()]);
        }
        let out = cmd
            .arg(format!("{SIM_CONTROL}{path}"))
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{method} {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Event reasons and messages of an object in the lab namespace.
    async fn events(&self, name: &str) -> Vec<(String, String)> {
        let out = self
            .kubectl(&[
                "-n",
                LAB_NAMESPACE,
                "get",
                "events",
                "--field-selector",
                &format!("involvedObject.name={name}"),
                "-o",
                "json",
            ])
            .await;
        let v: Value = serde_json::from_str(&out).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or("").to_owned(),
                    e["message"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    async fn leader(&self) -> String {
        let out = self
            .kubectl(&[
                "-n",
                SYSTEM_NAMESPACE,
                "get",
                "lease",
                LEADER_LEASE,
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ])
            .await;
        out.trim().to_owned()
    }
}

fn sha256_of(version: &str, size: u64) -> String {
    iosxe_sim::image::ImageSpec::new(version, size)
        .write_to(std::io::sink())
        .unwrap()
}

fn condition<'a>(o: &'a Value, ty: &str) -> &'a Value {
    o["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
        .unwrap_or_else(|| panic!("no condition {ty}: {:#}", o["status"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installed_controller_drives_the_in_cluster_fleet() {
    let paths = kind::Paths::from_env().unwrap();
    let c = match KindCluster::existing(&paths).await {
        Ok(c) => c,
        Err(e) if std::env::var("CVK_REQUIRE_KIND").as_deref() != Ok("1") => {
            eprintln!("skipped: {e:#} (set CVK_REQUIRE_KIND=1 to make this a failure)");
            return;
        }
        Err(e) => panic!("CVK_REQUIRE_KIND=1 but {e:#}"),
    };
    let t = E2e { c };
    let started = Instant::now();

    step(
        "reset: earlier objects deleted, switches back on their profile's version, journals cleared",
    );
    for kind in [
        "iosxesoftwarerollouts",
        "iosxesoftwareupgrades",
        "deviceoperations",
        "iosxeoperationalactions",
    ] {
        t.kubectl(&[
            "-n",
            LAB_NAMESPACE,
            "delete",
            kind,
            "--all",
            "--wait=true",
            "--timeout=120s",
        ])
        .await;
    }
    let profile = iosxe_sim::Profile::builtin(PROFILE).unwrap();
    let profile_version = profile.version.clone();
    for d in ["sim-0", "sim-1", "sim-2", "sim-3"] {
        t.sim(
            "PATCH",
            &format!("/devices/{d}"),
            Some(
                serde_json::json!({ "running_version": profile_version, "install_bytes_per_s": 0 }),
            ),
        )
        .await;
    }
    t.sim("DELETE", "/journal", None).await;
    kind::write_known_hosts(&t.c).await.unwrap();

    step("1. smoke: devices Ready, read-only operations, the gated action refused");
    for d in ["sim-0", "sim-1", "sim-2", "sim-3"] {
        t.wait_phase("ciscodevice", d, "Ready", Duration::from_secs(180))
            .await;
    }
    let smoke = std::fs::read_to_string(
        kind::Paths::from_env()
            .unwrap()
            .repo
            .join("kind/e2e/smoke.yaml"),
    )
    .unwrap();
    t.apply_yaml(&smoke).await;
    t.wait_phase(
        "deviceoperation",
        "smoke-time",
        "Succeeded",
        Duration::from_secs(120),
    )
    .await;
    t.wait_phase(
        "deviceoperation",
        "smoke-osverify",
        "Succeeded",
        Duration::from_secs(120),
    )
    .await;
    t.wait_for(
        "iosxeoperationalaction",
        "smoke-reload-gated",
        Duration::from_secs(120),
        "reason WriteClassGateDisabled",
        |o| o["status"]["reason"] == "WriteClassGateDisabled",
    )
    .await;
    assert!(t.journal_count("sim-0", "/gnoi.system.System/Time").await >= 1);
    assert!(t.journal_count("sim-1", "/gnoi.os.OS/Verify").await >= 1);
    assert_eq!(
        t.journal_count("sim-2", "/gnoi.system.System/Reboot").await,
        0,
        "the gated reboot reached the switch"
    );

    step("2. ShowCommand over SSH to sim-2 (host key pinned by sim-known-hosts)");
    t.apply_yaml(&format!(
        "apiVersion: ops.cisco.vk/v1alpha1
kind: DeviceOperation
metadata: {{ name: e2e-show, namespace: {LAB_NAMESPACE} }}
spec:
  deviceRef: {{ name: sim-2 }}
  operation:
    kind: ShowCommand
    commands: [show version, show install summary]
"
    ))
    .await;
    let show = t
        .wait_phase(
            "deviceoperation",
            "e2e-show",
            "Succeeded",
            Duration::from_secs(120),
        )
        .await;
    let outputs = show["status"]["outputs"]
        .as_array()
        .expect("status.outputs");
    assert_eq!(outputs.len(), 2, "{:#}", show["status"]);
    let version_out = outputs[0]["output"].as_str().unwrap_or_default();
    let want = format!("Cisco IOS XE Software, Version {}", profile.release);
    assert!(
        version_out.contains(&want),
        "show version does not say {want:?}: {version_out}"
    );

    step("3. the walkthrough's TFTP upgrade, only names and digest changed");
    let walkthrough = std::fs::read_to_string(
        kind::Paths::from_env()
            .unwrap()
            .repo
            .join("kind/examples/iosxesoftwareupgrade-tftp.yaml"),
    )
    .unwrap();
    let digest_26 = sha256_of(IMAGE_26.1, IMAGE_26.2);
    let manifest = walkthrough
        .replace(
            "rust-tftp-otel-headless.ng-pnp.svc.cluster.local",
            IMAGES_SERVICE_DNS,
        )
        .replace(
            "7de3c6875e3c1c96d5920e8542c72b1bcb5d913d99645ef5687f44dd4024cdf4",
            &digest_26,
        )
        .replace("1260618344", &IMAGE_26.2.to_string())
        .replace("cat9000-4", "sim-0")
        .replace("namespace: default", &format!("namespace: {LAB_NAMESPACE}"));
    // Only the names and the digest (and the size note beside it) changed.
    assert!(manifest.contains("targetVersion: 26.01.01"));
    assert!(manifest.contains("strategy: Reload"));
    assert!(manifest.contains(&format!("/images/{}", IMAGE_26.0)));
    let name = "upgrade-sim-0-26-01-01";
    t.apply_yaml(&manifest).await;
    let up = t
        .wait_phase(
            "iosxesoftwareupgrade",
            name,
            "Succeeded",
            Duration::from_secs(300),
        )
        .await;
    for (ty, reason) in [
        ("TransferComplete", "ImageTransferred"),
        ("ValidationPassed", "PrefligthOK"),
        ("ActivationComplete", "OSActivated"),
        ("VerificationPassed", "VersionMatch"),
    ] {
        let cond = condition(&up, ty);
        assert_eq!(cond["status"], "True", "{ty}: {cond:#}");
        assert_eq!(cond["reason"], reason, "{ty}: {cond:#}");
    }
    assert_eq!(up["status"]["runningVersion"], IMAGE_26.1);
    let events = t.events(name).await;
    let transitions: Vec<&String> = events
        .iter()
        .filter(|(r, _)| r == "PhaseTransition")
        .map(|(_, m)| m)
        .collect();
    for want in [
        "Transferring → Validating",
        "Activating → AwaitingReachability",
        "Verifying → Succeeded",
    ] {
        assert!(
            transitions.iter().any(|m| m.contains(want)),
            "no PhaseTransition {want}: {transitions:#?}"
        );
    }
    assert_eq!(t.journal_count("sim-0", "/gnoi.os.OS/Activate").await, 1);

    step("4. an HTTP upgrade of sim-1; the leader pod deleted while it transfers");
    // A flash that writes at 4 MiB/s keeps the transfer going for seconds.
    t.sim(
        "PATCH",
        "/devices/sim-1",
        Some(serde_json::json!({ "install_bytes_per_s": 4 << 20 })),
    )
    .await;
    t.apply_yaml(&format!(
        "apiVersion: ops.cisco.vk/v1alpha1
kind: IOSXESoftwareUpgrade
metadata: {{ name: e2e-http-leader-killed, namespace: {LAB_NAMESPACE} }}
spec:
  deviceRef: {{ name: sim-1 }}
  imageSource:
    url: http://{IMAGES_SERVICE_DNS}:8081/images/{}
    sha256: {digest_26}
  targetVersion: 26.01.01
  strategy: Reload
  rebootTimeoutSeconds: 600
",
        IMAGE_26.0
    ))
    .await;
    t.wait_phase(
        "iosxesoftwareupgrade",
        "e2e-http-leader-killed",
        "Transferring",
        Duration::from_secs(120),
    )
    .await;
    let leader = t.leader().await;
    assert!(!leader.is_empty(), "no leader holds {LEADER_LEASE}");
    step(&format!(
        "deleting the leader pod {leader} (--grace-period=0 --force)"
    ));
    t.kubectl(&[
        "-n",
        SYSTEM_NAMESPACE,
        "delete",
        "pod",
        &leader,
        "--grace-period=0",
        "--force",
    ])
    .await;
    let http = t
        .wait_phase(
            "iosxesoftwareupgrade",
            "e2e-http-leader-killed",
            "Succeeded",
            Duration::from_secs(300),
        )
        .await;
    assert_eq!(http["status"]["runningVersion"], IMAGE_26.1);
    assert_eq!(
        t.journal_count("sim-1", "/gnoi.os.OS/Activate").await,
        1,
        "OS.Activate reached sim-1 other than exactly once"
    );
    let new_leader = t.leader().await;
    assert_ne!(new_leader, leader, "the deleted pod still holds the Lease");
    t.sim(
        "PATCH",
        "/devices/sim-1",
        Some(serde_json::json!({ "install_bytes_per_s": 0 })),
    )
    .await;

    step("5. an IOSXESoftwareRollout over sim-2 and sim-3 (canary sim-2)");
    let digest_17 = sha256_of(IMAGE_17.1, IMAGE_17.2);
    t.apply_yaml(&format!(
        "apiVersion: ops.cisco.vk/v1alpha1
kind: IOSXESoftwareRollout
metadata: {{ name: e2e-rollout, namespace: {LAB_NAMESPACE} }}
spec:
  plan:
    requestedBy: kind-e2e
    targets:
      devices: [sim-2, sim-3]
    source:
      url: http://{IMAGES_SERVICE_DNS}:8081/images/{}
      sha256: {digest_17}
    targetVersion: 17.18.03
    rebootTimeoutSeconds: 300
    canaries:
      - {{ name: first, devices: [sim-2] }}
    pauseAfterCanary: false
    budgets: {{ maxConcurrentTransfers: 1, maxUnavailable: 1 }}
    health: {{ canarySoakSeconds: 3, waveSoakSeconds: 2 }}
",
        IMAGE_17.0
    ))
    .await;
    let rollout = t
        .wait_phase(
            "iosxesoftwarerollout",
            "e2e-rollout",
            "Succeeded",
            Duration::from_secs(420),
        )
        .await;
    assert_eq!(
        rollout["status"]["counts"]["succeeded"], 2,
        "{:#}",
        rollout["status"]
    );
    for d in ["sim-2", "sim-3"] {
        assert_eq!(t.journal_count(d, "/gnoi.os.OS/Activate").await, 1, "{d}");
    }
    step(&format!("done in {:.0} s", started.elapsed().as_secs_f64()));
}
