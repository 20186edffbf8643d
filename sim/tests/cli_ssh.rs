//! The device SSH CLI over a real SSH connection (russh client): exec
//! channel, interactive shell on a PTY with paging and enable, IOS-XE error
//! forms, credentials, and the listener following reboots.

mod common;

use std::sync::Arc;
use std::time::Duration;

use iosxe_sim::cli_ssh::{CliOptions, CliServer};
use iosxe_sim::{DeviceHandle, Fleet, FleetConfig, Profile, StatePatch};
use russh::ChannelMsg;

struct AnyKey;

impl russh::client::Handler for AnyKey {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

async fn fleet_with_creds() -> iosxe_sim::FleetHandle {
    Fleet::start(
        FleetConfig::new(1, Profile::builtin("c9300-17.18").unwrap())
            .reboot_ms(common::REBOOT_MS)
            .credentials("admin", "s3cret"),
    )
    .await
    .unwrap()
}

async fn login(
    srv: &CliServer,
    user: &str,
    password: &str,
) -> Option<russh::client::Handle<AnyKey>> {
    let config = Arc::new(russh::client::Config::default());
    let mut h = russh::client::connect(config, srv.addr(), AnyKey)
        .await
        .ok()?;
    let ok = h.authenticate_password(user, password).await.ok()?;
    ok.success().then_some(h)
}

/// Runs `cmd` on the exec channel: (output, exit status).
async fn exec(h: &russh::client::Handle<AnyKey>, cmd: &str) -> (String, u32) {
    let mut ch = h.channel_open_session().await.unwrap();
    ch.exec(true, cmd).await.unwrap();
    let mut out = Vec::new();
    let mut code = u32::MAX;
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(10), ch.wait())
        .await
        .unwrap()
    {
        match msg {
            ChannelMsg::Data { data } => out.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => code = exit_status,
            _ => {}
        }
    }
    (String::from_utf8(out).unwrap(), code)
}

/// An interactive session: write, then read until `until` ends the output.
struct Shell {
    ch: russh::Channel<russh::client::Msg>,
    buf: String,
}

impl Shell {
    async fn open(h: &russh::client::Handle<AnyKey>) -> Self {
        let ch = h.channel_open_session().await.unwrap();
        ch.request_pty(true, "vt100", 200, 24, 0, 0, &[])
            .await
            .unwrap();
        ch.request_shell(true).await.unwrap();
        Self {
            ch,
            buf: String::new(),
        }
    }

    async fn read_until(&mut self, until: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.buf.ends_with(until) {
            let msg = tokio::time::timeout_at(deadline, self.ch.wait())
                .await
                .unwrap_or_else(|_| panic!("no {until:?} in {:?}", self.buf));
            match msg {
                Some(ChannelMsg::Data { data }) => {
                    self.buf.push_str(&String::from_utf8_lossy(&data))
                }
                Some(_) => {}
                None => panic!("channel closed; read {:?}", self.buf),
            }
        }
        std::mem::take(&mut self.buf)
    }

    async fn send(&mut self, text: &str) {
        self.ch.data(text.as_bytes()).await.unwrap();
    }
}

async fn cli(d: &DeviceHandle, opts: CliOptions) -> CliServer {
    CliServer::start(Arc::clone(d.device()), "127.0.0.1:0".parse().unwrap(), opts)
        .await
        .unwrap()
}

#[tokio::test]
async fn exec_channel_answers_from_the_device_model() {
    let fleet = fleet_with_creds().await;
    let d = fleet.nth(0).unwrap();
    let srv = cli(&d, CliOptions::default()).await;
    assert!(login(&srv, "admin", "wrong").await.is_none());
    assert!(login(&srv, "nobody", "s3cret").await.is_none());
    let h = login(&srv, "admin", "s3cret").await.expect("login");

    let (out, code) = exec(&h, "show version").await;
    assert_eq!(code, 0, "{out}");
    let snap = d.snapshot();
    let short = iosxe_sim::cli::short_version(&snap.running_version);
    assert!(
        out.starts_with(&format!("Cisco IOS XE Software, Version {short}\r\n")),
        "{out}"
    );
    assert!(out.contains("System image file is \"flash:packages.conf\"\r\n"));
    assert!(out.contains(&format!(
        "System Serial Number               : {}",
        snap.serial
    )));
    assert!(
        out.contains(&format!(
            "Model Number                       : {}\r\n",
            snap.model
        )),
        "{out}"
    );
    assert!(out.contains(&format!("{} uptime is ", snap.hostname)));

    // Abbreviations, and running-config follows a control-API change.
    let (out, _) = exec(&h, "sh run").await;
    assert!(
        out.contains(&format!("\r\nhostname {}\r\n", snap.hostname)),
        "{out}"
    );
    d.apply(StatePatch {
        hostname: Some("core-sw-7".into()),
        ..Default::default()
    })
    .unwrap();
    let (out, _) = exec(&h, "show running-config").await;
    assert!(out.contains("\r\nhostname core-sw-7\r\n"), "{out}");
    assert!(out.starts_with("Building configuration...\r\n\r\nCurrent configuration : "));

    let (out, _) = exec(&h, "show install summary").await;
    assert!(
        out.contains(&format!("IMG   C    {}\r\n", snap.running_version)),
        "{out}"
    );
    let (out, _) = exec(&h, "show boot").await;
    assert!(
        out.contains("BOOT variable = flash:packages.conf;"),
        "{out}"
    );
    let (out, _) = exec(&h, "dir flash:").await;
    assert!(out.starts_with("Directory of flash:/\r\n"), "{out}");
    assert!(out.contains("packages.conf"), "{out}");
    assert!(out.trim_end().ends_with("bytes free)"), "{out}");
    let (out, _) = exec(&h, "show clock").await;
    assert!(out.starts_with('*') && out.contains(" UTC "), "{out}");
    let (out, _) = exec(&h, "show processes cpu").await;
    assert!(
        out.starts_with("CPU utilization for five seconds:"),
        "{out}"
    );

    // Error forms, exit status 1.
    let (out, code) = exec(&h, "show bogus").await;
    assert_eq!(code, 1);
    assert!(
        out.ends_with("^\r\n% Invalid input detected at '^' marker.\r\n\r\n"),
        "{out:?}"
    );
    let (out, code) = exec(&h, "show").await;
    assert_eq!((out.as_str(), code), ("% Incomplete command.\r\n\r\n", 1));
    let (out, code) = exec(&h, "show install").await;
    assert_eq!((out.as_str(), code), ("% Incomplete command.\r\n\r\n", 1));
    let (out, code) = exec(&h, "e").await;
    assert_eq!(code, 1);
    assert_eq!(out, "% Ambiguous command:  \"e\"\r\n");
}

#[tokio::test]
async fn interactive_shell_with_paging_enable_and_errors() {
    let fleet = fleet_with_creds().await;
    let d = fleet.nth(0).unwrap();
    let host = d.snapshot().hostname;
    let srv = cli(
        &d,
        CliOptions {
            user_exec: true,
            enable_secret: Some("en4ble".into()),
        },
    )
    .await;
    let h = login(&srv, "admin", "s3cret").await.unwrap();
    let mut sh = Shell::open(&h).await;
    sh.read_until(&format!("{host}>")).await;

    // User exec: running-config is not there; paging is on by default.
    sh.send("show running-config\r").await;
    let out = sh.read_until(&format!("{host}>")).await;
    assert!(
        out.contains("% Invalid input detected at '^' marker."),
        "{out}"
    );

    sh.send("show version\r").await;
    let out = sh.read_until(" --More-- ").await;
    assert!(out.starts_with("show version\r\n"), "echo: {out:?}");
    sh.send("q").await;
    sh.read_until(&format!("{host}>")).await;

    sh.send("enable\r").await;
    sh.read_until("Password: ").await;
    sh.send("nope\r").await;
    sh.read_until("Password: ").await;
    sh.send("en4ble\r").await;
    let out = sh.read_until(&format!("{host}#")).await;
    assert!(!out.contains("en4ble"), "the secret is not echoed: {out:?}");

    sh.send("terminal length 0\r").await;
    sh.read_until(&format!("{host}#")).await;
    sh.send("terminal width 0\r").await;
    sh.read_until(&format!("{host}#")).await;
    sh.send("show version\r").await;
    let out = sh.read_until(&format!("{host}#")).await;
    assert!(!out.contains("--More--"), "{out}");
    assert!(out.contains("Configuration register is 0x102\r\n"), "{out}");

    sh.send("show running-config\r").await;
    let out = sh.read_until(&format!("{host}#")).await;
    assert!(out.contains(&format!("hostname {host}\r\n")), "{out}");
    assert!(out.contains("\r\nend\r\n"), "{out}");

    sh.send("show clok\r").await;
    let out = sh.read_until(&format!("{host}#")).await;
    // The caret is under the bad word, counted from the prompt.
    let caret = out.lines().find(|l| l.trim() == "^").unwrap();
    assert_eq!(caret.len(), format!("{host}#show ").len() + 1, "{out}");

    sh.send("exit\r").await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(m) = sh.ch.wait().await {
            if matches!(m, ChannelMsg::Close | ChannelMsg::Eof) {
                return true;
            }
        }
        true
    })
    .await
    .unwrap();
    assert!(closed);
}

#[tokio::test]
async fn reboot_takes_the_ssh_listener_down_and_back() {
    let fleet = fleet_with_creds().await;
    let d = fleet.nth(0).unwrap();
    let srv = cli(&d, CliOptions::default()).await;
    let h = login(&srv, "admin", "s3cret").await.unwrap();
    let mut sh = Shell::open(&h).await;
    sh.read_until("#").await;
    d.device().request_reboot(1, 0, "test").expect("reboot");
    assert!(
        common::eventually(Duration::from_secs(5), || common::refused(srv.addr())).await,
        "SSH listener still open during the reboot"
    );
    // The open session was dropped with it.
    let gone = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(m) = sh.ch.wait().await {
            if matches!(m, ChannelMsg::Close) {
                break;
            }
        }
    })
    .await;
    assert!(gone.is_ok(), "session survived the reboot");
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            login(&srv, "admin", "s3cret").await.is_some()
        })
        .await,
        "SSH listener did not come back after the reboot"
    );
}
