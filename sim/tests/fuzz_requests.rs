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
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (fleet, ch) = rt.block_on(async {
            let f = fleet("c9300-17.18", 1).await;
            let ch = channel(&f.nth(0).unwrap()).await;
            (f, ch)
        });
        Self {
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
        let result = runner.run(&strategy, |v| self.rt.block_on(case(self.ch.clone(), v)));
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

#[test]
fn ping_and_traceroute_with_arbitrary_parameters() {
    Rig::new().run(
        (
            any::<bool>(),
            destination(),
            edgy_i32(),
            edgy_i64(),
            // A bounded per-probe wait keeps each case short; the handlers'
            // parsing of it is covered by the other fields' edge values.
            prop_oneof![Just(0i64), Just(-5), 1i64..200_000_000],
            edgy_i32(),
            0i32..4,
            any::<u32>(),
        ),
        |ch: Channel, (trace, destination, count, interval, wait, size, l3, ttl)| async move {
            let mut c = SystemClient::new(ch);
            let what = format!(
                "{} {destination:?}",
                if trace { "Traceroute" } else { "Ping" }
            );
            let answer = if trace {
                within(
                    &what,
                    c.traceroute(syspb::TracerouteRequest {
                        destination,
                        initial_ttl: ttl % 300,
                        max_ttl: size,
                        wait,
                        l3protocol: l3,
                        ..Default::default()
                    }),
                )
                .await?
            } else {
                match within(
                    &what,
                    c.ping(syspb::PingRequest {
                        destination,
                        count,
                        interval,
                        wait,
                        size,
                        l3protocol: l3,
                        ..Default::default()
                    }),
                )
                .await?
                {
                    // Only the first reply: a valid ping may run for hours.
                    Ok(s) => return drain(&what, s.into_inner(), 1).await.map(drop),
                    Err(e) => Err(e),
                }
            };
            match answer {
                Ok(s) => {
                    drain(&what, s.into_inner(), 1).await?;
                }
                Err(e) => clear(&what, &e)?,
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

#[test]
fn os_install_with_arbitrary_message_sequences() {
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
            match within(&what, c.install(ReceiverStream::new(rx))).await? {
                Ok(s) => {
                    let mut s = s.into_inner();
                    let mut answers = 0;
                    loop {
                        match within(&what, s.message()).await? {
                            Ok(Some(_)) => answers += 1,
                            Ok(None) => {
                                // A stream that ends cleanly must have said
                                // something (InstallError, Validated...).
                                prop_assert!(answers > 0, "{what}: ended without an answer");
                                break;
                            }
                            Err(e) => {
                                clear(&what, &e)?;
                                break;
                            }
                        }
                        prop_assert!(answers < 1000, "{what}: endless answers");
                    }
                }
                Err(e) => clear(&what, &e)?,
            }
            // Verify still answers: no half-open install wedges the service.
            within(&what, OsClient::new(ch).verify(ospb::VerifyRequest {}))
                .await?
                .map_err(|e| TestCaseError::fail(format!("{what}: then Verify failed: {e}")))?;
            Ok(())
        },
    );
}
