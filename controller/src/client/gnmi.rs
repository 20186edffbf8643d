//! `gnmi.gNMI`: Capabilities and Get on the control class, Subscribe on the
//! telemetry class.
//!
//! Paths are written as strings, `origin:/elem/elem[key=value]/elem`, e.g.
//! `openconfig:/system/state/software-version` or
//! `rfc7951:/Cisco-IOS-XE-native:native/hostname` (IOS-XE's native origin).
//! A leading word followed by `:/` is the origin; a colon inside an element
//! (a module prefix) is part of its name. Values come back as
//! `serde_json::Value`: JSON and JSON_IETF payloads are parsed, scalars
//! mapped, bytes hex-encoded.

use std::collections::BTreeMap;
use std::time::Duration;

use cvk_proto::gnmi as pb;
use cvk_proto::gnmi::g_nmi_client::GNmiClient;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub use pb::SubscriptionMode;
pub use pb::subscription_list::Mode as SubscriptionListMode;

use super::{ClientError, DeviceClient, MAX_DECODE_CONTROL, rpcs};

fn client(ch: tonic::transport::Channel) -> GNmiClient<tonic::transport::Channel> {
    GNmiClient::new(ch).max_decoding_message_size(MAX_DECODE_CONTROL)
}

/// Parses `origin:/a/b[k=v]/c` into a gNMI path.
pub fn parse_path(s: &str) -> Result<pb::Path, ClientError> {
    let bad = |why: &str| ClientError::InvalidRequest(format!("gNMI path {s:?}: {why}"));
    let (origin, rest) = match s.find(":/") {
        Some(i) if !s[..i].contains('/') && !s[..i].is_empty() => (&s[..i], &s[i + 1..]),
        _ => ("", s),
    };
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let mut elems = Vec::new();
    let mut cur = String::new();
    let mut chars = rest.chars().peekable();
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    let mut name: Option<String> = None;
    let finish = |name: &mut Option<String>,
                  cur: &mut String,
                  keys: &mut BTreeMap<String, String>,
                  elems: &mut Vec<pb::PathElem>|
     -> Result<(), ClientError> {
        let n = name.take().unwrap_or_else(|| std::mem::take(cur));
        if n.is_empty() {
            return Err(bad("empty element"));
        }
        elems.push(pb::PathElem {
            name: n,
            key: std::mem::take(keys).into_iter().collect(),
        });
        cur.clear();
        Ok(())
    };
    if rest.is_empty() {
        return Ok(pb::Path {
            origin: origin.to_owned(),
            ..Default::default()
        });
    }
    while let Some(c) = chars.next() {
        match c {
            '/' => finish(&mut name, &mut cur, &mut keys, &mut elems)?,
            '[' => {
                if name.is_none() {
                    name = Some(std::mem::take(&mut cur));
                }
                let mut key = String::new();
                let mut val = String::new();
                let mut in_val = false;
                let mut closed = false;
                while let Some(k) = chars.next() {
                    match k {
                        '\\' => {
                            if let Some(esc) = chars.next() {
                                if in_val { val.push(esc) } else { key.push(esc) }
                            }
                        }
                        '=' if !in_val => in_val = true,
                        ']' => {
                            closed = true;
                            break;
                        }
                        other => {
                            if in_val {
                                val.push(other)
                            } else {
                                key.push(other)
                            }
                        }
                    }
                }
                if !closed || !in_val || key.is_empty() {
                    return Err(bad("malformed [key=value]"));
                }
                keys.insert(key, val);
            }
            other => {
                if name.is_some() {
                    return Err(bad("text after a ] must start a new element with /"));
                }
                cur.push(other);
            }
        }
    }
    finish(&mut name, &mut cur, &mut keys, &mut elems)?;
    Ok(pb::Path {
        origin: origin.to_owned(),
        elem: elems,
        ..Default::default()
    })
}

/// Formats a gNMI path (prefix joined with path) as a string.
pub fn format_path(prefix: Option<&pb::Path>, path: Option<&pb::Path>) -> String {
    let mut out = String::new();
    let origin = path
        .map(|p| p.origin.as_str())
        .filter(|o| !o.is_empty())
        .or_else(|| prefix.map(|p| p.origin.as_str()).filter(|o| !o.is_empty()));
    if let Some(o) = origin {
        out.push_str(o);
        out.push(':');
    }
    let mut any = false;
    for p in [prefix, path].into_iter().flatten() {
        for e in &p.elem {
            any = true;
            out.push('/');
            out.push_str(&e.name);
            let mut keys: Vec<_> = e.key.iter().collect();
            keys.sort();
            for (k, v) in keys {
                out.push('[');
                out.push_str(k);
                out.push('=');
                out.push_str(&v.replace(']', "\\]"));
                out.push(']');
            }
        }
        #[allow(deprecated)]
        for e in &p.element {
            any = true;
            out.push('/');
            out.push_str(e);
        }
    }
    if !any {
        out.push('/');
    }
    out
}

/// Converts a gNMI value to JSON.
pub fn typed_value_to_json(v: &pb::TypedValue) -> Value {
    use pb::typed_value::Value as V;
    #[allow(deprecated)]
    match &v.value {
        None => Value::Null,
        Some(V::StringVal(s)) | Some(V::AsciiVal(s)) => Value::String(s.clone()),
        Some(V::IntVal(i)) => Value::from(*i),
        Some(V::UintVal(u)) => Value::from(*u),
        Some(V::BoolVal(b)) => Value::Bool(*b),
        Some(V::DoubleVal(d)) => serde_json::Number::from_f64(*d)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Some(V::FloatVal(f)) => serde_json::Number::from_f64(f64::from(*f))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Some(V::JsonVal(b)) | Some(V::JsonIetfVal(b)) => serde_json::from_slice(b)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned())),
        Some(V::BytesVal(b)) | Some(V::ProtoBytes(b)) => Value::String(hex::encode(b)),
        Some(V::LeaflistVal(list)) => {
            Value::Array(list.element.iter().map(typed_value_to_json).collect())
        }
        Some(V::DecimalVal(d)) => {
            let f = d.digits as f64 / 10f64.powi(d.precision as i32);
            serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)
        }
        Some(V::AnyVal(a)) => {
            serde_json::json!({ "typeUrl": a.type_url, "value": hex::encode(&a.value) })
        }
    }
}

/// One model a device supports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    /// Model name.
    pub name: String,
    /// Organization.
    pub organization: String,
    /// Version.
    pub version: String,
}

/// gNMI Capabilities answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GnmiCapabilities {
    /// gNMI version (IOS-XE: 0.4.0).
    pub gnmi_version: String,
    /// Encodings, e.g. `JSON_IETF`.
    pub encodings: Vec<String>,
    /// Models.
    pub models: Vec<ModelInfo>,
}

/// One value from Get or Subscribe.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathValue {
    /// Full path (prefix + update path).
    pub path: String,
    /// Value.
    pub value: Value,
    /// Notification timestamp, nanoseconds since the epoch.
    pub timestamp_unix_nanos: i64,
}

fn notification_values(n: &pb::Notification) -> Vec<PathValue> {
    n.update
        .iter()
        .map(|u| PathValue {
            path: format_path(n.prefix.as_ref(), u.path.as_ref()),
            value: u
                .val
                .as_ref()
                .map(typed_value_to_json)
                .unwrap_or(Value::Null),
            timestamp_unix_nanos: n.timestamp,
        })
        .collect()
}

/// A subscription request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeParams {
    /// Paths to subscribe to.
    pub paths: Vec<String>,
    /// STREAM, ONCE or POLL.
    pub mode: SubscriptionListMode,
    /// Per-path mode for STREAM subscriptions.
    pub path_mode: SubscriptionMode,
    /// Sample interval for SAMPLE subscriptions.
    pub sample_interval: Option<Duration>,
    /// Send only changes after the initial sync.
    pub updates_only: bool,
}

/// An event of a subscription.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum SubscribeEvent {
    /// Updated values.
    Update {
        /// The values.
        values: Vec<PathValue>,
        /// Deleted paths.
        deleted: Vec<String>,
    },
    /// The initial state has been sent completely.
    SyncResponse,
}

/// An open gNMI subscription on the telemetry class. Dropping it cancels
/// the RPC.
pub struct Subscription<'a> {
    client: &'a DeviceClient,
    requests: mpsc::Sender<pb::SubscribeRequest>,
    responses: tonic::Streaming<pb::SubscribeResponse>,
    finished: bool,
}

impl Subscription<'_> {
    /// The next event; `Ok(None)` when the device ended the subscription
    /// (ONCE mode ends after the sync). There is no idle timeout: telemetry
    /// streams may be quiet; wrap the call in a timeout where silence means
    /// trouble.
    pub async fn next(&mut self) -> Result<Option<SubscribeEvent>, ClientError> {
        let rpc = rpcs::GNMI_SUBSCRIBE;
        loop {
            if self.finished {
                return Ok(None);
            }
            let msg = match self.responses.message().await {
                Ok(m) => m,
                Err(status) => {
                    let err = self.client.status_error(rpc, Duration::ZERO, &status);
                    self.finished = true;
                    let r = Err(err);
                    self.client.finish(rpc, &r);
                    return r.map(|()| None);
                }
            };
            let Some(msg) = msg else {
                self.finished = true;
                self.client.finish::<()>(rpc, &Ok(()));
                return Ok(None);
            };
            #[allow(deprecated)]
            match msg.response {
                Some(pb::subscribe_response::Response::Update(n)) => {
                    return Ok(Some(SubscribeEvent::Update {
                        values: notification_values(&n),
                        deleted: n
                            .delete
                            .iter()
                            .map(|d| format_path(n.prefix.as_ref(), Some(d)))
                            .collect(),
                    }));
                }
                Some(pb::subscribe_response::Response::SyncResponse(true)) => {
                    return Ok(Some(SubscribeEvent::SyncResponse));
                }
                Some(pb::subscribe_response::Response::SyncResponse(false)) => continue,
                Some(pb::subscribe_response::Response::Error(e)) => {
                    self.finished = true;
                    let r: Result<(), ClientError> = Err(ClientError::Protocol(format!(
                        "gNMI Subscribe error {}: {}",
                        e.code, e.message
                    )));
                    self.client.finish(rpc, &r);
                    return r.map(|()| None);
                }
                None => continue,
            }
        }
    }

    /// Asks for a fresh snapshot (POLL mode).
    pub async fn poll(&self) -> Result<(), ClientError> {
        self.requests
            .send(pb::SubscribeRequest {
                request: Some(pb::subscribe_request::Request::Poll(pb::Poll {})),
                ..Default::default()
            })
            .await
            .map_err(|_| ClientError::Protocol("gNMI subscription already closed".into()))
    }
}

impl DeviceClient {
    /// gNMI Capabilities.
    pub async fn gnmi_capabilities(&self) -> Result<GnmiCapabilities, ClientError> {
        let d = self.settings().timeouts.control;
        let r = self
            .unary(
                rpcs::GNMI_CAPABILITIES,
                d,
                pb::CapabilityRequest::default(),
                |ch, req| async move { client(ch).capabilities(req).await },
            )
            .await?;
        Ok(GnmiCapabilities {
            gnmi_version: r.g_nmi_version,
            encodings: r
                .supported_encodings
                .iter()
                .map(|e| {
                    pb::Encoding::try_from(*e)
                        .map(|x| x.as_str_name().to_owned())
                        .unwrap_or_else(|_| format!("ENCODING_{e}"))
                })
                .collect(),
            models: r
                .supported_models
                .into_iter()
                .map(|m| ModelInfo {
                    name: m.name,
                    organization: m.organization,
                    version: m.version,
                })
                .collect(),
        })
    }

    /// gNMI Get of `paths` with JSON_IETF encoding.
    pub async fn gnmi_get(&self, paths: &[&str]) -> Result<Vec<PathValue>, ClientError> {
        if paths.is_empty() {
            return Err(ClientError::InvalidRequest(
                "gNMI Get needs at least one path".into(),
            ));
        }
        let path = paths
            .iter()
            .map(|p| parse_path(p))
            .collect::<Result<Vec<_>, _>>()?;
        let d = self.settings().timeouts.control;
        let r = self
            .unary(
                rpcs::GNMI_GET,
                d,
                pb::GetRequest {
                    path,
                    encoding: pb::Encoding::JsonIetf as i32,
                    ..Default::default()
                },
                |ch, req| async move { client(ch).get(req).await },
            )
            .await?;
        Ok(r.notification
            .iter()
            .flat_map(notification_values)
            .collect())
    }

    /// gNMI Subscribe on the telemetry class.
    pub async fn gnmi_subscribe(
        &self,
        p: &SubscribeParams,
    ) -> Result<Subscription<'_>, ClientError> {
        if p.paths.is_empty() {
            return Err(ClientError::InvalidRequest(
                "gNMI Subscribe needs at least one path".into(),
            ));
        }
        let subscription = p
            .paths
            .iter()
            .map(|s| {
                Ok(pb::Subscription {
                    path: Some(parse_path(s)?),
                    mode: p.path_mode as i32,
                    sample_interval: p
                        .sample_interval
                        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                        .unwrap_or(0),
                    ..Default::default()
                })
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        let rpc = rpcs::GNMI_SUBSCRIBE;
        let (tx, rx) = mpsc::channel(4);
        tx.send(pb::SubscribeRequest {
            request: Some(pb::subscribe_request::Request::Subscribe(
                pb::SubscriptionList {
                    subscription,
                    mode: p.mode as i32,
                    encoding: pb::Encoding::JsonIetf as i32,
                    updates_only: p.updates_only,
                    ..Default::default()
                },
            )),
            ..Default::default()
        })
        .await
        .map_err(|_| ClientError::Protocol("subscribe request channel closed".into()))?;
        let req = self.request(ReceiverStream::new(rx), None);
        let responses = self
            .open_stream(
                rpc,
                self.settings().timeouts.control,
                req,
                |ch, req| async move { client(ch).subscribe(req).await },
            )
            .await?;
        Ok(Subscription {
            client: self,
            requests: tx,
            responses,
            finished: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        for (s, origin, names, formatted) in [
            (
                "openconfig:/system/state/software-version",
                "openconfig",
                vec!["system", "state", "software-version"],
                "openconfig:/system/state/software-version",
            ),
            (
                "/interfaces/interface[name=GigabitEthernet1/0/1]/state",
                "",
                vec!["interfaces", "interface", "state"],
                "/interfaces/interface[name=GigabitEthernet1/0/1]/state",
            ),
            (
                "rfc7951:/Cisco-IOS-XE-native:native/hostname",
                "rfc7951",
                vec!["Cisco-IOS-XE-native:native", "hostname"],
                "rfc7951:/Cisco-IOS-XE-native:native/hostname",
            ),
            ("/", "", vec![], "/"),
        ] {
            let p = parse_path(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(p.origin, origin, "{s}");
            assert_eq!(
                p.elem.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
                names,
                "{s}"
            );
            assert_eq!(format_path(None, Some(&p)), formatted);
        }
        let p = parse_path("/a[k=v]/b").unwrap();
        assert_eq!(p.elem[0].key.get("k").map(String::as_str), Some("v"));
        for bad in ["/a//b", "/a[k]/b", "/a[k=v", "/a[k=v]x"] {
            assert_eq!(
                parse_path(bad).unwrap_err().category(),
                "invalid_request",
                "{bad}"
            );
        }
    }

    #[test]
    fn values_to_json() {
        use pb::typed_value::Value as V;
        let tv = |v| pb::TypedValue { value: Some(v) };
        assert_eq!(
            typed_value_to_json(&tv(V::StringVal("x".into()))),
            Value::from("x")
        );
        assert_eq!(typed_value_to_json(&tv(V::UintVal(7))), Value::from(7u64));
        assert_eq!(
            typed_value_to_json(&tv(V::JsonIetfVal(br#"{"a":1}"#.to_vec()))),
            serde_json::json!({"a": 1})
        );
        assert_eq!(
            typed_value_to_json(&tv(V::BytesVal(vec![0xab]))),
            Value::from("ab")
        );
    }
}
