//! The `iosxe-sim` binary: `serve` with a ready file, `mkimage`, `profiles`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cvk_proto::gnoi::os::{self as ospb, os_client::OsClient};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iosxe-sim"))
}

#[test]
fn mkimage_streams_and_prints_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("img.bin");
    let o = bin()
        .args([
            "mkimage",
            "--version",
            "17.15.01a",
            "--size",
            "3MiB",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success());
    let line = String::from_utf8(o.stdout).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    use sha2::Digest;
    assert_eq!(
        line.split_whitespace().next().unwrap(),
        hex::encode(sha2::Sha256::digest(&bytes))
    );
    assert!(line.contains("3145728 bytes"));
    assert_eq!(
        iosxe_sim::image::parse_header(&bytes).unwrap().version,
        "17.15.01a"
    );
    let o = bin()
        .args(["mkimage", "--version", "x", "--size", "10", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "an image smaller than header + trailer is refused"
    );
}

#[test]
fn profiles_lists_builtins() {
    let o = bin().arg("profiles").output().unwrap();
    let s = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        s.lines().collect::<Vec<_>>(),
        ["c9300-17.14", "c9300-17.18", "c9300-26.01"]
    );
}

#[tokio::test]
async fn serve_writes_a_ready_file_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let port = {
        // A free port range: bind 0 and use what the kernel picked, plus one.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = bin()
        .args([
            "serve",
            "--devices",
            "2",
            "--profile",
            "c9300-26.01",
            "--base-port",
            &port.to_string(),
            "--ready-file",
        ])
        .arg(&ready)
        .arg("--tls")
        .arg("--cert-dir")
        .arg(dir.path().join("certs"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !ready.exists() && t0.elapsed() < Duration::from_secs(20) {
        if let Some(st) = child.try_wait().unwrap() {
            let mut e = String::new();
            child.stderr.take().unwrap().read_to_string(&mut e).unwrap();
            panic!("serve exited {st}: {e}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let info: iosxe_sim::ReadyInfo =
        serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(info.devices.len(), 2);
    assert_eq!(info.devices[1].port, port + 1);
    assert!(
        info.devices
            .iter()
            .all(|d| d.tls && d.version == "26.01.01.0.340" && d.ca_cert.is_some())
    );
    assert!(info.control.is_some());
    assert!(info.certs.unwrap().ca_cert.exists());
}

#[tokio::test]
async fn serve_insecure_answers_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let mut child = bin()
        .args([
            "serve",
            "--devices",
            "1",
            "--profile",
            "c9300-17.14",
            "--base-port",
            "0",
            "--ready-file",
        ])
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !ready.exists() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let info: iosxe_sim::ReadyInfo =
        serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    let d = &info.devices[0];
    let r = async {
        let mut c = OsClient::connect(format!("http://{}:{}", d.address, d.port))
            .await
            .unwrap();
        c.verify(ospb::VerifyRequest {})
            .await
            .unwrap()
            .into_inner()
            .version
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r, "17.14.01.0.1590.1711400034");
}
