//! Arbitrary requests to the simulator's gNOI and gNMI services over a real
//! loopback gRPC connection: every one is answered (a response or a status
//! with a specific code and a message), none kills the handler, and the
//! device keeps serving. Bounded: a fixed number of cases per service and a
//! time limit on every call.

mod common;

use std::time::Duration;

use common::*;
use cvk_proto::gnmi::{self as g, g_nmi_client::GNmiClient};
use cvk_proto::gnoi::file::{self as filepb, file_client::FileClient};
use cvk_proto::gnoi::os::{self as ospb, os_client::OsClient};
use cvk_proto::gnoi::system::{self as syspb, system_client::SystemClient};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Time limit for one call and for each message of a stream.
const CALL_LIMIT: Duration = Duration::from_secs(10);
/// Cases per service.
const CASES: u32 = 96;

/// Panics on the simulator's threads, per rig (each rig's runtime names
/// its threads `fuzz-rig-<n>`): a handler that panics in a spawned task only
/// ends its stream, which a client can mistake for a clean end, so every
/// case also checks its rig's count.
static PANICS: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let rig = std::thread::current()
                .name()
                .and_then(|n| n.strip_prefix("fuzz-rig-"))
                .and_then(|n| n.parse::<usize>().ok());
            if let Some(rig) = rig {
                let mut p = PANICS.lock().unwrap_or_else(|e| e.into_inner());
                if p.len() <= rig {
                    p.resize(rig + 1, 0);
                }
                p[rig] += 1;
            }
            previous(info);
        }));
    });
}

fn panics(rig: usize) -> usize {
    let p = PANICS.lock().unwrap_or_else(|e| e.into_inner());
    p.get(rig).copied().unwrap_or(0)
}

/// A status that says what went wrong: a specific code (a panicking or
/// dropped handler shows up as UNKNOWN or a transport error) and a message.
fn clear(what: &str, s: &Status) -> Result<(), TestCaseError> {
    prop_assert!(
        !matches!(s.code(), Code::Unknown | Code::Ok),
        "{what}: unclear status {s:?}"
    );
    prop_assert!(
        !s.message().trim().is_empty(),
        "{what}: status without a message {s:?}"
    );
    Ok(())
}

async fn within<T>(
    what: &str,
    f: impl std::future::Future<Output = T>,
) -> Result<T, TestCaseError> {
    tokio::time::timeout(CALL_LIMIT, f)
        .await
        .map_err(|_| TestCaseError::fail(format!("{what}: no answer within {CALL_LIMIT:?}")))
}

/// File paths: arbitrary text, and text shaped like IOS-XE paths.
fn file_path() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "(flash|bootflash|harddisk|nvram|crashinfo|webui|usbflash0|FLASH|)(:|)/?[a-zA-Z0-9./:_ -]{0,24}",
    ]
}

fn destination() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9a-f.:]{0,24}",
        "[a-z.-]{0,12}(\\.invalid)?",
        Just("localhost".to_owned()),
        Just("203.0.113.9".to_owned()),
        Just("::1".to_owned()),
    ]
}

/// A value of an i64 field, biased to the edges handlers special-case.
fn edgy_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(-1),
        Just(i64::MIN),
        Just(i64::MAX),
        -3i64..1_000_000,
        any::<i64>(),
    ]
}

fn edgy_i32() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(0i32),
        Just(-1),
        Just(i32::MIN),
        Just(i32::MAX),
        -3i32..70_000,
    ]
}

fn gnmi_name() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z-]{0,12}(:[a-z-]{1,8})?",
        Just("*".to_owned()),
        Just("...".to_owned()),
        Just("system".to_owned()),
        Just("state".to_owned()),
        Just("interfaces".to_owned()),
    ]
}

/// gNMI paths: element names and keys from arbitrary and path-like text,
/// in `elem` or the deprecated `element` form, with odd origins.
#[allow(deprecated)]
fn gnmi_path() -> impl Strategy<Value = g::Path> {
    let key = prop::collection::hash_map("[a-z*]{0,6}", "[a-zA-Z0-9/*]{0,8}", 0..3);
    let elems = prop::collection::vec(
        (gnmi_name(), key).prop_map(|(name, key)| g::PathElem { name, key }),
        0..6,
    );
    (
        elems,
        prop::collection::vec(gnmi_name(), 0..3),
        prop_oneof![
            Just(String::new()),
            Just("openconfig".to_owned()),
            any::<String>()
        ],
        "[a-z]{0,4}",
    )
        .prop_map(|(elem, element, origin, target)| g::Path {
            elem,
            element,
            origin,
            target,
        })
}

#[derive(Debug, Clone)]
enum InstallMsg {
    Transfer(String, u64),
    Content(Vec<u8>),
    End,
    Empty,
}

fn install_msg() -> impl Strategy<Value = InstallMsg> {
    prop_oneof![
        (
            prop_oneof![any::<String>(), "[0-9.]{0,20}", Just("17.18.01".to_owned())],
            prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>(), 0u64..4096],
        )
            .prop_map(|(v, n)| InstallMsg::Transfer(v, n)),
        prop::collection::vec(any::<u8>(), 0..2048).prop_map(InstallMsg::Content),
        Just(InstallMsg::End),
        Just(InstallMsg::Empty),
    ]
}

impl InstallMsg {
    fn to_request(&self) -> ospb::InstallRequest {
        use ospb::install_request::Request as R;
        let request = match self {
            InstallMsg::Transfer(version, package_size) => {
                Some(R::TransferRequest(ospb::TransferRequest {
                    version: version.clone(),
                    package_size: *package_size,
                    ..Default::default()
                }))
            }
            InstallMsg::Content(b) => Some(R::TransferContent(b.clone().into())),
            InstallMsg::End => Some(R::TransferEnd(ospb::TransferEnd {})),
            InstallMsg::Empty => None,
        };
        ospb::InstallRequest { request }
    }
}

/// One tokio runtime and one simulated switch for a whole property.
struct Rig {
    id: usize,
    ch: Channel,
    fleet: Option<iosxe_sim::FleetHandle>,
    rt: tokio::runtime::Runtime,
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(f) = self.fleet.take() {
            self.rt.block_on(f.shutdown());
        }
    }
}

impl Rig {
    fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        count_panics();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("fuzz-rig-{id}"))
            .enable_all()
            .build()
            .unwrap();
        let (fleet, ch) = rt.block_on(async {
            let f = fleet("c9300-17.18", 1).await;
            let ch = channel(&f.nth(0).unwrap()).await;
            (f, ch)
        });
        Self {
            id,
            ch,
            fleet: Some(fleet),
            rt,
        }
    }

    /// Runs `CASES` cases of `strategy` through `case`, then checks that the
    /// device still answers.
    fn run<S, F, Fut>(&self, strategy: S, case: F)
    where
        S: Strategy,
        S::Value: std::fmt::Debug,
        F: Fn(Channel, S::Value) -> Fut,
        Fut: std::future::Future<Output = Result<(), TestCaseError>>,
    {
        let mut runner = TestRunner::new(Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&strategy, |v| {
            let before = panics(self.id);
            let r = self.rt.block_on(case(self.ch.clone(), v));
            // A panicking task may still be unwinding: give it a moment.
            std::thread::sleep(Duration::from_millis(2));
            prop_assert_eq!(
                panics(self.id),
                before,
                "the simulator panicked (see stderr)"
            );
            r
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        self.rt.block_on(async {
            let mut sys = SystemClient::new(self.ch.clone());
            sys.time(syspb::TimeRequest {})
                .await
                .expect("the device still serves after the fuzzing");
        });
    }
}

/// Reads a server stream to its end (or `max` messages), checking that it
/// ends with a clear status if it fails.
async fn drain<T>(
    what: &str,
    mut s: tonic::Streaming<T>,
    max: usize,
) -> Result<usize, TestCaseError> {
    let mut n = 0;
    while n < max {
        match within(what, s.message()).await? {
            Ok(Some(_)) => n += 1,
            Ok(None) => break,
            Err(e) => {
                clear(what, &e)?;
                break;
            }
        }
    }
    Ok(n)
}

#[test]
fn file_requests_with_arbitrary_paths() {
    Rig::new().run(
        (0..3usize, file_path()),
        |ch: Channel, (op, path): (usize, String)| async move {
            let mut c = FileClient::new(ch);
            let what = format!("File op {op} {path:?}");
            let clear = |what: &str, e: &Status| -> Result<(), TestCaseError> {
                clear(what, e)?;
                names_path(what, &path, e)
            };
            match op {
                0 => match within(&what, c.stat(filepb::StatRequest { path: path.clone() })).await?
                {
                    Ok(_) => {}
                    Err(e) => clear(&what, &e)?,
                },
                1 => match within(
                    &what,
                    c.get(filepb::GetRequest {
                        remote_file: path.clone(),
                    }),
                )
                .await?
                {
                    Ok(s) => {
                        drain(&what, s.into_inner(), 64).await?;
                    }
                    Err(e) => clear(&what, &e)?,
                },
                _ => match within(
                    &what,
                    c.remove(filepb::RemoveRequest {
                        remote_file: path.clone(),
                    }),
                )
                .await?
                {
                    Ok(_) => {}
                    Err(e) => clear(&what, &e)?,
                },
            }
            Ok(())
        },
    );
}

/// A refusal of a file request names what it refused: the path (as given
/// or quoted) or, for an unknown or read-only filesystem, its prefix.
fn names_path(what: &str, path: &str, s: &Status) -> Result<(), TestCaseError> {
    let m = s.message();
    let fs = path.split_once(':').map(|(p, _)| format!("{p}:"));
    prop_assert!(
        m.contains(path)
            || m.contains(&format!("{path:?}"))
            || fs.is_some_and(|fs| m.contains(&fs)),
        "{what}: {s:?} names neither the path nor its filesystem"
    );
    Ok(())
}

/// What the simulator must refuse in a Ping or Traceroute, in the order it
/// checks: the field the InvalidArgument (or NotFound, for a name that
/// does not resolve) message names.
fn ping_refusal(destination: &str, count: i32, interval: i64, size: i32) -> Option<&'static str> {
    if destination.is_empty() {
        Some("destination")
    } else if unresolvable(destination) {
        Some("Unrecognized host")
    } else if count < -1 {
        Some("count")
    } else if interval < -1 {
        Some("interval")
    } else if !(0..=65468).contains(&size) {
        Some("size")
    } else {
        None
    }
}

fn traceroute_refusal(destination: &str, initial_ttl: u32, max_ttl: i32) -> Option<&'static str> {
    if destination.is_empty() {
        Some("destination")
    } else if unresolvable(destination) {
        Some("Unrecognized host")
    } else if !(0..=255).contains(&max_ttl) {
        Some("max_ttl")
    } else if u64::from(initial_ttl) > if max_ttl == 0 { 30 } else { max_ttl as u64 } {
        Some("initial_ttl")
    } else {
        None
    }
}

/// The simulator's resolver: `.invalid` names and text with white space do
/// not resolve; addresses, `localhost` and other names do.
fn unresolvable(destination: &str) -> bool {
    destination.parse::<std::net::IpAddr>().is_err()
        && destination != "localhost"
        && (destination.ends_with(".invalid") || destination.contains(char::is_whitespace))
}

/// The documentation range (203.0.113.0/24, 2001:db8::/32) never answers.
fn unreachable(destination: &str) -> bool {
    match destination.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => a.octets()[..3] == [203, 0, 113],
        Ok(std::net::IpAddr::V6(a)) => a.segments()[..2] == [0x2001, 0x0db8],
        Err(_) => false,
    }
}

fn expect_refusal(what: &str, s: &Status, field: &str) -> Result<(), TestCaseError> {
    clear(what, s)?;
    let code = if field == "Unrecognized host" {
        Code::NotFound
    } else {
        Code::InvalidArgument
    };
    prop_assert_eq!(s.code(), code, "{}: {:?}", what, s);
    prop_assert!(
        s.message().contains(field),
        "{what}: {s:?} does not name {field}"
    );
    Ok(())
}

#[test]
fn ping_with_arbitrary_parameters() {
    Rig::new().run(
        (
            destination(),
            edgy_i32(),
            // Intervals short enough that an accepted ping answers quickly,
            // plus every invalid value class.
            prop_oneof![edgy_i64(), 1i64..20_000_000, -1_000i64..-1],
            prop_oneof![Just(0i64), Just(-5), 1i64..200_000_000, Just(i64::MAX)],
            prop_oneof![edgy_i32(), Just(65468), Just(65469)],
            0i32..4,
        ),
        |ch: Channel, (destination, count, interval, wait, size, l3)| async move {
            let mut c = SystemClient::new(ch);
            let what = format!(
                "Ping {destination:?} count {count} interval {interval} wait {wait} size {size}"
            );
            let refusal = ping_refusal(&destination, count, interval, size);
            let answer = within(
                &what,
                c.ping(syspb::PingRequest {
                    destination: destination.clone(),
                    count,
                    interval,
                    wait,
                    size,
                    l3protocol: l3,
                    ..Default::default()
                }),
            )
            .await?;
            match (answer, refusal) {
                (Err(e), Some(field)) => expect_refusal(&what, &e, field)?,
                (Err(e), None) => {
                    return Err(TestCaseError::fail(format!("{what}: refused: {e:?}")));
                }
                (Ok(_), Some(field)) => {
                    return Err(TestCaseError::fail(format!(
                        "{what}: accepted, bad {field}"
                    )));
                }
                (Ok(s), None) => {
                    // The first answer: a reply, or for a destination that
                    // never answers, the summary after every probe timed out
                    // (count -1 never ends: not awaited).
                    let probes = if count == 0 { 5 } else { i64::from(count) };
                    if unreachable(&destination) {
                        // Each lost probe waits min(wait, 50 ms) here.
                        let wait_ns = if wait > 0 { wait } else { 2_000_000_000 };
                        let lost = wait_ns.min(50_000_000).saturating_mul(probes);
                        let gaps = interval.max(0).saturating_mul(probes - 1);
                        if count == -1 || lost.saturating_add(gaps) > 3_000_000_000 {
                            return Ok(());
                        }
                    }
                    let mut s = s.into_inner();
                    let first = within(&what, s.message())
                        .await?
                        .map_err(|e| TestCaseError::fail(format!("{what}: {e:?}")))?
                        .ok_or_else(|| TestCaseError::fail(format!("{what}: no answer")))?;
                    if unreachable(&destination) {
                        prop_assert_eq!(i64::from(first.sent), probes, "{}: {:?}", what, first);
                        prop_assert_eq!(first.received, 0, "{}: {:?}", what, first);
                    } else {
                        prop_assert_eq!(first.sequence, 1, "{}: {:?}", what, first);
                        let bytes = if size == 0 { 56 } else { size } + 8;
                        prop_assert_eq!(first.bytes, bytes, "{}: {:?}", what, first);
                    }
                }
            }
            Ok(())
        },
    );
}

#[test]
fn traceroute_with_arbitrary_parameters() {
    Rig::new().run(
        (
            destination(),
            prop_oneof![0u32..40, Just(u32::MAX), Just(1u32 << 31), any::<u32>()],
            prop_oneof![edgy_i32(), Just(255), Just(256), 0i32..40],
            prop_oneof![Just(0i64), Just(-5), 1i64..200_000_000, Just(i64::MAX)],
            0i32..4,
        ),
        |ch: Channel, (destination, initial_ttl, max_ttl, wait, l3)| async move {
            let mut c = SystemClient::new(ch);
            let what =
                format!("Traceroute {destination:?} initial_ttl {initial_ttl} max_ttl {max_ttl}");
            let refusal = traceroute_refusal(&destination, initial_ttl, max_ttl);
            let answer = within(
                &what,
                c.traceroute(syspb::TracerouteRequest {
                    destination: destination.clone(),
                    initial_ttl,
                    max_ttl,
                    wait,
                    l3protocol: l3,
                    ..Default::default()
                }),
            )
            .await?;
            match (answer, refusal) {
                (Err(e), Some(field)) => expect_refusal(&what, &e, field)?,
                (Err(e), None) => {
                    return Err(TestCaseError::fail(format!("{what}: refused: {e:?}")));
                }
                (Ok(_), Some(field)) => {
                    return Err(TestCaseError::fail(format!(
                        "{what}: accepted, bad {field}"
                    )));
                }
                (Ok(s), None) => {
                    // The whole trace: the head, then hops from initial_ttl
                    // (at least 1) in order, none beyond max_ttl.
                    let mut s = s.into_inner();
                    let head = within(&what, s.message())
                        .await?
                        .map_err(|e| TestCaseError::fail(format!("{what}: {e:?}")))?
                        .ok_or_else(|| TestCaseError::fail(format!("{what}: no answer")))?;
                    let max = if max_ttl == 0 { 30 } else { max_ttl };
                    prop_assert_eq!(head.hops, max, "{}: {:?}", what, head);
                    prop_assert!(!head.destination_address.is_empty(), "{what}: {head:?}");
                    let mut want = (initial_ttl as i32).max(1);
                    while let Some(hop) = within(&what, s.message())
                        .await?
                        .map_err(|e| TestCaseError::fail(format!("{what}: {e:?}")))?
                    {
                        prop_assert_eq!(hop.hop, want, "{}: {:?}", what, hop);
                        want += 1;
                    }
                    prop_assert!(want - 1 <= max, "{what}: hop {} beyond max_ttl", want - 1);
                }
            }
            Ok(())
        },
    );
}

#[test]
fn gnmi_get_capabilities_and_subscribe_with_arbitrary_paths() {
    Rig::new().run(
        (
            0..3usize,
            prop::option::of(gnmi_path()),
            prop::collection::vec(gnmi_path(), 0..3),
            prop_oneof![0i32..6, any::<i32>()],
            prop_oneof![0i32..5, any::<i32>()],
            prop_oneof![0i32..4, any::<i32>()],
        ),
        |ch: Channel, (op, prefix, paths, encoding, kind, mode)| async move {
            let mut c = GNmiClient::new(ch);
            let what = format!("gNMI op {op} prefix {prefix:?} paths {paths:?}");
            match op {
                0 => match within(
                    &what,
                    c.get(g::GetRequest {
                        prefix,
                        path: paths,
                        r#type: kind,
                        encoding,
                        ..Default::default()
                    }),
                )
                .await?
                {
                    Ok(_) => {}
                    Err(e) => clear(&what, &e)?,
                },
                1 => match within(&what, c.capabilities(g::CapabilityRequest::default())).await? {
                    Ok(_) => {}
                    Err(e) => clear(&what, &e)?,
                },
                _ => {
                    let list = g::SubscriptionList {
                        prefix,
                        subscription: paths
                            .into_iter()
                            .map(|p| g::Subscription {
                                path: Some(p),
                                mode: kind,
                                ..Default::default()
                            })
                            .collect(),
                        mode,
                        encoding,
                        ..Default::default()
                    };
                    let req = g::SubscribeRequest {
                        request: Some(g::subscribe_request::Request::Subscribe(list)),
                        ..Default::default()
                    };
                    let (tx, rx) = tokio::sync::mpsc::channel(1);
                    tx.send(req).await.unwrap();
                    // Half-close: POLL and ONCE subscriptions then end.
                    drop(tx);
                    match within(&what, c.subscribe(ReceiverStream::new(rx))).await? {
                        // The first notification or the error; a valid
                        // STREAM subscription never ends on its own.
                        Ok(s) => {
                            drain(&what, s.into_inner(), 1).await?;
                        }
                        Err(e) => clear(&what, &e)?,
                    }
                }
            }
            Ok(())
        },
    );
}

/// How an OS.Install stream must end for a sequence of messages.
#[derive(Debug, PartialEq)]
enum InstallEnd {
    /// A status with this code whose message contains the text.
    Status(Code, &'static str),
    /// An InstallError response (random content is never a valid image).
    InstallError,
}

/// The end the simulator owes `msgs` once it said TransferReady: decided
/// by the first message that is not content.
fn install_end_after_ready(rest: &[InstallMsg]) -> InstallEnd {
    match rest.iter().find(|m| !matches!(m, InstallMsg::Content(_))) {
        Some(InstallMsg::Transfer(..)) => {
            InstallEnd::Status(Code::InvalidArgument, "transfer_request sent twice")
        }
        Some(InstallMsg::Empty) => InstallEnd::Status(Code::InvalidArgument, "no request set"),
        Some(_) => InstallEnd::InstallError,
        None => InstallEnd::Status(Code::Aborted, "before transfer_end"),
    }
}

#[test]
fn os_install_with_arbitrary_message_sequences() {
    use ospb::install_response::Response as A;
    Rig::new().run(
        prop::collection::vec(install_msg(), 0..6),
        |ch: Channel, msgs: Vec<InstallMsg>| async move {
            let what = format!("OS.Install {msgs:?}");
            let (tx, rx) = tokio::sync::mpsc::channel(msgs.len() + 1);
            for m in &msgs {
                tx.send(m.to_request()).await.unwrap();
            }
            // The client's side of the stream ends after the last message.
            drop(tx);
            let mut c = OsClient::new(ch.clone());
            let mut answers = Vec::new();
            let mut status = None;
            match within(&what, c.install(ReceiverStream::new(rx))).await? {
                Ok(s) => {
                    let mut s = s.into_inner();
                    loop {
                        match within(&what, s.message()).await? {
                            Ok(Some(a)) => answers.push(a.response),
                            Ok(None) => break,
                            Err(e) => {
                                clear(&what, &e)?;
                                status = Some(e);
                                break;
                            }
                        }
                        prop_assert!(answers.len() < 1000, "{what}: endless answers");
                    }
                }
                Err(e) => {
                    clear(&what, &e)?;
                    status = Some(e);
                }
            }
            let check_status = |code: Code, text: &str| -> Result<(), TestCaseError> {
                let s = status.as_ref().ok_or_else(|| {
                    TestCaseError::fail(format!("{what}: no status, {answers:?}"))
                })?;
                prop_assert_eq!(s.code(), code, "{}: {:?}", what, s);
                prop_assert!(
                    s.message().contains(text),
                    "{what}: {s:?} does not say {text:?}"
                );
                Ok(())
            };
            match msgs.first() {
                Some(InstallMsg::Transfer(..)) => match answers.first() {
                    // Refused at once (size, version, space) or already there.
                    Some(Some(A::InstallError(e))) => {
                        prop_assert!(!e.detail.is_empty(), "{what}: {e:?} without a detail");
                        prop_assert_eq!(answers.len(), 1, "{}: {:?}", what, answers);
                    }
                    Some(Some(A::Validated(_))) => {
                        prop_assert_eq!(answers.len(), 1, "{}: {:?}", what, answers);
                    }
                    Some(Some(A::TransferReady(_))) => {
                        let rest = &answers[1..];
                        let (last, between) = match rest.split_last() {
                            Some((l, b)) => (Some(l), b),
                            None => (None, rest),
                        };
                        for a in between {
                            prop_assert!(
                                matches!(a, Some(A::TransferProgress(_))),
                                "{what}: {a:?} before the end"
                            );
                        }
                        let ended_with_error = matches!(last, Some(Some(A::InstallError(_))));
                        match install_end_after_ready(&msgs[1..]) {
                            // Content may be refused before the end decides
                            // (more bytes than announced, no space).
                            _ if ended_with_error => prop_assert!(status.is_none(), "{what}"),
                            InstallEnd::InstallError => {
                                prop_assert!(ended_with_error, "{what}: {answers:?} {status:?}")
                            }
                            InstallEnd::Status(code, text) => {
                                if let Some(l) = last {
                                    prop_assert!(
                                        matches!(l, Some(A::TransferProgress(_))),
                                        "{what}: {l:?}"
                                    );
                                }
                                check_status(code, text)?;
                            }
                        }
                    }
                    other => {
                        return Err(TestCaseError::fail(format!(
                            "{what}: first answer {other:?}, status {status:?}"
                        )));
                    }
                },
                // Nothing, or not a transfer_request, first.
                _ => {
                    prop_assert!(answers.is_empty(), "{what}: {answers:?}");
                    check_status(Code::InvalidArgument, "must be transfer_request")?;
                }
            }
            // Verify still answers: no half-open install wedges the service.
            within(&what, OsClient::new(ch).verify(ospb::VerifyRequest {}))
                .await?
                .map_err(|e| TestCaseError::fail(format!("{what}: then Verify failed: {e}")))?;
            Ok(())
        },
    );
}
