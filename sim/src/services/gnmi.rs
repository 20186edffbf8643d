//! `gnmi.gNMI`: Capabilities, Get, Subscribe (ONCE, POLL, STREAM with
//! SAMPLE / ON_CHANGE / TARGET_DEFINED). Set answers UNIMPLEMENTED.
//!
//! The tree is read-only state derived from the device model
//! (openconfig-style paths, listed in `sim/README.md`):
//!
//! ```text
//! /system/state/{hostname,software-version,boot-time,current-datetime}
//! /system/install/state/{state,running-version,committed,boot-version,activation-fail-message,issu-state,in-progress-version}
//! /system/install/images/image[version=V]/state/{version,path,size}
//! /system/filesystems/filesystem[name=flash:]/state/{name,size,free}
//! /system/cpus/cpu[index=ALL]/state/total/instant
//! /system/memory/state/{physical,used,free}
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use cvk_proto::gnmi::{self as pb, g_nmi_server::GNmi};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::note;
use crate::device::{Device, Telemetry};

/// Handler.
pub struct GnmiService {
    dev: Arc<Device>,
}

impl GnmiService {
    /// For `dev`.
    pub fn new(dev: Arc<Device>) -> Self {
        Self { dev }
    }
}

/// A leaf value.
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf {
    /// string
    Str(String),
    /// uint64 (RFC 7951: a JSON string in JSON_IETF)
    U64(u64),
    /// uint8 (a JSON number)
    U8(u8),
    /// boolean
    Bool(bool),
}

/// A path element with its keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Elem {
    /// Name.
    pub name: String,
    /// Keys.
    pub keys: BTreeMap<String, String>,
}

fn e(name: &str) -> Elem {
    Elem {
        name: name.into(),
        keys: BTreeMap::new(),
    }
}

fn ek(name: &str, k: &str, v: &str) -> Elem {
    Elem {
        name: name.into(),
        keys: [(k.to_owned(), v.to_owned())].into(),
    }
}

/// `2026-01-02T03:04:05.678Z` from ns since the epoch.
pub fn rfc3339(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        (ns / 1_000_000) % 1000
    )
}

/// Every leaf of the tree at one instant.
pub fn leaves(t: &Telemetry) -> Vec<(Vec<Elem>, Leaf)> {
    let s = &t.snapshot;
    let mut out = Vec::new();
    let sys = |rest: &[Elem]| {
        let mut v = vec![e("system")];
        v.extend_from_slice(rest);
        v
    };
    out.push((
        sys(&[e("state"), e("hostname")]),
        Leaf::Str(s.hostname.clone()),
    ));
    out.push((
        sys(&[e("state"), e("software-version")]),
        Leaf::Str(s.running_version.clone()),
    ));
    out.push((
        sys(&[e("state"), e("boot-time")]),
        Leaf::U64(s.boot_time_ns),
    ));
    out.push((
        sys(&[e("state"), e("current-datetime")]),
        Leaf::Str(rfc3339(t.current_ns)),
    ));
    let inst = |leaf: &str| sys(&[e("install"), e("state"), e(leaf)]);
    out.push((inst("state"), Leaf::Str(s.install_state.as_str().into())));
    out.push((
        inst("running-version"),
        Leaf::Str(s.running_version.clone()),
    ));
    out.push((inst("committed"), Leaf::Bool(s.committed)));
    out.push((
        inst("boot-version"),
        Leaf::Str(s.boot_version.clone().unwrap_or_default()),
    ));
    out.push((
        inst("activation-fail-message"),
        Leaf::Str(s.activation_fail_message.clone()),
    ));
    out.push((inst("issu-state"), Leaf::Bool(s.last_activation_issu)));
    out.push((
        inst("in-progress-version"),
        Leaf::Str(s.install_in_progress.clone().unwrap_or_default()),
    ));
    for img in &s.staged {
        let p = |leaf: &str| {
            sys(&[
                e("install"),
                e("images"),
                ek("image", "version", &img.version),
                e("state"),
                e(leaf),
            ])
        };
        out.push((p("version"), Leaf::Str(img.version.clone())));
        out.push((p("path"), Leaf::Str(img.path.clone())));
        out.push((p("size"), Leaf::U64(img.size)));
    }
    for fs in &s.filesystems {
        let p = |leaf: &str| {
            sys(&[
                e("filesystems"),
                ek("filesystem", "name", &fs.name),
                e("state"),
                e(leaf),
            ])
        };
        out.push((p("name"), Leaf::Str(fs.name.clone())));
        out.push((p("size"), Leaf::U64(fs.size)));
        out.push((p("free"), Leaf::U64(fs.free)));
    }
    out.push((
        sys(&[
            e("cpus"),
            ek("cpu", "index", "ALL"),
            e("state"),
            e("total"),
            e("instant"),
        ]),
        Leaf::U8(t.cpu_percent),
    ));
    out.push((
        sys(&[e("memory"), e("state"), e("physical")]),
        Leaf::U64(t.memory_physical),
    ));
    out.push((
        sys(&[e("memory"), e("state"), e("used")]),
        Leaf::U64(t.memory_used),
    ));
    out.push((
        sys(&[e("memory"), e("state"), e("free")]),
        Leaf::U64(t.memory_physical - t.memory_used),
    ));
    out
}

/// Does `pattern` (with `*`, `...` and key wildcards) cover `path`?
pub fn covers(pattern: &[Elem], path: &[Elem]) -> bool {
    match pattern.split_first() {
        None => true,
        Some((p, rest)) if p.name == "..." => (0..=path.len()).any(|i| covers(rest, &path[i..])),
        Some((p, rest)) => {
            let Some((q, qrest)) = path.split_first() else {
                return false;
            };
            (p.name == "*" || p.name == q.name)
                && p.keys
                    .iter()
                    .all(|(k, v)| v == "*" || q.keys.get(k) == Some(v))
                && covers(rest, qrest)
        }
    }
}

fn to_elems(prefix: Option<&pb::Path>, path: Option<&pb::Path>) -> Result<Vec<Elem>, Status> {
    let mut out = Vec::new();
    for p in [prefix, path].into_iter().flatten() {
        if !p.origin.is_empty() && p.origin != "openconfig" {
            return Err(Status::not_found(format!(
                "origin {:?} is not served by the simulator",
                p.origin
            )));
        }
        if p.elem.is_empty() {
            #[allow(deprecated)]
            for s in &p.element {
                out.push(e(s));
            }
        }
        for pe in &p.elem {
            out.push(Elem {
                name: pe.name.clone(),
                keys: pe.key.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            });
        }
    }
    Ok(out)
}

fn to_path(elems: &[Elem]) -> pb::Path {
    pb::Path {
        elem: elems
            .iter()
            .map(|x| pb::PathElem {
                name: x.name.clone(),
                key: x.keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            })
            .collect(),
        ..Default::default()
    }
}

/// Path as text (`/system/cpus/cpu[index=ALL]/state`).
pub fn path_string(elems: &[Elem]) -> String {
    let mut s = String::new();
    for x in elems {
        s.push('/');
        s.push_str(&x.name);
        for (k, v) in &x.keys {
            s.push_str(&format!("[{k}={v}]"));
        }
    }
    s
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Enc {
    JsonIetf,
    Json,
    Proto,
}

fn encoding(n: i32) -> Result<Enc, Status> {
    match pb::Encoding::try_from(n) {
        Ok(pb::Encoding::JsonIetf) => Ok(Enc::JsonIetf),
        Ok(pb::Encoding::Json) => Ok(Enc::Json),
        Ok(pb::Encoding::Proto) => Ok(Enc::Proto),
        _ => Err(Status::unimplemented(format!(
            "encoding {n} is not supported (JSON, JSON_IETF, PROTO are)"
        ))),
    }
}

fn typed(v: &Leaf, enc: Enc) -> pb::TypedValue {
    use pb::typed_value::Value as V;
    let json = |j: serde_json::Value| j.to_string().into_bytes();
    let value = match (enc, v) {
        (Enc::Proto, Leaf::Str(s)) => V::StringVal(s.clone()),
        (Enc::Proto, Leaf::U64(n)) => V::UintVal(*n),
        (Enc::Proto, Leaf::U8(n)) => V::UintVal(*n as u64),
        (Enc::Proto, Leaf::Bool(b)) => V::BoolVal(*b),
        (Enc::JsonIetf, Leaf::U64(n)) => {
            V::JsonIetfVal(json(serde_json::Value::String(n.to_string())))
        }
        (Enc::JsonIetf, l) => V::JsonIetfVal(json(leaf_json(l))),
        (Enc::Json, l) => V::JsonVal(json(match l {
            Leaf::U64(n) => serde_json::json!(n),
            l => leaf_json(l),
        })),
    };
    pb::TypedValue { value: Some(value) }
}

fn leaf_json(l: &Leaf) -> serde_json::Value {
    match l {
        Leaf::Str(s) => serde_json::Value::String(s.clone()),
        Leaf::U64(n) => serde_json::Value::String(n.to_string()),
        Leaf::U8(n) => serde_json::json!(n),
        Leaf::Bool(b) => serde_json::Value::Bool(*b),
    }
}

fn update(path: &[Elem], v: &Leaf, enc: Enc) -> pb::Update {
    pb::Update {
        path: Some(to_path(path)),
        val: Some(typed(v, enc)),
        ..Default::default()
    }
}

fn select<'a>(all: &'a [(Vec<Elem>, Leaf)], patterns: &[Vec<Elem>]) -> Vec<&'a (Vec<Elem>, Leaf)> {
    all.iter()
        .filter(|(p, _)| patterns.iter().any(|pat| covers(pat, p)))
        .collect()
}

#[derive(Debug)]
struct Sub {
    path: Vec<Elem>,
    sample: Option<Duration>,
    suppress: bool,
    heartbeat: Option<Duration>,
    next: Option<Instant>,
    next_heartbeat: Option<Instant>,
    last: HashMap<Vec<Elem>, Leaf>,
}

type Tx = mpsc::Sender<Result<pb::SubscribeResponse, Status>>;

fn notif(
    ts: u64,
    target: &str,
    updates: Vec<pb::Update>,
    deletes: Vec<pb::Path>,
) -> pb::SubscribeResponse {
    let prefix = (!target.is_empty()).then(|| pb::Path {
        target: target.into(),
        ..Default::default()
    });
    pb::SubscribeResponse {
        response: Some(pb::subscribe_response::Response::Update(pb::Notification {
            timestamp: ts as i64,
            prefix,
            update: updates,
            delete: deletes,
            atomic: false,
        })),
        extension: vec![],
    }
}

fn sync() -> pb::SubscribeResponse {
    pb::SubscribeResponse {
        response: Some(pb::subscribe_response::Response::SyncResponse(true)),
        extension: vec![],
    }
}

async fn send_full(dev: &Device, subs: &[Sub], target: &str, enc: Enc, tx: &Tx) -> bool {
    let t = dev.telemetry();
    let all = leaves(&t);
    let pats: Vec<Vec<Elem>> = subs.iter().map(|s| s.path.clone()).collect();
    let ups = select(&all, &pats)
        .into_iter()
        .map(|(p, v)| update(p, v, enc))
        .collect::<Vec<_>>();
    if !ups.is_empty()
        && tx
            .send(Ok(notif(t.current_ns, target, ups, vec![])))
            .await
            .is_err()
    {
        return false;
    }
    tx.send(Ok(sync())).await.is_ok()
}

async fn run_subscription(
    dev: Arc<Device>,
    list: pb::SubscriptionList,
    mut stream: Streaming<pb::SubscribeRequest>,
    tx: Tx,
    enc: Enc,
) {
    use pb::subscription_list::Mode;
    let target = list
        .prefix
        .as_ref()
        .map(|p| p.target.clone())
        .unwrap_or_default();
    let mut subs = Vec::new();
    for s in &list.subscription {
        let path = match to_elems(list.prefix.as_ref(), s.path.as_ref()) {
            Ok(p) => p,
            Err(st) => {
                let _ = tx.send(Err(st)).await;
                return;
            }
        };
        let sample = match pb::SubscriptionMode::try_from(s.mode) {
            Ok(pb::SubscriptionMode::Sample) => Some(if s.sample_interval == 0 {
                Duration::from_secs(10)
            } else {
                Duration::from_nanos(s.sample_interval).max(Duration::from_millis(10))
            }),
            _ => None,
        };
        let heartbeat = (s.heartbeat_interval > 0)
            .then(|| Duration::from_nanos(s.heartbeat_interval).max(Duration::from_millis(10)));
        subs.push(Sub {
            path,
            sample,
            suppress: s.suppress_redundant,
            heartbeat,
            next: None,
            next_heartbeat: None,
            last: HashMap::new(),
        });
    }
    if subs.is_empty() {
        let _ = tx
            .send(Err(Status::invalid_argument("no subscription in the list")))
            .await;
        return;
    }
    let mode = Mode::try_from(list.mode).unwrap_or(Mode::Stream);
    match mode {
        Mode::Once => {
            send_full(&dev, &subs, &target, enc, &tx).await;
        }
        Mode::Poll => {
            if !send_full(&dev, &subs, &target, enc, &tx).await {
                return;
            }
            loop {
                match stream.message().await {
                    Ok(Some(pb::SubscribeRequest {
                        request: Some(pb::subscribe_request::Request::Poll(_)),
                        ..
                    })) => {
                        if !send_full(&dev, &subs, &target, enc, &tx).await {
                            return;
                        }
                    }
                    Ok(Some(_)) => {
                        let _ = tx
                            .send(Err(Status::invalid_argument(
                                "only poll messages may follow a POLL subscription",
                            )))
                            .await;
                        return;
                    }
                    Ok(None) | Err(_) => return,
                }
            }
        }
        Mode::Stream => stream_mode(dev, subs, stream, tx, enc, target, list.updates_only).await,
    }
}

async fn stream_mode(
    dev: Arc<Device>,
    mut subs: Vec<Sub>,
    mut stream: Streaming<pb::SubscribeRequest>,
    tx: Tx,
    enc: Enc,
    target: String,
    updates_only: bool,
) {
    let mut changes = dev.changes();
    let t = dev.telemetry();
    let all = leaves(&t);
    let now = Instant::now();
    let mut first = Vec::new();
    for s in &mut subs {
        for (p, v) in select(&all, std::slice::from_ref(&s.path)) {
            s.last.insert(p.clone(), v.clone());
            first.push(update(p, v, enc));
        }
        s.next = s.sample.map(|d| now + d);
        s.next_heartbeat = s.heartbeat.map(|d| now + d);
    }
    if !updates_only
        && !first.is_empty()
        && tx
            .send(Ok(notif(t.current_ns, &target, first, vec![])))
            .await
            .is_err()
    {
        return;
    }
    if tx.send(Ok(sync())).await.is_err() {
        return;
    }
    let has_on_change = subs.iter().any(|s| s.sample.is_none());
    let mut client_open = true;
    loop {
        let deadline = subs
            .iter()
            .flat_map(|s| [s.next, s.next_heartbeat])
            .flatten()
            .min();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {
                let t = dev.telemetry();
                let all = leaves(&t);
                let now = Instant::now();
                let mut ups = Vec::new();
                for s in &mut subs {
                    let sample_due = s.next.is_some_and(|n| n <= now);
                    let beat_due = s.next_heartbeat.is_some_and(|n| n <= now);
                    if !sample_due && !beat_due {
                        continue;
                    }
                    for (p, v) in select(&all, std::slice::from_ref(&s.path)) {
                        let same = s.last.get(p) == Some(v);
                        if beat_due || !(s.suppress && same) {
                            ups.push(update(p, v, enc));
                        }
                        s.last.insert(p.clone(), v.clone());
                    }
                    if sample_due { s.next = s.sample.map(|d| now + d); }
                    if beat_due { s.next_heartbeat = s.heartbeat.map(|d| now + d); }
                }
                if !ups.is_empty() && tx.send(Ok(notif(t.current_ns, &target, ups, vec![]))).await.is_err() {
                    return;
                }
            }
            r = changes.changed(), if has_on_change => {
                if r.is_err() { return; }
                let t = dev.telemetry();
                let all = leaves(&t);
                let mut ups = Vec::new();
                let mut dels = Vec::new();
                for s in subs.iter_mut().filter(|s| s.sample.is_none()) {
                    let now_sel: HashMap<Vec<Elem>, Leaf> =
                        select(&all, std::slice::from_ref(&s.path)).into_iter().cloned().collect();
                    for (p, v) in &now_sel {
                        if s.last.get(p) != Some(v) {
                            ups.push(update(p, v, enc));
                        }
                    }
                    for p in s.last.keys() {
                        if !now_sel.contains_key(p) {
                            dels.push(to_path(p));
                        }
                    }
                    s.last = now_sel;
                }
                if (!ups.is_empty() || !dels.is_empty())
                    && tx.send(Ok(notif(t.current_ns, &target, ups, dels))).await.is_err()
                {
                    return;
                }
            }
            m = stream.message(), if client_open => {
                match m {
                    Ok(Some(_)) => {}
                    Ok(None) => client_open = false,
                    Err(_) => return,
                }
            }
            _ = tx.closed() => return,
        }
    }
}

#[tonic::async_trait]
impl GNmi for GnmiService {
    type SubscribeStream = ReceiverStream<Result<pb::SubscribeResponse, Status>>;

    async fn capabilities(
        &self,
        _req: Request<pb::CapabilityRequest>,
    ) -> Result<Response<pb::CapabilityResponse>, Status> {
        let p = self.dev.profile();
        Ok(Response::new(pb::CapabilityResponse {
            supported_models: p
                .gnmi_models
                .iter()
                .map(|m| pb::ModelData {
                    name: m.name.clone(),
                    organization: m.organization.clone(),
                    version: m.version.clone(),
                })
                .collect(),
            supported_encodings: vec![
                pb::Encoding::Json as i32,
                pb::Encoding::JsonIetf as i32,
                pb::Encoding::Proto as i32,
            ],
            g_nmi_version: p.gnmi_version.clone(),
            extension: vec![],
        }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let r = req.get_ref();
        let enc = encoding(r.encoding)?;
        let t = self.dev.telemetry();
        let all = leaves(&t);
        let config_only = r.r#type == pb::get_request::DataType::Config as i32;
        let mut ups = Vec::new();
        let mut names = Vec::new();
        for p in &r.path {
            let pat = to_elems(r.prefix.as_ref(), Some(p))?;
            names.push(path_string(&pat));
            let found = if config_only {
                vec![]
            } else {
                select(&all, std::slice::from_ref(&pat))
            };
            if found.is_empty() {
                return Err(Status::not_found(format!(
                    "no data at {}",
                    path_string(&pat)
                )));
            }
            ups.extend(found.into_iter().map(|(p, v)| update(p, v, enc)));
        }
        note(&req, "paths", names.join(","));
        let target = r
            .prefix
            .as_ref()
            .map(|p| p.target.clone())
            .unwrap_or_default();
        let prefix = (!target.is_empty()).then(|| pb::Path {
            target,
            ..Default::default()
        });
        Ok(Response::new(pb::GetResponse {
            notification: vec![pb::Notification {
                timestamp: t.current_ns as i64,
                prefix,
                update: ups,
                delete: vec![],
                atomic: false,
            }],
            ..Default::default()
        }))
    }

    async fn set(
        &self,
        _req: Request<pb::SetRequest>,
    ) -> Result<Response<pb::SetResponse>, Status> {
        Err(Status::unimplemented(
            "gNMI Set is not implemented by the simulator",
        ))
    }

    async fn subscribe(
        &self,
        req: Request<Streaming<pb::SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let notes = super::notes(&req);
        let mut stream = req.into_inner();
        let list = match stream.message().await?.and_then(|m| m.request) {
            Some(pb::subscribe_request::Request::Subscribe(l)) => l,
            _ => {
                return Err(Status::invalid_argument(
                    "the first SubscribeRequest must carry a subscription list",
                ));
            }
        };
        if let Some(n) = &notes {
            n.note(
                "mode",
                pb::subscription_list::Mode::try_from(list.mode)
                    .map(|m| m.as_str_name())
                    .unwrap_or("?"),
            );
            let paths: Vec<String> = list
                .subscription
                .iter()
                .filter_map(|s| to_elems(list.prefix.as_ref(), s.path.as_ref()).ok())
                .map(|p| path_string(&p))
                .collect();
            n.note("paths", paths.join(","));
        }
        let enc = encoding(list.encoding)?;
        let (tx, rx) = mpsc::channel(32);
        tokio::spawn(run_subscription(self.dev.clone(), list, stream, tx, enc));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(1_766_116_039_123_000_000),
            "2025-12-19T03:47:19.123Z"
        );
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn wildcards() {
        let leaf = vec![
            e("system"),
            ek("filesystems", "x", "y"),
            ek("filesystem", "name", "flash:"),
            e("state"),
            e("free"),
        ];
        assert!(covers(&[e("system")], &leaf));
        assert!(covers(&[e("system"), e("*")], &leaf));
        assert!(covers(&[e("..."), e("free")], &leaf));
        assert!(covers(
            &[
                e("system"),
                e("filesystems"),
                ek("filesystem", "name", "flash:")
            ],
            &leaf
        ));
        assert!(covers(
            &[e("system"), e("filesystems"), ek("filesystem", "name", "*")],
            &leaf
        ));
        assert!(!covers(
            &[
                e("system"),
                e("filesystems"),
                ek("filesystem", "name", "nvram:")
            ],
            &leaf
        ));
        assert!(!covers(&[e("system"), e("state")], &leaf));
    }
}
