//! The simulator image (`iosxe-sim:dev`, built by
//! `kind/docker/build-images.sh`) started by testcontainers on the Docker
//! engine of the kind set-up, and driven from the host over the engine's
//! bridge network: gNOI System.Time and OS.Verify with the credentials the
//! container was started with, a refused call without them, and the control
//! API's `/ready`. The image runs as the non-root user 65532.
//!
//! Needs the engine and the image, so without them the test says so and
//! passes, unless `CVK_REQUIRE_KIND=1` (set by `.ci/run` after
//! `cvk-hil cluster kind up`, which builds the image and starts the
//! engine, and exports the engine's `DOCKER_HOST`, which testcontainers
//! and the docker CLI read).

use std::time::Duration;

use cvk_proto::gnoi::os::{self as ospb, os_client::OsClient};
use cvk_proto::gnoi::system::{self as syspb, system_client::SystemClient};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};

const IMAGE: (&str, &str) = ("iosxe-sim", "dev");

fn authed<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("username", "cvk".parse().unwrap());
    r.metadata_mut().insert("password", "pw-1".parse().unwrap());
    r
}

/// Checks that the engine answers (`DOCKER_HOST`, or the default socket)
/// and has the image.
async fn engine() -> Result<(), String> {
    let out = tokio::process::Command::new("docker")
        .args(["image", "inspect", &format!("{}:{}", IMAGE.0, IMAGE.1)])
        .output()
        .await
        .map_err(|e| format!("docker: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "no image {}:{} in the engine at {} ({}); `kind/host/docker.sh up` prints the engine's DOCKER_HOST and kind/docker/build-images.sh builds the image",
            IMAGE.0,
            IMAGE.1,
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "the default socket".into()),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_image_serves_gnoi_over_the_bridge_network() {
    if let Err(why) = engine().await {
        if std::env::var("CVK_REQUIRE_KIND").as_deref() == Ok("1") {
            panic!("CVK_REQUIRE_KIND=1 but {why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let container = GenericImage::new(IMAGE.0, IMAGE.1)
        .with_exposed_port(50052.tcp())
        .with_exposed_port(8080.tcp())
        .with_wait_for(WaitFor::message_on_either_std("all devices listening"))
        .with_cmd([
            "serve",
            "--devices",
            "2",
            "--base-port",
            "50052",
            "--control-port",
            "8080",
            "--username",
            "cvk",
            "--password",
            "pw-{n}",
            "--no-ssh",
        ])
        // Named, so the container's network mode is the bridge by name (an
        // engine of API 1.41 reports the default one as "default", which
        // no network is called).
        .with_network("bridge")
        .with_env_var("IOSXE_SIM_DATA_DIR", "/tmp")
        .with_env_var("RUST_LOG", "info")
        .with_startup_timeout(Duration::from_secs(60))
        .start()
        .await
        .expect("starting the simulator container");
    let ip = container.get_bridge_ip_address().await.unwrap();
    eprintln!("simulator container at {ip} on the bridge network");

    // Device 1 is on 50053 with password pw-1.
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{ip}:50053"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connecting to sim-1 over the bridge");
    let time = SystemClient::new(ch.clone())
        .time(authed(syspb::TimeRequest {}))
        .await
        .expect("System.Time")
        .into_inner()
        .time;
    assert!(
        time > 1_600_000_000_000_000_000,
        "time {time} is not now in ns"
    );
    let verify = OsClient::new(ch.clone())
        .verify(authed(ospb::VerifyRequest {}))
        .await
        .expect("OS.Verify")
        .into_inner();
    assert!(verify.version.starts_with("17."), "{verify:?}");
    let refused = SystemClient::new(ch)
        .time(tonic::Request::new(syspb::TimeRequest {}))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    let ready = tokio::process::Command::new("curl")
        .args([
            "-fsS",
            "--max-time",
            "5",
            &format!("http://{ip}:8080/ready"),
        ])
        .output()
        .await
        .unwrap();
    assert!(ready.status.success(), "GET /ready over the bridge");
    let ready: serde_json::Value = serde_json::from_slice(&ready.stdout).unwrap();
    assert_eq!(ready["devices"].as_array().unwrap().len(), 2, "{ready:#}");

    let user = tokio::process::Command::new("docker")
        .args(["inspect", "-f", "{{.Config.User}}", container.id()])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "65532:65532");
}
