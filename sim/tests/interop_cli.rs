//! Interop for the simulator's SSH CLI with the clients network engineers
//! use, as subprocesses over loopback:
//!
//! * OpenSSH's `ssh` (Debian openssh-client): the exec channel, and an
//!   interactive shell on a PTY (`-tt`), with the host key pinned from the
//!   ready file's known_hosts line (`StrictHostKeyChecking=yes`);
//! * netmiko's `cisco_xe` driver (PyPI, `sim/interop/netmiko_show.py` in the
//!   `netmiko` venv that `sim/interop/install-tools.sh` creates).
//!
//! A missing tool skips the test with a printed reason, or fails it when
//! `CVK_REQUIRE_INTEROP=1` (CI sets it after installing the tools).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use iosxe_sim::{Fleet, FleetConfig, FleetHandle, Profile};
use tokio::io::AsyncWriteExt;

const USER: &str = "netops";
const PASS: &str = "cli-s3cret";
const TOOL_LIMIT: Duration = Duration::from_secs(90);

fn require() -> bool {
    std::env::var("CVK_REQUIRE_INTEROP").as_deref() == Ok("1")
}

fn skip(why: String) {
    if require() {
        panic!("CVK_REQUIRE_INTEROP=1 and {why}");
    }
    eprintln!("SKIPPED: {why}");
}

fn interop_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CVK_INTEROP_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/cvk/interop")
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

async fn fleet(opts: iosxe_sim::cli_ssh::CliOptions) -> FleetHandle {
    let mut cfg = FleetConfig::new(1, Profile::builtin("c9300-17.18").unwrap())
        .reboot_ms(300)
        .credentials(USER, PASS)
        .cli_port(0);
    cfg.cli = opts;
    Fleet::start(cfg).await.unwrap()
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(mut cmd: tokio::process::Command, stdin: Option<&str>) -> Out {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn tool");
    if let Some(text) = stdin {
        let mut w = child.stdin.take().unwrap();
        let text = text.to_owned();
        tokio::spawn(async move {
            // Typed line by line, as a person (or expect script) would.
            for line in text.split_inclusive('\n') {
                if w.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
                let _ = w.flush().await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        });
    }
    let out = tokio::time::timeout(TOOL_LIMIT, child.wait_with_output())
        .await
        .expect("tool timed out")
        .unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `ssh` with the password from an askpass script and the host key pinned.
fn ssh_cmd(ssh: &Path, dir: &Path, fleet: &FleetHandle) -> tokio::process::Command {
    let ready = fleet.ready_info();
    let dev = &ready.devices[0];
    let known = dir.join("known_hosts");
    std::fs::write(
        &known,
        format!("{}\n", dev.ssh_known_hosts.as_ref().unwrap()),
    )
    .unwrap();
    let askpass = dir.join("askpass.sh");
    std::fs::write(&askpass, format!("#!/bin/sh\necho '{PASS}'\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut cmd = tokio::process::Command::new(ssh);
    cmd.env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .args(["-F", "/dev/null", "-p"])
        .arg(dev.ssh_port.unwrap().to_string())
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            "ConnectTimeout=10",
            "-l",
            USER,
            &dev.address,
        ]);
    cmd
}

#[tokio::test]
async fn openssh_exec_channel_with_a_pinned_host_key() {
    let Some(ssh) = which("ssh") else {
        return skip("ssh (openssh-client) is not on PATH".into());
    };
    let fleet = fleet(Default::default()).await;
    let snap = fleet.nth(0).unwrap().snapshot();
    let dir = tempfile::tempdir().unwrap();

    let mut cmd = ssh_cmd(&ssh, dir.path(), &fleet);
    cmd.arg("show version");
    let out = run(cmd, None).await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let short = iosxe_sim::cli::short_version(&snap.running_version);
    assert!(
        out.stdout
            .starts_with(&format!("Cisco IOS XE Software, Version {short}\r\n")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(&snap.serial));

    // An IOS-XE error is exit status 1 with the error text.
    let mut cmd = ssh_cmd(&ssh, dir.path(), &fleet);
    cmd.arg("show bogus");
    let out = run(cmd, None).await;
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("% Invalid input detected at '^' marker.")
    );

    // A different pinned key is refused by ssh itself.
    let other = iosxe_sim::image_servers::ssh::generate_ed25519().1;
    let dev = &fleet.ready_info().devices[0];
    let mut cmd = ssh_cmd(&ssh, dir.path(), &fleet);
    std::fs::write(
        dir.path().join("known_hosts"),
        format!("[{}]:{} {other}\n", dev.address, dev.ssh_port.unwrap()),
    )
    .unwrap();
    cmd.arg("show clock");
    let out = run(cmd, None).await;
    assert_eq!(out.code, Some(255), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("HOST IDENTIFICATION HAS CHANGED")
            || out.stderr.contains("Host key verification failed"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn openssh_interactive_shell_on_a_pty() {
    let Some(ssh) = which("ssh") else {
        return skip("ssh (openssh-client) is not on PATH".into());
    };
    let fleet = fleet(Default::default()).await;
    let host = fleet.nth(0).unwrap().snapshot().hostname;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = ssh_cmd(&ssh, dir.path(), &fleet);
    cmd.arg("-tt");
    let out = run(
        cmd,
        Some("terminal length 0\nshow install summary\nsho clok\nexit\n"),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let o = &out.stdout;
    assert!(o.contains(&format!("{host}#terminal length 0\r\n")), "{o}");
    assert!(
        o.contains(&format!("{host}#show install summary\r\n")),
        "{o}"
    );
    assert!(
        o.contains("[ Switch 1 ] Installed Package(s) Information:"),
        "{o}"
    );
    assert!(o.contains("% Invalid input detected at '^' marker."), "{o}");
    assert!(o.contains(&format!("{host}#exit")), "{o}");
}

#[tokio::test]
async fn netmiko_cisco_xe_driver_enables_and_runs_show_commands() {
    let tool = interop_dir().join("netmiko/bin/cvk-netmiko-show");
    if !tool.is_file() {
        return skip(format!(
            "{} is missing: run `bash sim/interop/install-tools.sh` (or set CVK_INTEROP_DIR)",
            tool.display()
        ));
    }
    let fleet = fleet(iosxe_sim::cli_ssh::CliOptions {
        user_exec: true,
        enable_secret: Some("en-secret".into()),
    })
    .await;
    let d = fleet.nth(0).unwrap();
    let snap = d.snapshot();
    let dev = &fleet.ready_info().devices[0];
    let mut cmd = tokio::process::Command::new(&tool);
    cmd.args([
        &dev.address,
        &dev.ssh_port.unwrap().to_string(),
        USER,
        PASS,
        "--secret",
        "en-secret",
        "show version",
        "show running-config",
        "dir flash:",
        "show bogus",
    ]);
    let out = run(cmd, None).await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["prompt"], format!("{}#", snap.hostname), "{v}");
    assert_eq!(v["enabled"], true);
    let o = &v["outputs"];
    let short = iosxe_sim::cli::short_version(&snap.running_version);
    let version = o["show version"].as_str().unwrap();
    assert!(
        version.starts_with(&format!("Cisco IOS XE Software, Version {short}")),
        "{version}"
    );
    assert!(
        version.contains("Configuration register is 0x102"),
        "{version}"
    );
    let run_cfg = o["show running-config"].as_str().unwrap();
    assert!(
        run_cfg.contains(&format!("hostname {}", snap.hostname)),
        "{run_cfg}"
    );
    assert!(run_cfg.trim_end().ends_with("end"), "{run_cfg}");
    assert!(o["dir flash:"].as_str().unwrap().contains("bytes free)"));
    assert!(
        o["show bogus"]
            .as_str()
            .unwrap()
            .contains("% Invalid input detected at '^' marker."),
        "{v}"
    );
}
