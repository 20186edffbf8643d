//! `iosxe-sim serve-images`: the ready file, and every server answering a
//! standard client (curl: http, tftp, ftp, sftp, scp) with the right bytes.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iosxe_sim::ImageSpec;
use iosxe_sim::image_servers::ImageServersInfo;
use sha2::Digest;

fn curl_supports(proto: &str) -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("Protocols:") && l.split_whitespace().any(|p| p == proto))
        })
        .unwrap_or(false)
}

fn curl(args: &[&str], out: &Path) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "60"])
        .args(args)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn serve_images_serves_every_scheme_to_curl() {
    let dir = tempfile::tempdir().unwrap();
    let serve = dir.path().join("serve");
    std::fs::create_dir_all(serve.join("images")).unwrap();
    let size = 2 * 1024 * 1024 + 3;
    let sha = ImageSpec::new("17.18.02.0.4112.1766116039", size)
        .write_to(std::fs::File::create(serve.join("images/a.bin")).unwrap())
        .unwrap();
    let ready = dir.path().join("ready.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_iosxe-sim"))
        .args(["serve-images", "--dir"])
        .arg(&serve)
        .args(["--username", "lab", "--password", "pw", "--ready-file"])
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !ready.exists() && t0.elapsed() < Duration::from_secs(20) {
        if let Some(st) = child.try_wait().unwrap() {
            let mut e = String::new();
            child.stderr.take().unwrap().read_to_string(&mut e).unwrap();
            panic!("serve-images exited {st}: {e}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let info: ImageServersInfo =
        serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    assert!(
        info.known_hosts.starts_with("[127.0.0.1]:"),
        "{}",
        info.known_hosts
    );
    assert!(
        info.known_hosts.contains(" ssh-ed25519 AAAA"),
        "{}",
        info.known_hosts
    );
    let mut cases: Vec<(&str, String, Vec<&str>)> = vec![
        ("http", format!("{}/images/a.bin", info.http), vec![]),
        (
            "tftp",
            format!("{}/images/a.bin", info.tftp),
            vec!["--tftp-blksize", "8192"],
        ),
        ("ftp", format!("{}/images/a.bin", info.ftp), vec![]),
        (
            "ftp",
            format!("{}/images/a.bin", info.ftp),
            vec!["-u", "lab:pw"],
        ),
    ];
    // curl's sftp/scp (libssh2) with -k skips the host key check.
    if curl_supports("sftp") {
        cases.push((
            "sftp",
            format!("{}/images/a.bin", info.sftp),
            vec!["-k", "-u", "lab:pw"],
        ));
    }
    if curl_supports("scp") {
        cases.push((
            "scp",
            format!("{}/images/a.bin", info.scp),
            vec!["-k", "-u", "lab:pw"],
        ));
    }
    let mut failures = Vec::new();
    for (proto, url, extra) in &cases {
        if !curl_supports(proto) {
            eprintln!("curl lacks {proto}; skipped");
            continue;
        }
        let out = dir.path().join(format!("{proto}.bin"));
        let mut args = extra.clone();
        args.push(url);
        let o = curl(&args, &out);
        let got = std::fs::read(&out).unwrap_or_default();
        if !o.status.success() || hex::encode(sha2::Sha256::digest(&got)) != sha {
            failures.push(format!(
                "{url}: {} ({} bytes) {}",
                o.status,
                got.len(),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
    }
    // Wrong FTP password is refused.
    let o = curl(
        &["-u", "lab:nope", &format!("{}/images/a.bin", info.ftp)],
        &dir.path().join("nope.bin"),
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(!o.status.success(), "a wrong FTP password must be refused");
}
