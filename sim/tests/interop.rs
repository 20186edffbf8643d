//! Interop: the simulator driven by standard client tools, as subprocesses,
//! over loopback. The tools are the ones `sim/interop/install-tools.sh`
//! installs under `$CVK_INTEROP_DIR` (default `~/.cache/cvk/interop`):
//!
//! * `pygnmicli` (PyPI pygnmi): gNMI Capabilities, Get, Subscribe ONCE, Set;
//! * `cisco-gnmi` (PyPI cisco-gnmi, Cisco's client, IOS XE wrapper);
//! * `gnoi-call` (`sim/interop/gnoi_call.py` on PyPI grpc-requests and
//!   grpcio-reflection): any gNOI method, types from the server's reflection.
//!
//! A missing tool skips the test with a printed reason, or fails it when
//! `CVK_REQUIRE_INTEROP=1` (CI sets it after installing the tools).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::eventually;
use iosxe_sim::{
    DeviceHandle, FaultKind, FaultSpec, Fleet, FleetConfig, FleetHandle, Power, Profile, TlsOptions,
};
use serde_json::Value;

const USER: &str = "netops";
const PASS: &str = "s3cret-{n}";
const V_17_18: &str = "17.18.02.0.4112.1766116039";
const V_NEW: &str = "17.18.03.0.4200.1770000000";
/// Bound on any one tool run.
const TOOL_LIMIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------- tools

fn interop_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CVK_INTEROP_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/cvk/interop")
}

/// The tool at `rel` under the interop dir; `None` (test skipped, reason
/// printed) when it is missing, a panic when CI requires the tools.
fn find(rel: &str) -> Option<PathBuf> {
    let p = interop_dir().join(rel);
    if p.is_file() {
        return Some(p);
    }
    let why = format!(
        "{} is missing: run `bash sim/interop/install-tools.sh` (or set CVK_INTEROP_DIR)",
        p.display()
    );
    if std::env::var("CVK_REQUIRE_INTEROP").as_deref() == Ok("1") {
        panic!("CVK_REQUIRE_INTEROP=1 and {why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

macro_rules! need {
    ($rel:expr) => {
        match find($rel) {
            Some(p) => p,
            None => return,
        }
    };
}

const PYGNMI: &str = "gnmi/bin/pygnmicli";
const GNOI_CALL: &str = "gnmi/bin/gnoi-call";
const CISCO_GNMI: &str = "cisco-gnmi/bin/cisco-gnmi";

#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `program args` with `stdin`, bounded by [`TOOL_LIMIT`].
async fn run(program: &Path, args: &[String], stdin: Option<String>) -> Out {
    run_cmd(tokio::process::Command::new(program), args, stdin).await
}

async fn run_cmd(mut cmd: tokio::process::Command, args: &[String], stdin: Option<String>) -> Out {
    use tokio::io::AsyncWriteExt;
    // Tools write logs into their working directory (pygnmicli:
    // `log/execution.log`): give each run a scratch one.
    let cwd = tempfile::tempdir().unwrap();
    cmd.args(args)
        .current_dir(cwd.path())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("PYTHONUNBUFFERED", "1")
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("tool starts");
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        tokio::spawn(async move {
            let _ = w.write_all(input.as_bytes()).await;
        });
    }
    let out = tokio::time::timeout(TOOL_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("tool {args:?} did not finish in {TOOL_LIMIT:?}"))
        .unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The JSON documents a tool printed: each starts with `{` in column 0 and
/// ends with `}` in column 0 (pretty-printed) or on the same line.
fn json_docs(text: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        match cur.as_mut() {
            None if line.starts_with('{') => {
                if let Ok(v) = serde_json::from_str::<Value>(line) {
                    docs.push(v);
                } else {
                    cur = Some(format!("{line}\n"));
                }
            }
            None => {}
            Some(buf) => {
                buf.push_str(line);
                buf.push('\n');
                if line.starts_with('}') {
                    let text = cur.take().unwrap();
                    docs.push(
                        serde_json::from_str(&text)
                            .unwrap_or_else(|e| panic!("bad JSON from tool ({e}):\n{text}")),
                    );
                }
            }
        }
    }
    docs
}

// ------------------------------------------------------------- fleets

fn password(i: usize) -> String {
    PASS.replace("{n}", &i.to_string())
}

async fn start(profile: &str, tls: bool, reboot_ms: u64) -> FleetHandle {
    let mut cfg = FleetConfig::new(1, Profile::builtin(profile).unwrap())
        .reboot_ms(reboot_ms)
        .credentials(USER, PASS);
    if tls {
        cfg = cfg.tls(TlsOptions {
            mtls: false,
            cert_dir: None,
        });
    }
    Fleet::start(cfg).await.unwrap()
}

fn target(d: &DeviceHandle) -> String {
    d.addr().to_string()
}

fn ca_path(f: &FleetHandle) -> String {
    f.cert_files()
        .expect("a TLS fleet writes its CA")
        .ca_cert
        .display()
        .to_string()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

// ------------------------------------------------------------- pygnmi

/// `pygnmicli` arguments for device 0 (insecure unless `ca`).
fn pygnmi_args(d: &DeviceHandle, ca: Option<&str>, pass: &str, rest: &[&str]) -> Vec<String> {
    let mut a = s(&["-t", &target(d), "-u", USER, "-p", pass]);
    match ca {
        Some(ca) => a.extend(s(&["-r", ca])),
        None => a.push("-i".into()),
    }
    a.extend(s(rest));
    a
}

/// `path => val` of every update in the notifications of a pygnmi Get.
fn get_updates(docs: &[Value]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for d in docs {
        for n in d["notification"].as_array().into_iter().flatten() {
            for u in n["update"].as_array().into_iter().flatten() {
                out.push((
                    u["path"].as_str().unwrap_or("").to_string(),
                    u["val"].clone(),
                ));
            }
        }
    }
    out
}

fn lookup<'a>(updates: &'a [(String, Value)], path: &str) -> &'a Value {
    &updates
        .iter()
        .find(|(p, _)| p == path)
        .unwrap_or_else(|| panic!("no update for {path} in {updates:?}"))
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pygnmi_capabilities_get_json_ietf_and_subscribe_once() {
    let tool = need!(PYGNMI);
    let f = start("c9300-17.18", false, 300).await;
    let d = f.nth(0).unwrap();
    let pw = password(0);

    let out = run(
        &tool,
        &pygnmi_args(&d, None, &pw, &["-o", "capabilities"]),
        None,
    )
    .await;
    assert!(out.ok(), "{out:?}");
    let caps = json_docs(&out.stdout).pop().expect("capabilities JSON");
    let models: Vec<&str> = caps["supported_models"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    for m in [
        "openconfig-system",
        "openconfig-platform",
        "Cisco-IOS-XE-native",
        "Cisco-IOS-XE-install-oper",
        "Cisco-IOS-XE-memory-oper",
    ] {
        assert!(models.contains(&m), "{m} missing from {models:?}");
    }
    let encodings = caps["supported_encodings"].to_string().to_lowercase();
    assert!(encodings.contains("json_ietf"), "{encodings}");
    assert_eq!(caps["gnmi_version"], "0.4.0", "{caps}");

    let snap = d.snapshot();
    let flash = snap
        .filesystems
        .iter()
        .find(|fs| fs.name == "flash:")
        .unwrap()
        .clone();
    let out = run(
        &tool,
        &pygnmi_args(
            &d,
            None,
            &pw,
            &[
                "-o",
                "get",
                "-e",
                "json_ietf",
                "-x",
                "/system/state/software-version",
                "/system/state/boot-time",
                "/system/install/state/state",
                "/system/filesystems/filesystem[name=flash:]/state/free",
                "/system/memory/state/physical",
            ],
        ),
        None,
    )
    .await;
    assert!(out.ok(), "{out:?}");
    let ups = get_updates(&json_docs(&out.stdout));
    assert_eq!(lookup(&ups, "system/state/software-version"), V_17_18);
    // JSON_IETF (RFC 7951): uint64 leaves are strings.
    assert_eq!(
        lookup(&ups, "system/state/boot-time"),
        &Value::String(snap.boot_time_ns.to_string())
    );
    assert_eq!(lookup(&ups, "system/install/state/state"), "committed");
    assert_eq!(
        lookup(
            &ups,
            "system/filesystems/filesystem[name=flash:]/state/free"
        ),
        &Value::String(flash.free.to_string())
    );
    assert!(lookup(&ups, "system/memory/state/physical").is_string());
    let gets = d.journal_for("/gnmi.gNMI/Get");
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(gets[0].code, "OK");

    let out = run(
        &tool,
        &pygnmi_args(
            &d,
            None,
            &pw,
            &[
                "-o",
                "subscribe-once",
                "-x",
                "/system/state/software-version",
                "/system/install/state/committed",
            ],
        ),
        None,
    )
    .await;
    assert!(out.ok(), "{out:?}");
    let docs = json_docs(&out.stdout);
    let updates: Vec<(String, Value)> = docs
        .iter()
        .flat_map(|doc| {
            doc["update"]["update"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|u| {
            (
                u["path"].as_str().unwrap_or("").to_string(),
                u["val"].clone(),
            )
        })
        .collect();
    assert_eq!(lookup(&updates, "system/state/software-version"), V_17_18);
    assert_eq!(
        lookup(&updates, "system/install/state/committed"),
        &Value::Bool(true)
    );
    assert!(
        docs.last().map(|x| x["sync_response"] == Value::Bool(true)) == Some(true),
        "ONCE ends with sync_response: {docs:?}"
    );
    let subs = d.journal_for("/gnmi.gNMI/Subscribe");
    assert_eq!(subs.len(), 1, "{subs:?}");
    assert_eq!(subs[0].fields.get("mode").map(String::as_str), Some("ONCE"));

    // Wrong password: UNAUTHENTICATED, which pygnmi reports and exits on.
    let out = run(
        &tool,
        &pygnmi_args(&d, None, "wrong", &["-o", "capabilities"]),
        None,
    )
    .await;
    assert!(!out.ok(), "{out:?}");
    assert!(out.all().contains("authentication failed"), "{out:?}");
    let caps = d.journal_for("/gnmi.gNMI/Capabilities");
    assert_eq!(caps.last().unwrap().code, "UNAUTHENTICATED");

    // Set is not implemented, and says so.
    let out = run(
        &tool,
        &pygnmi_args(
            &d,
            None,
            &pw,
            &["-o", "set-delete", "-x", "/system/config/hostname"],
        ),
        None,
    )
    .await;
    assert!(!out.ok(), "{out:?}");
    assert!(
        out.all()
            .contains("gNMI Set is not implemented by the simulator"),
        "{out:?}"
    );
    let set = d.journal_for("/gnmi.gNMI/Set");
    assert_eq!(set.len(), 1, "{set:?}");
    assert_eq!(set[0].code, "UNIMPLEMENTED");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pygnmi_over_tls_with_the_written_ca() {
    let tool = need!(PYGNMI);
    let f = start("c9300-26.01", true, 300).await;
    let d = f.nth(0).unwrap();
    let ca = ca_path(&f);
    let out = run(
        &tool,
        &pygnmi_args(
            &d,
            Some(&ca),
            &password(0),
            &[
                "-o",
                "get",
                "-e",
                "json_ietf",
                "-x",
                "/system/state/software-version",
            ],
        ),
        None,
    )
    .await;
    assert!(out.ok(), "{out:?}");
    let ups = get_updates(&json_docs(&out.stdout));
    assert_eq!(
        lookup(&ups, "system/state/software-version"),
        d.snapshot().running_version.as_str()
    );
    assert!(d.snapshot().running_version.starts_with("26.01."));
    f.shutdown().await;
}

// ----------------------------------------------------------- gnoi-call

fn gnoi_args(
    d: &DeviceHandle,
    ca: Option<&str>,
    pass: &str,
    method: &str,
    reqs: &[&str],
) -> Vec<String> {
    let mut a = vec![
        target(d),
        method.to_string(),
        "-H".into(),
        format!("username:{USER}"),
        "-H".into(),
        format!("password:{pass}"),
        "--timeout".into(),
        "60".into(),
    ];
    if let Some(ca) = ca {
        a.extend(s(&["--ca", ca]));
    }
    a.extend(s(reqs));
    a
}

/// One JSON response per line.
fn lines(out: &Out) -> Vec<Value> {
    out.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

async fn call(tool: &Path, d: &DeviceHandle, method: &str, reqs: &[&str]) -> Out {
    run(tool, &gnoi_args(d, None, &password(0), method, reqs), None).await
}

/// Calls and expects success; returns the responses.
async fn call_ok(tool: &Path, d: &DeviceHandle, method: &str, reqs: &[&str]) -> Vec<Value> {
    let out = call(tool, d, method, reqs).await;
    assert!(out.ok(), "{method}: {out:?}");
    lines(&out)
}

fn num(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("not a number: {v}")),
        Value::Number(n) => n.as_u64().unwrap(),
        _ => panic!("not a number: {v}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gnoi_call_lists_services_and_reads_time_verify_ping_over_reflection() {
    let tool = need!(GNOI_CALL);
    let f = start("c9300-17.18", false, 300).await;
    let d = f.nth(0).unwrap();

    let out = call(&tool, &d, "list", &[]).await;
    assert!(out.ok(), "{out:?}");
    for svc in [
        "gnmi.gNMI",
        "gnoi.certificate.CertificateManagement",
        "gnoi.factory_reset.FactoryReset",
        "gnoi.file.File",
        "gnoi.os.OS",
        "gnoi.system.System",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(out.stdout.lines().any(|l| l == svc), "{svc}: {out:?}");
    }

    let before = now_ns();
    let t = call_ok(&tool, &d, "gnoi.system.System/Time", &[]).await;
    let after = now_ns();
    let t = num(&t[0]["time"]);
    assert!(
        t >= before && t <= after,
        "device clock {t} not in [{before}, {after}]"
    );

    let v = call_ok(&tool, &d, "/gnoi.os.OS/Verify", &[]).await;
    assert_eq!(v[0]["version"], V_17_18);
    assert_eq!(
        v[0]["verify_standby"]["standby_state"]["state"],
        "UNSUPPORTED"
    );

    let p = call_ok(
        &tool,
        &d,
        "/gnoi.system.System/Ping",
        &[r#"{"destination": "127.0.0.1", "count": 3}"#],
    )
    .await;
    assert_eq!(p.len(), 4, "three replies and a summary: {p:?}");
    for (i, r) in p[..3].iter().enumerate() {
        assert_eq!(r["sequence"], i as u64 + 1, "{r}");
        assert_eq!(r["bytes"], 64, "{r}");
    }
    assert_eq!(p[3]["sent"], 3);
    assert_eq!(p[3]["received"], 3);

    // A gRPC error comes back as the tool's error line and exit code.
    let out = call(
        &tool,
        &d,
        "/gnoi.system.System/Ping",
        &[r#"{"destination": "nowhere.invalid"}"#],
    )
    .await;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.contains("ERROR NOT_FOUND"), "{out:?}");

    assert_eq!(d.journal_for("/gnoi.os.OS/Verify").len(), 1);
    assert_eq!(d.journal_for("/gnoi.system.System/Ping").len(), 2);
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gnoi_call_file_put_stat_get_remove() {
    let tool = need!(GNOI_CALL);
    let f = start("c9300-17.18", false, 300).await;
    let d = f.nth(0).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;

    // 150 KiB: three content messages of at most 64 KiB.
    let content: Vec<u8> = (0..150 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let sha = {
        use sha2::Digest;
        sha2::Sha256::digest(&content).to_vec()
    };
    let mut reqs = vec![
        serde_json::json!({"open": {"remote_file": "flash:/interop/cfg.txt", "permissions": 644}})
            .to_string(),
    ];
    for c in content.chunks(64 * 1024) {
        reqs.push(serde_json::json!({"contents": b64.encode(c)}).to_string());
    }
    reqs.push(
        serde_json::json!({"hash": {"method": "SHA256", "hash": b64.encode(&sha)}}).to_string(),
    );
    let before = now_ns();
    let out = run(
        &tool,
        &gnoi_args(&d, None, &password(0), "/gnoi.file.File/Put", &["-"]),
        Some(reqs.join("\n")),
    )
    .await;
    assert!(out.ok(), "{out:?}");
    let after = now_ns();

    let st = call_ok(
        &tool,
        &d,
        "/gnoi.file.File/Stat",
        &[r#"{"path": "flash:/interop/cfg.txt"}"#],
    )
    .await;
    let info = &st[0]["stats"][0];
    // The device names it in its canonical form, without the slash.
    assert_eq!(info["path"], "flash:interop/cfg.txt", "{info}");
    assert_eq!(num(&info["size"]), content.len() as u64);
    assert_eq!(info["permissions"], 644);
    let mtime = num(&info["last_modified"]);
    assert!(
        mtime >= before && mtime <= after,
        "{mtime} not in [{before}, {after}]"
    );

    let got = call_ok(
        &tool,
        &d,
        "/gnoi.file.File/Get",
        &[r#"{"remote_file": "flash:/interop/cfg.txt"}"#],
    )
    .await;
    let mut back = Vec::new();
    for m in &got {
        if let Some(c) = m["contents"].as_str() {
            let bytes = b64.decode(c).unwrap();
            assert!(bytes.len() <= 64 * 1024);
            back.extend(bytes);
        }
    }
    assert_eq!(back, content);
    let hash = &got.last().unwrap()["hash"];
    assert!(
        hash["method"].is_string() && hash["hash"].is_string(),
        "{got:?}"
    );

    call_ok(
        &tool,
        &d,
        "/gnoi.file.File/Remove",
        &[r#"{"remote_file": "flash:/interop/cfg.txt"}"#],
    )
    .await;
    let out = call(
        &tool,
        &d,
        "/gnoi.file.File/Stat",
        &[r#"{"path": "flash:/interop/cfg.txt"}"#],
    )
    .await;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.contains("ERROR NOT_FOUND"), "{out:?}");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gnoi_call_reboot_is_an_outage_then_pygnmi_sees_a_new_boot_time() {
    let tool = need!(GNOI_CALL);
    let pygnmi = need!(PYGNMI);
    let f = start("c9300-17.18", false, 300).await;
    let d = f.nth(0).unwrap();
    let boot0 = d.snapshot().boot_time_ns;
    // Hold the outage until the tool has seen it (however slowly it starts).
    let hold = d
        .inject(FaultSpec::device(FaultKind::EndlessReboot))
        .unwrap();

    let r = call_ok(
        &tool,
        &d,
        "/gnoi.system.System/Reboot",
        &[r#"{"method": "COLD", "message": "interop test"}"#],
    )
    .await;
    assert_eq!(r, vec![serde_json::json!({})]);
    assert!(d.wait_power(Power::Down, Duration::from_secs(10)).await);
    let out = call(&tool, &d, "/gnoi.os.OS/Verify", &[]).await;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.contains("ERROR UNAVAILABLE"), "{out:?}");
    assert!(d.remove_fault(hold));
    assert!(d.wait_power(Power::Up, Duration::from_secs(20)).await);

    let out = run(
        &pygnmi,
        &pygnmi_args(
            &d,
            None,
            &password(0),
            &[
                "-o",
                "get",
                "-e",
                "json_ietf",
                "-x",
                "/system/state/boot-time",
            ],
        ),
        None,
    )
    .await;
    assert!(out.ok(), "{out:?}");
    let boot1 = num(lookup(
        &get_updates(&json_docs(&out.stdout)),
        "system/state/boot-time",
    ));
    assert!(
        boot1 > boot0,
        "boot time {boot1} after reboot, {boot0} before"
    );
    assert_eq!(boot1, d.snapshot().boot_time_ns);

    let reboots = d.journal_for("/gnoi.system.System/Reboot");
    assert_eq!(reboots.len(), 1, "{reboots:?}");
    assert_eq!(
        reboots[0].fields.get("method").map(String::as_str),
        Some("COLD")
    );
    assert_eq!(
        reboots[0].fields.get("message").map(String::as_str),
        Some("interop test")
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gnoi_call_over_tls_with_credentials() {
    let tool = need!(GNOI_CALL);
    let f = start("c9300-17.18", true, 300).await;
    let d = f.nth(0).unwrap();
    let ca = ca_path(&f);

    let out = run(
        &tool,
        &gnoi_args(&d, Some(&ca), &password(0), "/gnoi.os.OS/Verify", &[]),
        None,
    )
    .await;
    assert!(out.ok(), "{out:?}");
    assert_eq!(lines(&out)[0]["version"], V_17_18);

    // By name: the server certificate carries `localhost` too.
    let mut args = gnoi_args(&d, Some(&ca), &password(0), "/gnoi.os.OS/Verify", &[]);
    args[0] = format!("localhost:{}", d.addr().port());
    let out = run(&tool, &args, None).await;
    assert!(out.ok(), "{out:?}");

    let out = run(
        &tool,
        &gnoi_args(&d, Some(&ca), "wrong", "/gnoi.os.OS/Verify", &[]),
        None,
    )
    .await;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.contains("ERROR UNAUTHENTICATED"), "{out:?}");

    // Plaintext against the TLS listener does not get through.
    let out = run(
        &tool,
        &gnoi_args(&d, None, &password(0), "/gnoi.os.OS/Verify", &[]),
        None,
    )
    .await;
    assert!(!out.ok(), "{out:?}");
    let verified = d.journal_for("/gnoi.os.OS/Verify");
    assert_eq!(
        verified.iter().filter(|e| e.code == "OK").count(),
        2,
        "{verified:?}"
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gnoi_call_with_an_mtls_client_certificate() {
    let tool = need!(GNOI_CALL);
    let f = Fleet::start(
        FleetConfig::new(1, Profile::builtin("c9300-17.18").unwrap())
            .credentials(USER, PASS)
            .tls(TlsOptions {
                mtls: true,
                cert_dir: None,
            }),
    )
    .await
    .unwrap();
    let d = f.nth(0).unwrap();
    let files = f.cert_files().unwrap().clone();
    let mut args = gnoi_args(
        &d,
        Some(&files.ca_cert.display().to_string()),
        &password(0),
        "/gnoi.os.OS/Verify",
        &[],
    );
    let without = run(&tool, &args, None).await;
    assert!(
        !without.ok(),
        "no client certificate, no answer: {without:?}"
    );
    args.extend(s(&[
        "--cert",
        &files.client_cert.display().to_string(),
        "--key",
        &files.client_key.display().to_string(),
    ]));
    let out = run(&tool, &args, None).await;
    assert!(out.ok(), "{out:?}");
    assert_eq!(lines(&out)[0]["version"], V_17_18);
    let ok = d.journal_for("/gnoi.os.OS/Verify");
    assert_eq!(
        ok.len(),
        1,
        "the refused handshake never reached gRPC: {ok:?}"
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_17_14_answers_unimplemented_to_the_tools() {
    let tool = need!(GNOI_CALL);
    let f = start("c9300-17.14", false, 300).await;
    let d = f.nth(0).unwrap();

    let out = call(&tool, &d, "list", &[]).await;
    assert!(out.ok(), "{out:?}");
    assert!(
        !out.stdout.lines().any(|l| l == "gnoi.system.System"),
        "{out:?}"
    );
    assert!(out.stdout.lines().any(|l| l == "gnoi.os.OS"), "{out:?}");

    for (method, req) in [
        ("/gnoi.system.System/Time", "{}"),
        ("/gnoi.file.File/Stat", r#"{"path": "flash:"}"#),
    ] {
        let out = call(&tool, &d, method, &[req]).await;
        assert_eq!(out.code, Some(3), "{method}: {out:?}");
        assert!(
            out.stderr.contains("ERROR UNIMPLEMENTED"),
            "{method}: {out:?}"
        );
        assert_eq!(d.journal_for(method)[0].code, "UNIMPLEMENTED");
    }
    let v = call_ok(&tool, &d, "/gnoi.os.OS/Verify", &[]).await;
    assert_eq!(v[0]["version"], d.snapshot().running_version.as_str());
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_install_and_rotate_streams_through_gnoi_call() {
    let tool = need!(GNOI_CALL);
    let f = start("c9300-17.18", false, 300).await;
    let d = f.nth(0).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let ids = |got: &[Value]| -> Vec<String> {
        got[0]["certificate_info"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["certificate_id"].as_str().map(String::from))
            .collect()
    };
    let csr_params = r#"{"type": "CT_X509", "min_key_size": 2048, "key_type": "KT_RSA", "common_name": "sim-0", "ip_address": "192.0.2.10"}"#;

    // generate_csr, then the client closes: a CSR comes back, nothing is installed.
    let req = format!(
        r#"{{"generate_csr": {{"csr_params": {csr_params}, "certificate_id": "gnxi-cert"}}}}"#
    );
    let got = call_ok(
        &tool,
        &d,
        "/gnoi.certificate.CertificateManagement/Install",
        &[&req],
    )
    .await;
    assert_eq!(got.len(), 1, "{got:?}");
    let csr = &got[0]["generated_csr"]["csr"];
    assert_eq!(csr["type"], "CT_X509", "{got:?}");
    let pem = String::from_utf8(b64.decode(csr["csr"].as_str().unwrap()).unwrap()).unwrap();
    assert!(
        pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{pem}"
    );
    let before = call_ok(
        &tool,
        &d,
        "/gnoi.certificate.CertificateManagement/GetCertificates",
        &[],
    )
    .await;
    assert!(!ids(&before).contains(&"gnxi-cert".to_string()));

    // load_certificate with the client's key pair: installed.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["sim-0".to_string()]).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "sim-0");
    let cert = p.self_signed(&key).unwrap().pem();
    let load = serde_json::json!({"load_certificate": {
        "certificate": {"type": "CT_X509", "certificate": b64.encode(cert.as_bytes())},
        "key_pair": {"private_key": b64.encode(key.serialize_pem().as_bytes())},
        "certificate_id": "gnxi-cert"
    }})
    .to_string();
    let got = call_ok(
        &tool,
        &d,
        "/gnoi.certificate.CertificateManagement/Install",
        &[&load],
    )
    .await;
    assert_eq!(got, vec![serde_json::json!({"load_certificate": {}})]);
    let after = call_ok(
        &tool,
        &d,
        "/gnoi.certificate.CertificateManagement/GetCertificates",
        &[],
    )
    .await;
    assert!(ids(&after).contains(&"gnxi-cert".to_string()), "{after:?}");
    assert!(
        ids(&after).iter().any(|i| i.starts_with("TP-self-signed-")),
        "{after:?}"
    );

    // Rotate of a trustpoint that does not exist; GenerateCSR alone.
    let rot = load.replace("gnxi-cert", "no-such-tp");
    let out = call(
        &tool,
        &d,
        "/gnoi.certificate.CertificateManagement/Rotate",
        &[&rot],
    )
    .await;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(
        out.stderr
            .contains("ERROR NOT_FOUND: no trustpoint named no-such-tp"),
        "{out:?}"
    );
    let req = format!(r#"{{"csr_params": {csr_params}, "certificate_id": "x"}}"#);
    let out = call(
        &tool,
        &d,
        "/gnoi.certificate.CertificateManagement/GenerateCSR",
        &[&req],
    )
    .await;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(
        out.stderr
            .contains("ERROR UNIMPLEMENTED: GenerateCSR is not supported on IOS-XE"),
        "{out:?}"
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkimage_then_install_activate_verify_through_gnoi_call() {
    let tool = need!(GNOI_CALL);
    let f = start("c9300-17.18", false, 500).await;
    let d = f.nth(0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("cat9k.bin");
    let mk = std::process::Command::new(env!("CARGO_BIN_EXE_iosxe-sim"))
        .args(["mkimage", "--version", V_NEW, "--size", "2MiB", "--out"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(mk.status.success(), "{mk:?}");
    let bytes = std::fs::read(&img).unwrap();

    let b64 = base64::engine::general_purpose::STANDARD;
    let mut reqs = vec![
        serde_json::json!({"transfer_request": {"version": V_NEW, "package_size": bytes.len()}})
            .to_string(),
    ];
    for c in bytes.chunks(64 * 1024) {
        reqs.push(serde_json::json!({"transfer_content": b64.encode(c)}).to_string());
    }
    reqs.push(r#"{"transfer_end": {}}"#.to_string());
    let out = run(
        &tool,
        &gnoi_args(&d, None, &password(0), "/gnoi.os.OS/Install", &["-"]),
        Some(reqs.join("\n")),
    )
    .await;
    assert!(out.ok(), "{out:?}");
    let resp = lines(&out);
    assert!(resp[0].get("transfer_ready").is_some(), "{resp:?}");
    let last = resp.last().unwrap();
    assert_eq!(last["validated"]["version"], V_NEW, "{resp:?}");
    assert!(
        d.snapshot().staged.iter().any(|s| s.version == V_NEW),
        "{:?}",
        d.snapshot().staged
    );

    let a = call_ok(
        &tool,
        &d,
        "/gnoi.os.OS/Activate",
        &[&format!(r#"{{"version": "{V_NEW}"}}"#)],
    )
    .await;
    assert!(a[0].get("activate_ok").is_some(), "{a:?}");
    // The reboot may be over before the tool has exited: wait for its result.
    assert!(
        eventually(Duration::from_secs(20), || async {
            let s = d.snapshot();
            s.power == Power::Up && s.boot_count == 2 && s.running_version == V_NEW
        })
        .await,
        "{:?}",
        d.snapshot()
    );
    let v = call_ok(&tool, &d, "/gnoi.os.OS/Verify", &[]).await;
    assert_eq!(v[0]["version"], V_NEW);
    assert_eq!(d.journal_for("/gnoi.os.OS/Activate").len(), 1);
    f.shutdown().await;
}

// --------------------------------------------------------- cisco-gnmi

/// cisco-gnmi reads the username and password from prompts; answer them on
/// stdin, in a new session so getpass does not look for a terminal.
async fn cisco(tool: &Path, args: &[String], pass: &str) -> Out {
    let setsid = ["/usr/bin/setsid", "/bin/setsid"]
        .into_iter()
        .find(|p| Path::new(p).is_file());
    let cmd = match setsid {
        Some(s) => {
            let mut c = tokio::process::Command::new(s);
            c.arg("-w").arg(tool);
            c
        }
        None => tokio::process::Command::new(tool),
    };
    run_cmd(cmd, args, Some(format!("{USER}\n{pass}\n"))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cisco_gnmi_capabilities_and_get_with_the_ios_xe_wrapper() {
    let tool = need!(CISCO_GNMI);
    for tls in [false, true] {
        let f = start("c9300-17.18", tls, 300).await;
        let d = f.nth(0).unwrap();
        let mut conn = s(&[&target(&d), "-os", "IOS XE"]);
        if tls {
            conn.extend(s(&["-root_certificates", &ca_path(&f)]));
        } else {
            conn.push("-insecure".into());
        }

        let mut args = s(&["capabilities"]);
        args.extend(conn.clone());
        let out = cisco(&tool, &args, &password(0)).await;
        assert!(out.ok(), "tls={tls}: {out:?}");
        assert!(
            out.all().contains(r#"name: "Cisco-IOS-XE-install-oper""#),
            "{out:?}"
        );
        assert!(
            out.all().contains("supported_encodings: JSON_IETF"),
            "{out:?}"
        );
        assert!(out.all().contains(r#"gNMI_version: "0.4.0""#), "{out:?}");

        let mut args = s(&[
            "get",
            "-xpath",
            "/system/state/software-version",
            "-encoding",
            "JSON_IETF",
        ]);
        args.extend(conn.clone());
        let out = cisco(&tool, &args, &password(0)).await;
        assert!(out.ok(), "tls={tls}: {out:?}");
        assert!(
            out.all()
                .contains(&format!(r#"json_ietf_val: "\"{V_17_18}\"""#)),
            "tls={tls}: {out:?}"
        );
        let gets = d.journal_for("/gnmi.gNMI/Get");
        assert_eq!(gets.len(), 1);
        assert_eq!(gets[0].code, "OK");
        f.shutdown().await;
    }
}
