//! `gnoi.system.System`: time, ping, traceroute, reboot, reboot status,
//! cancel reboot, kill process. All on the control class.
//!
//! Ping and traceroute are server streams; they are bounded in message
//! count (a ping of `count` packets yields at most `count` replies and one
//! summary) and each message must arrive within an idle timeout.

use std::time::Duration;

use cvk_proto::gnoi::system as pb;
use cvk_proto::gnoi::system::system_client::SystemClient;
use serde::Serialize;

pub use pb::RebootMethod;
pub use pb::kill_process_request::Signal;
pub use pb::traceroute_request::L4Protocol;

use super::{ClientError, DeviceClient, MAX_DECODE_CONTROL, rpcs};

/// Largest ping count accepted (as the DeviceOperation CRD).
pub const MAX_PING_COUNT: u32 = 1000;
/// Largest traceroute hop count.
pub const MAX_TRACEROUTE_HOPS: u32 = 255;

fn client(ch: tonic::transport::Channel) -> SystemClient<tonic::transport::Channel> {
    SystemClient::new(ch).max_decoding_message_size(MAX_DECODE_CONTROL)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn nanos_i64(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The device clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceTime {
    /// Nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
}

/// Ping arguments (the DeviceOperation `gnoi.ping` block).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PingParams {
    /// Address or name to ping (required).
    pub destination: String,
    /// Source address or interface; empty for the device default.
    pub source: String,
    /// Packets to send, 1-1000; 0 means 5.
    pub count: u32,
    /// Time between packets; `None` for the device default.
    pub interval: Option<Duration>,
    /// Time to wait for each reply; `None` for the device default.
    pub wait: Option<Duration>,
    /// Payload size in bytes; 0 for the device default.
    pub size: u32,
    /// Set the DF bit.
    pub do_not_fragment: bool,
    /// Do not resolve addresses to names.
    pub do_not_resolve: bool,
}

/// One echo reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PingReply {
    /// Replying address.
    pub source: String,
    /// Round trip, nanoseconds.
    pub time_nanos: i64,
    /// Bytes received.
    pub bytes: i32,
    /// Sequence number.
    pub sequence: i32,
    /// TTL of the reply.
    pub ttl: i32,
}

/// The closing summary of a ping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PingSummary {
    /// Destination address.
    pub source: String,
    /// Total time, nanoseconds.
    pub time_nanos: i64,
    /// Packets sent.
    pub sent: i32,
    /// Packets received.
    pub received: i32,
    /// Minimum round trip, nanoseconds.
    pub min_nanos: i64,
    /// Average round trip, nanoseconds.
    pub avg_nanos: i64,
    /// Maximum round trip, nanoseconds.
    pub max_nanos: i64,
    /// Standard deviation, nanoseconds.
    pub std_dev_nanos: i64,
}

/// Everything a ping returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PingResult {
    /// Per-packet replies, in arrival order.
    pub replies: Vec<PingReply>,
    /// The summary, if the device sent one.
    pub summary: Option<PingSummary>,
}

/// Traceroute arguments (the DeviceOperation `gnoi.traceroute` block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracerouteParams {
    /// Address or name to trace (required).
    pub destination: String,
    /// Source address or interface; empty for the device default.
    pub source: String,
    /// Largest TTL, 1-255; 0 means 30.
    pub max_hops: u32,
    /// Probe protocol.
    pub protocol: L4Protocol,
    /// Time to wait for each probe; `None` for the device default.
    pub wait: Option<Duration>,
    /// Do not resolve addresses to names.
    pub do_not_resolve: bool,
}

impl Default for TracerouteParams {
    fn default() -> Self {
        Self {
            destination: String::new(),
            source: String::new(),
            max_hops: 0,
            protocol: L4Protocol::Icmp,
            wait: None,
            do_not_resolve: false,
        }
    }
}

/// One probe answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TracerouteHop {
    /// Hop number (TTL).
    pub hop: i32,
    /// Answering address.
    pub address: String,
    /// Its name, if resolved.
    pub name: String,
    /// Round trip, nanoseconds.
    pub rtt_nanos: i64,
    /// Probe state (`DEFAULT`, `HOST_UNREACHABLE`, ...).
    pub state: String,
}

/// Everything a traceroute returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TracerouteResult {
    /// Resolved destination name.
    pub destination_name: String,
    /// Destination address.
    pub destination_address: String,
    /// Largest hop count the device will try.
    pub max_hops: i32,
    /// Probe size.
    pub packet_size: i32,
    /// Probe answers in arrival order.
    pub hops: Vec<TracerouteHop>,
    /// The stream was cut at the message bound.
    pub truncated: bool,
}

/// Reboot arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebootParams {
    /// Reboot method; COLD is the only one every target must accept.
    pub method: RebootMethod,
    /// Delay before the reboot.
    pub delay: Duration,
    /// Message logged on the device.
    pub message: String,
    /// Reboot even if the device reports reasons not to.
    pub force: bool,
}

impl Default for RebootParams {
    fn default() -> Self {
        Self {
            method: RebootMethod::Cold,
            delay: Duration::ZERO,
            message: String::new(),
            force: false,
        }
    }
}

/// Reboot status of the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RebootStatusInfo {
    /// A reboot is pending or running.
    pub active: bool,
    /// Nanoseconds until the reboot.
    pub wait_nanos: u64,
    /// When the reboot happens (or happened), nanoseconds since the epoch.
    pub when_unix_nanos: u64,
    /// Reason given for the reboot.
    pub reason: String,
    /// Reboots since the counter was reset.
    pub count: u32,
    /// Method (`COLD`, ...).
    pub method: String,
    /// Outcome of the last reboot when not active (`STATUS_SUCCESS`, ...).
    pub status: Option<String>,
    /// Message of that outcome.
    pub status_message: String,
}

/// Kill-process arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillProcessParams {
    /// Process id; 0 to select by name.
    pub pid: u32,
    /// Process name; empty to select by pid.
    pub name: String,
    /// Signal.
    pub signal: Signal,
    /// Restart the process afterwards (ignored for HUP).
    pub restart: bool,
}

impl Default for KillProcessParams {
    fn default() -> Self {
        Self {
            pid: 0,
            name: String::new(),
            signal: Signal::Term,
            restart: false,
        }
    }
}

impl DeviceClient {
    /// System.Time.
    pub async fn time(&self) -> Result<DeviceTime, ClientError> {
        let d = self.settings().timeouts.control;
        let r = self
            .unary(
                rpcs::SYSTEM_TIME,
                d,
                pb::TimeRequest {},
                |ch, req| async move { client(ch).time(req).await },
            )
            .await?;
        Ok(DeviceTime { unix_nanos: r.time })
    }

    /// System.Ping, collecting every reply and the summary.
    pub async fn ping(&self, p: &PingParams) -> Result<PingResult, ClientError> {
        if p.destination.trim().is_empty() {
            return Err(ClientError::InvalidRequest(
                "ping destination is required".into(),
            ));
        }
        if p.count > MAX_PING_COUNT {
            return Err(ClientError::InvalidRequest(format!(
                "ping count {} is out of range 1-{MAX_PING_COUNT}",
                p.count
            )));
        }
        let count = if p.count == 0 { 5 } else { p.count };
        let size = i32::try_from(p.size).map_err(|_| {
            ClientError::InvalidRequest(format!("ping size {} is too large", p.size))
        })?;
        let rpc = rpcs::SYSTEM_PING;
        // Each packet may take interval + wait; the control deadline on top
        // covers the device's own latency.
        let idle = self.settings().timeouts.control
            + p.interval.unwrap_or_default()
            + p.wait.unwrap_or_default();
        let req = self.request(
            pb::PingRequest {
                destination: p.destination.clone(),
                source: p.source.clone(),
                count: count as i32,
                interval: p.interval.map(nanos_i64).unwrap_or(0),
                wait: p.wait.map(nanos_i64).unwrap_or(0),
                size,
                do_not_fragment: p.do_not_fragment,
                do_not_resolve: p.do_not_resolve,
                ..Default::default()
            },
            None,
        );
        let mut stream = self
            .open_stream(rpc, idle, req, |ch, req| async move {
                client(ch).ping(req).await
            })
            .await?;
        let result = async {
            let mut out = PingResult {
                replies: Vec::new(),
                summary: None,
            };
            // A device that keeps sending past `count` replies is cut off:
            // the stream is dropped, which cancels the RPC.
            while out.summary.is_none() && out.replies.len() < count as usize {
                let Some(m) = self.next_message(rpc, idle, &mut stream).await? else {
                    break;
                };
                if m.sent != 0 {
                    out.summary = Some(PingSummary {
                        source: m.source,
                        time_nanos: m.time,
                        sent: m.sent,
                        received: m.received,
                        min_nanos: m.min_time,
                        avg_nanos: m.avg_time,
                        max_nanos: m.max_time,
                        std_dev_nanos: m.std_dev,
                    });
                } else {
                    out.replies.push(PingReply {
                        source: m.source,
                        time_nanos: m.time,
                        bytes: m.bytes,
                        sequence: m.sequence,
                        ttl: m.ttl,
                    });
                }
            }
            if out.summary.is_none() && out.replies.len() >= count as usize {
                // The summary follows the last reply; give it one idle period.
                if let Some(m) = self.next_message(rpc, idle, &mut stream).await?
                    && m.sent != 0
                {
                    out.summary = Some(PingSummary {
                        source: m.source,
                        time_nanos: m.time,
                        sent: m.sent,
                        received: m.received,
                        min_nanos: m.min_time,
                        avg_nanos: m.avg_time,
                        max_nanos: m.max_time,
                        std_dev_nanos: m.std_dev,
                    });
                }
            }
            Ok(out)
        }
        .await;
        self.finish(rpc, &result);
        result
    }

    /// System.Traceroute, bounded to `10 * max_hops + 1` messages.
    pub async fn traceroute(&self, p: &TracerouteParams) -> Result<TracerouteResult, ClientError> {
        if p.destination.trim().is_empty() {
            return Err(ClientError::InvalidRequest(
                "traceroute destination is required".into(),
            ));
        }
        if p.max_hops > MAX_TRACEROUTE_HOPS {
            return Err(ClientError::InvalidRequest(format!(
                "traceroute maxHops {} is out of range 1-{MAX_TRACEROUTE_HOPS}",
                p.max_hops
            )));
        }
        let max_hops = if p.max_hops == 0 { 30 } else { p.max_hops };
        let rpc = rpcs::SYSTEM_TRACEROUTE;
        let idle = self.settings().timeouts.control + p.wait.unwrap_or_default() * 3;
        let req = self.request(
            pb::TracerouteRequest {
                source: p.source.clone(),
                destination: p.destination.clone(),
                max_ttl: max_hops as i32,
                wait: p.wait.map(nanos_i64).unwrap_or(0),
                do_not_resolve: p.do_not_resolve,
                l4protocol: p.protocol as i32,
                ..Default::default()
            },
            None,
        );
        let mut stream = self
            .open_stream(rpc, idle, req, |ch, req| async move {
                client(ch).traceroute(req).await
            })
            .await?;
        let bound = max_hops as usize * 10 + 1;
        let result = async {
            let mut out = TracerouteResult {
                destination_name: String::new(),
                destination_address: String::new(),
                max_hops: 0,
                packet_size: 0,
                hops: Vec::new(),
                truncated: false,
            };
            let mut seen = 0usize;
            while let Some(m) = self.next_message(rpc, idle, &mut stream).await? {
                seen += 1;
                if m.hop == 0 && (!m.destination_address.is_empty() || m.hops != 0) {
                    out.destination_name = m.destination_name;
                    out.destination_address = m.destination_address;
                    out.max_hops = m.hops;
                    out.packet_size = m.packet_size;
                } else {
                    out.hops.push(TracerouteHop {
                        hop: m.hop,
                        address: m.address,
                        name: m.name,
                        rtt_nanos: m.rtt,
                        state: pb::traceroute_response::State::try_from(m.state)
                            .map(|s| s.as_str_name().to_owned())
                            .unwrap_or_else(|_| format!("STATE_{}", m.state)),
                    });
                }
                if seen >= bound {
                    out.truncated = true;
                    break;
                }
            }
            Ok(out)
        }
        .await;
        self.finish(rpc, &result);
        result
    }

    /// System.Reboot.
    pub async fn reboot(&self, p: &RebootParams) -> Result<(), ClientError> {
        let d = self.settings().timeouts.control;
        let msg = pb::RebootRequest {
            method: p.method as i32,
            delay: nanos(p.delay),
            message: p.message.clone(),
            subcomponents: Vec::new(),
            force: p.force,
        };
        self.unary(rpcs::SYSTEM_REBOOT, d, msg, |ch, req| async move {
            client(ch).reboot(req).await
        })
        .await
        .map(|_| ())
    }

    /// System.RebootStatus.
    pub async fn reboot_status(&self) -> Result<RebootStatusInfo, ClientError> {
        let d = self.settings().timeouts.control;
        let r = self
            .unary(
                rpcs::SYSTEM_REBOOT_STATUS,
                d,
                pb::RebootStatusRequest::default(),
                |ch, req| async move { client(ch).reboot_status(req).await },
            )
            .await?;
        Ok(RebootStatusInfo {
            active: r.active,
            wait_nanos: r.wait,
            when_unix_nanos: r.when,
            reason: r.reason,
            count: r.count,
            method: RebootMethod::try_from(r.method)
                .map(|m| m.as_str_name().to_owned())
                .unwrap_or_else(|_| format!("METHOD_{}", r.method)),
            status: r.status.as_ref().map(|s| {
                pb::reboot_status::Status::try_from(s.status)
                    .map(|x| x.as_str_name().to_owned())
                    .unwrap_or_else(|_| format!("STATUS_{}", s.status))
            }),
            status_message: r.status.map(|s| s.message).unwrap_or_default(),
        })
    }

    /// System.CancelReboot.
    pub async fn cancel_reboot(&self, message: &str) -> Result<(), ClientError> {
        let d = self.settings().timeouts.control;
        let msg = pb::CancelRebootRequest {
            message: message.to_owned(),
            subcomponents: Vec::new(),
        };
        self.unary(rpcs::SYSTEM_CANCEL_REBOOT, d, msg, |ch, req| async move {
            client(ch).cancel_reboot(req).await
        })
        .await
        .map(|_| ())
    }

    /// System.KillProcess.
    pub async fn kill_process(&self, p: &KillProcessParams) -> Result<(), ClientError> {
        if p.pid == 0 && p.name.trim().is_empty() {
            return Err(ClientError::InvalidRequest(
                "killProcess needs a pid (not 0) or a process name".into(),
            ));
        }
        let d = self.settings().timeouts.control;
        let msg = pb::KillProcessRequest {
            pid: p.pid,
            name: p.name.clone(),
            signal: p.signal as i32,
            restart: p.restart,
        };
        self.unary(rpcs::SYSTEM_KILL_PROCESS, d, msg, |ch, req| async move {
            client(ch).kill_process(req).await
        })
        .await
        .map(|_| ())
    }
}
