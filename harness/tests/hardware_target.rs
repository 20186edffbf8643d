//! `cvk-hil run --target hardware` against a simulator started on its own
//! and described in an inventory file, as a lab switch would be: reached by
//! address only, credentials from the environment variables the inventory
//! names, no journal or faults. Scenarios that are not hardware-safe are
//! skipped with the reason, and the JUnit report says so.

use std::process::Command;

use cvk_hil::testing::{install_project_crds, shared_control_plane};
use iosxe_sim::{Fleet, FleetConfig, Profile};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardware_target_runs_hardware_safe_scenarios_and_skips_the_rest() {
    let lab = Fleet::start(
        FleetConfig::new(1, Profile::load("c9300-17.18").unwrap())
            .credentials("labuser", "labpass"),
    )
    .await
    .unwrap();
    let addr = lab.nth(0).unwrap().addr();
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("inventory.yaml");
    std::fs::write(
        &inventory,
        format!(
            "devices:\n  - name: sw1\n    address: {}\n    port: {}\n    tls: false\n    \
             usernameEnv: CVK_TEST_LAB_USER\n    passwordEnv: CVK_TEST_LAB_PASSWORD\n",
            addr.ip(),
            addr.port()
        ),
    )
    .unwrap();

    let cp = shared_control_plane();
    install_project_crds(&cp.client().await.unwrap())
        .await
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    cp.write_kubeconfig(&kubeconfig).unwrap();
    let junit = dir.path().join("junit.xml");

    let run = |with_credentials: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cvk-hil"));
        cmd.args([
            "run",
            "deviceoperation-osverify",
            "profile-1714-capability-cache",
        ])
        .args(["--target", "hardware", "--cluster", "kubeconfig"])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--inventory")
        .arg(&inventory)
        .arg("--junit")
        .arg(&junit)
        .arg("--artifacts")
        .arg(dir.path().join("artifacts"))
        .env_remove("CVK_TEST_LAB_USER")
        .env_remove("CVK_TEST_LAB_PASSWORD");
        if with_credentials {
            cmd.env("CVK_TEST_LAB_USER", "labuser")
                .env("CVK_TEST_LAB_PASSWORD", "labpass");
        }
        cmd.output().unwrap()
    };

    // Without the variables, the scenario fails and says which is missing.
    let out = run(false);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("CVK_TEST_LAB_USER"),
        "names the missing variable:\n{text}"
    );

    // With them, the hardware-safe scenario passes against the "lab
    // switch"; the sim-only one is skipped with its reason.
    let out = run(true);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed, 0 failed, 1 skipped"), "{text}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("tests=\"2\" failures=\"0\" errors=\"0\" skipped=\"1\""),
        "{xml}"
    );
    assert!(
        xml.contains("<skipped message=\"not tagged hardware-safe\"/>"),
        "{xml}"
    );
    assert_well_formed(&xml);

    // The lab switch really was the one used.
    let verifies = lab.nth(0).unwrap().journal_for("/gnoi.os.OS/Verify");
    assert!(!verifies.is_empty(), "the lab switch saw OS.Verify");
    lab.shutdown().await;
}

/// Every opened element is closed, in order (the JUnit writer's output is
/// simple: no CDATA, no comments).
fn assert_well_formed(xml: &str) {
    let body = xml.trim_start_matches(|c| c != '\n').trim();
    let mut stack: Vec<String> = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("unterminated tag") + start;
        let tag = &rest[start + 1..end];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name),
                "closing {name} out of order"
            );
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().unwrap().to_owned());
        }
        rest = &rest[end + 1..];
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}
