//! The controller's device CLI client (`client::cli`) over real SSH on
//! loopback: against the simulator's IOS-XE CLI (sessions, reuse, enable,
//! host keys, faults, reboots) and against OpenSSH's `sshd` with a
//! forced-command shell that pages its output, so the client is not only
//! tested against our own server.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cvk_controller::client::cli::{
    CliLabels, CliMetrics, CliPool, CliSettings, CliTarget, HostKeys,
};
use iosxe_sim::{FaultKind, FaultSpec, Fleet, FleetConfig, FleetHandle, Profile};

const USER: &str = "admin";
const PASSWORD: &str = "cli-pw";

async fn fleet(cfg: impl FnOnce(FleetConfig) -> FleetConfig) -> FleetHandle {
    let profile = Profile::load("c9300-17.18").unwrap();
    let base = FleetConfig::new(1, profile)
        .credentials(USER, PASSWORD)
        .cli_port(0);
    Fleet::start(cfg(base)).await.unwrap()
}

fn target(fleet: &FleetHandle) -> CliTarget {
    let ready = fleet.ready_info();
    let d = &ready.devices[0];
    CliTarget {
        device: "ns/sw1".into(),
        host: d.address.clone(),
        port: d.ssh_port.expect("the device serves SSH"),
        username: USER.into(),
        password: PASSWORD.into(),
        enable_secret: None,
        private_key: None,
        host_keys: HostKeys::Known(d.ssh_known_hosts.clone().expect("known_hosts line")),
    }
}

fn quick() -> CliSettings {
    CliSettings {
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        ..CliSettings::default()
    }
}

fn count(
    f: &prometheus_client::metrics::family::Family<
        CliLabels,
        prometheus_client::metrics::counter::Counter,
    >,
    outcome: &str,
) -> u64 {
    f.get_or_create(&CliLabels {
        outcome: outcome.into(),
    })
    .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_commands_run_on_one_session_that_is_reused() {
    let fleet = fleet(|c| c).await;
    let t = target(&fleet);
    let metrics = CliMetrics::default();
    let pool = CliPool::new(quick(), metrics.clone());

    let mut s = pool.session(&t).await.unwrap();
    let hostname = fleet.nth(0).unwrap().snapshot().hostname;
    assert_eq!(s.hostname(), hostname);
    let v = s.run("show version").await.unwrap();
    assert_eq!(v.error, None);
    assert!(
        v.text.starts_with("Cisco IOS XE Software, Version 17.18"),
        "{}",
        v.text
    );
    assert!(
        v.text
            .contains("System image file is \"flash:packages.conf\"")
    );
    assert!(v.text.contains("Configuration register is 0x102"));
    assert!(!v.text.contains('\r') && !v.text.contains("show version"));
    assert!(
        !v.text.trim_end().ends_with('#'),
        "prompt left in: {}",
        v.text
    );
    let bad = s.run("show bogus").await.unwrap();
    assert_eq!(
        bad.error.as_deref(),
        Some("% Invalid input detected at '^' marker.")
    );
    let dir = s.run("dir flash:").await.unwrap();
    assert!(dir.text.starts_with("Directory of flash:/"), "{}", dir.text);
    assert!(dir.text.contains("bytes total"), "{}", dir.text);
    s.release();
    assert_eq!(pool.idle_sessions("ns/sw1"), 1);

    // The second operation takes the idle session: no new login.
    let mut s = pool.session(&t).await.unwrap();
    let c = s.run("show clock").await.unwrap();
    assert_eq!(c.error, None);
    assert!(c.text.contains("UTC"), "{}", c.text);
    s.release();
    assert_eq!(count(&metrics.sessions, "ok"), 1);
    assert_eq!(count(&metrics.commands, "ok"), 3);
    assert_eq!(count(&metrics.commands, "refused"), 1);
    pool.close_all().await;
    assert_eq!(pool.idle_sessions("ns/sw1"), 0);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_exec_login_is_enabled_with_the_secret_and_a_wrong_one_fails() {
    let fleet = fleet(|mut c| {
        c.cli = iosxe_sim::cli_ssh::CliOptions {
            user_exec: true,
            enable_secret: Some("en-pw".into()),
        };
        c
    })
    .await;
    let pool = CliPool::new(quick(), CliMetrics::default());
    let mut t = target(&fleet);
    t.enable_secret = Some("en-pw".into());
    let mut s = pool.session(&t).await.unwrap();
    let run = s.run("show running-config").await.unwrap();
    assert_eq!(run.error, None, "{}", run.text);
    assert!(run.text.contains("\nhostname "), "{}", run.text);
    drop(s);

    t.enable_secret = Some("wrong".into());
    let e = pool.session(&t).await.unwrap_err();
    assert_eq!(e.reason(), "SSHEnableFailed", "{e}");
    // Without a secret the session stays at `>`; privileged commands are
    // the device's to refuse.
    t.enable_secret = None;
    let mut s = pool.session(&t).await.unwrap();
    let run = s.run("show running-config").await.unwrap();
    assert!(run.error.is_some(), "{run:?}");
    drop(s);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_keys_and_passwords_are_checked() {
    let fleet = fleet(|c| c).await;
    let pool = CliPool::new(quick(), CliMetrics::default());
    let good = target(&fleet);

    let mut wrong_key = good.clone();
    let (_, other) = iosxe_sim::image_servers::ssh::generate_ed25519();
    wrong_key.host_keys = HostKeys::Known(format!("[{}]:{} {other}\n", good.host, good.port));
    let e = pool.session(&wrong_key).await.unwrap_err();
    assert_eq!(e.reason(), "SSHHostKeyRejected", "{e}");

    let mut other_host = good.clone();
    other_host.host_keys = HostKeys::Known(
        fleet.ready_info().devices[0]
            .ssh_known_hosts
            .clone()
            .unwrap()
            .replacen("127.0.0.1", "10.9.9.9", 1),
    );
    let e = pool.session(&other_host).await.unwrap_err();
    assert_eq!(e.reason(), "SSHHostKeyRejected", "{e}");

    let mut bad_pw = good.clone();
    bad_pw.password = "nope".into();
    let e = pool.session(&bad_pw).await.unwrap_err();
    assert_eq!(e.reason(), "SSHAuthFailed", "{e}");
    assert!(!e.to_string().contains("nope"), "{e}");

    let mut insecure = good.clone();
    insecure.host_keys = HostKeys::InsecureAcceptAny;
    pool.session(&insecure).await.unwrap().release();
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_and_reboots_end_in_their_reasons() {
    let fleet = fleet(|c| c).await;
    let dev = fleet.nth(0).unwrap();
    let t = target(&fleet);
    let settings = CliSettings {
        command_timeout: Duration::from_millis(800),
        ..quick()
    };
    let pool = CliPool::new(settings, CliMetrics::default());

    // Logins dropped (the vty lines gone) while gNOI answers.
    let id = dev
        .inject(FaultSpec::rpc(
            iosxe_sim::cli_ssh::LOGIN,
            FaultKind::Cut {
                after_bytes: Some(0),
                probability: None,
                seed: 0,
            },
        ))
        .unwrap();
    let e = pool.session(&t).await.unwrap_err();
    assert_eq!(e.reason(), "SSHUnreachable", "{e}");
    assert!(dev.remove_fault(id));

    // A command slower than the per-command timeout.
    let mut s = pool.session(&t).await.unwrap();
    dev.inject(FaultSpec::rpc(
        iosxe_sim::cli_ssh::COMMAND,
        FaultKind::Latency { ms: 3_000 },
    ))
    .unwrap();
    let started = Instant::now();
    let e = s.run("show version").await.unwrap_err();
    assert_eq!(e.reason(), "CommandTimeout", "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    s.release();
    // A timed-out session is never reused.
    assert_eq!(pool.idle_sessions("ns/sw1"), 0);
    dev.clear_faults();

    // A reboot drops the open session.
    let mut s = pool.session(&t).await.unwrap();
    s.run("show clock").await.unwrap();
    dev.reboot(Duration::ZERO, "test power cycle").unwrap();
    assert!(
        dev.wait_power(iosxe_sim::Power::Down, Duration::from_secs(5))
            .await
    );
    let e = s.run("show version").await.unwrap_err();
    assert!(
        matches!(e.reason(), "SSHSessionClosed" | "CommandTimeout"),
        "{e}"
    );
    drop(s);
    assert!(
        dev.wait_power(iosxe_sim::Power::Up, Duration::from_secs(20))
            .await
    );
    // ... and the CLI answers again after it, on the same port (its
    // listener comes back just after the gNOI one).
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect((t.host.as_str(), t.port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the SSH listener did not come back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut s = pool.session(&t).await.unwrap();
    assert!(
        s.run("show version")
            .await
            .unwrap()
            .text
            .contains("uptime is")
    );
    s.release();
    fleet.shutdown().await;
}

// --- OpenSSH sshd ---------------------------------------------------------

/// A forced-command shell that answers like a restricted IOS-XE user:
/// `terminal length 0` is refused, so every long output is paged with
/// ` --More-- ` and erased with backspaces as IOS-XE does.
const SHELL: &str = r#"#!/bin/bash
host=lab-sw9
page() {
  local n=0
  while IFS= read -r l; do
    if [ "$n" -eq 23 ]; then
      printf ' --More-- '
      IFS= read -rsn1 _ </dev/tty
      printf '\b\b\b\b\b\b\b\b\b\b          \b\b\b\b\b\b\b\b\b\b'
      n=0
    fi
    printf '%s\n' "$l"
    n=$((n + 1))
  done
}
version() {
  echo "Cisco IOS XE Software, Version 17.15.04"
  echo "Cisco IOS Software [IOSXE], Catalyst L3 Switch Software (CAT9K_IOSXE), Version 17.15.4, RELEASE SOFTWARE (fc1)"
  for i in $(seq 1 50); do echo "filler line $i"; done
  echo "Configuration register is 0x102"
}
printf '\n%s#' "$host"
while IFS= read -r line; do
  line=${line%$'\r'}
  case "$line" in
    "terminal length 0"|"terminal width 0")
      echo "Command authorization failed." ;;
    "show version") version | page ;;
    "show clock") echo "*12:00:00.000 UTC Thu Dec 3 2026" ;;
    exit) exit 0 ;;
    "") ;;
    *) echo "                 ^"; echo "% Invalid input detected at '^' marker." ;;
  esac
  printf '\n%s#' "$host"
done
"#;

struct Sshd {
    child: std::process::Child,
    port: u16,
    host_public: String,
    client_private: String,
    _dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Starts `sshd -D` on a free loopback port with its own host key,
/// public-key login for the current user and the forced-command shell.
/// `None` when sshd is not installed (and CVK_REQUIRE_INTEROP is unset).
fn start_sshd() -> Option<Sshd> {
    let bin = PathBuf::from("/usr/sbin/sshd");
    if !bin.exists() {
        assert!(
            std::env::var_os("CVK_REQUIRE_INTEROP").is_none(),
            "/usr/sbin/sshd is missing (Debian openssh-server) and CVK_REQUIRE_INTEROP is set"
        );
        eprintln!("skipped: /usr/sbin/sshd is not installed (Debian openssh-server)");
        return None;
    }
    let root = nix_is_root();
    if root {
        // The privilege-separation directory the service unit would create.
        std::fs::create_dir_all("/run/sshd").unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (host_private, host_public) = iosxe_sim::image_servers::ssh::generate_ed25519();
    let (client_private, client_public) = iosxe_sim::image_servers::ssh::generate_ed25519();
    write(&dir.path().join("host_key"), &host_private, 0o600);
    write(
        &dir.path().join("authorized_keys"),
        &format!("{client_public}\n"),
        0o600,
    );
    write(&dir.path().join("iosxe-shell"), SHELL, 0o755);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.path().display();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile none\n\
         AuthorizedKeysFile {d}/authorized_keys\nPubkeyAuthentication yes\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
         StrictModes no\nPermitRootLogin prohibit-password\nPermitTTY yes\n\
         ForceCommand {d}/iosxe-shell\nLogLevel ERROR\n"
    );
    write(&dir.path().join("sshd_config"), &config, 0o600);
    let child = std::process::Command::new(&bin)
        .args(["-D", "-e", "-f"])
        .arg(dir.path().join("sshd_config"))
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "sshd did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Sshd {
        child,
        port,
        host_public,
        client_private,
        _dir: dir,
    })
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn current_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            let out = std::process::Command::new("id").arg("-un").output().ok()?;
            Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .expect("the current user name")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_sshd_with_a_paging_forced_command_shell() {
    let Some(sshd) = start_sshd() else {
        return;
    };
    let t = CliTarget {
        device: "lab/sw9".into(),
        host: "127.0.0.1".into(),
        port: sshd.port,
        username: current_user(),
        password: String::new(),
        enable_secret: None,
        private_key: Some(sshd.client_private.clone()),
        host_keys: HostKeys::Known(format!("[127.0.0.1]:{} {}\n", sshd.port, sshd.host_public)),
    };
    let pool = CliPool::new(quick(), CliMetrics::default());
    let mut s = pool.session(&t).await.unwrap();
    assert_eq!(s.hostname(), "lab-sw9");
    let v = s.run("show version").await.unwrap();
    assert_eq!(v.error, None, "{}", v.text);
    assert!(
        v.text
            .starts_with("Cisco IOS XE Software, Version 17.15.04\n"),
        "{:?}",
        v.text
    );
    // Every line arrives once, in order, without pager marks or erasure.
    for i in 1..=50 {
        assert!(
            v.text.contains(&format!("\nfiller line {i}\n")),
            "line {i}: {:?}",
            v.text
        );
    }
    assert!(
        v.text.ends_with("Configuration register is 0x102\n"),
        "{:?}",
        v.text
    );
    assert!(
        !v.text.contains("More") && !v.text.contains('\u{8}'),
        "{:?}",
        v.text
    );
    assert_eq!(v.text.lines().count(), 53);
    let c = s.run("show clock").await.unwrap();
    assert_eq!(c.text, "*12:00:00.000 UTC Thu Dec 3 2026\n");
    let bad = s.run("show interfaces bogus").await.unwrap();
    assert_eq!(
        bad.error.as_deref(),
        Some("% Invalid input detected at '^' marker.")
    );
    s.release();
    pool.close_all().await;

    // The same server with the wrong pinned key.
    let mut wrong = t.clone();
    let (_, other) = iosxe_sim::image_servers::ssh::generate_ed25519();
    wrong.host_keys = HostKeys::Known(format!("[127.0.0.1]:{} {other}\n", sshd.port));
    let e = pool.session(&wrong).await.unwrap_err();
    assert_eq!(e.reason(), "SSHHostKeyRejected", "{e}");
    // No key and no password: the login is refused.
    let mut nokey = t.clone();
    nokey.private_key = None;
    nokey.password = "x".into();
    let e = pool.session(&nokey).await.unwrap_err();
    assert_eq!(e.reason(), "SSHAuthFailed", "{e}");
}
