//! `gnoi.system.System`: ping and traceroute (simulated, no packet leaves
//! the host), time, reboot, reboot status, cancel, kill process.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use cvk_proto::gnoi::system::{self as pb, system_server::System};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::note;
use crate::device::Device;
use crate::error::DomainError;

/// Handler.
pub struct SystemService {
    dev: Arc<Device>,
}

impl SystemService {
    /// For `dev`.
    pub fn new(dev: Arc<Device>) -> Self {
        Self { dev }
    }
}

/// Where a simulated probe goes.
#[derive(Debug, Clone)]
struct Target {
    name: String,
    address: String,
    reachable: bool,
    hops: i32,
    base_rtt_ns: i64,
}

fn hash(s: &str) -> u64 {
    s.bytes().fold(0x811c_9dc5u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0193)
    })
}

/// Simulated resolution: addresses are used as given; `localhost` is
/// loopback; `*.invalid` does not resolve; other names map into
/// 198.51.100.0/24. Destinations in 203.0.113.0/24 or 2001:db8::/32 never answer.
fn target(dest: &str, l3: i32) -> Result<Target, DomainError> {
    let h = hash(dest);
    let (name, ip): (String, IpAddr) = match dest.parse::<IpAddr>() {
        Ok(ip) => (dest.into(), ip),
        Err(_) if dest == "localhost" => (
            dest.into(),
            if l3 == 2 {
                "::1".parse().expect("literal")
            } else {
                "127.0.0.1".parse().expect("literal")
            },
        ),
        Err(_) if dest.ends_with(".invalid") || dest.contains(char::is_whitespace) => {
            return Err(DomainError::NotFound(format!(
                "% Unrecognized host or address: {dest}"
            )));
        }
        Err(_) => (
            dest.into(),
            format!("198.51.100.{}", 1 + h % 254)
                .parse()
                .expect("valid"),
        ),
    };
    let reachable = match ip {
        IpAddr::V4(v4) => v4.octets()[..3] != [203, 0, 113],
        IpAddr::V6(v6) => !(v6.segments()[0] == 0x2001 && v6.segments()[1] == 0x0db8),
    };
    let local = ip.is_loopback();
    Ok(Target {
        name,
        address: ip.to_string(),
        reachable,
        hops: if local { 1 } else { 2 + (h % 5) as i32 },
        base_rtt_ns: if local {
            40_000
        } else {
            1_000_000 + (h % 4_000_000) as i64
        },
    })
}

#[tonic::async_trait]
impl System for SystemService {
    type PingStream = ReceiverStream<Result<pb::PingResponse, Status>>;
    type TracerouteStream = ReceiverStream<Result<pb::TracerouteResponse, Status>>;

    async fn ping(
        &self,
        req: Request<pb::PingRequest>,
    ) -> Result<Response<Self::PingStream>, Status> {
        note(&req, "destination", &req.get_ref().destination);
        note(&req, "count", req.get_ref().count);
        let r = req.into_inner();
        if r.destination.is_empty() {
            return Err(Status::invalid_argument("destination is required"));
        }
        let t = target(&r.destination, r.l3protocol)?;
        let count: i64 = match r.count {
            0 => 5,
            -1 => i64::MAX,
            n if n > 0 => n as i64,
            n => return Err(Status::invalid_argument(format!("count {n} is invalid"))),
        };
        let interval = match r.interval {
            0 => Duration::from_secs(1),
            -1 => Duration::ZERO,
            n if n > 0 => Duration::from_nanos(n as u64),
            n => return Err(Status::invalid_argument(format!("interval {n} is invalid"))),
        };
        let wait = if r.wait > 0 {
            Duration::from_nanos(r.wait as u64)
        } else {
            Duration::from_secs(2)
        };
        let size = match r.size {
            0 => 56,
            n if (0..=65468).contains(&n) => n,
            n => return Err(Status::invalid_argument(format!("size {n} is invalid"))),
        };
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let start = std::time::Instant::now();
            let mut rtts: Vec<i64> = Vec::new();
            let mut sent = 0i32;
            let mut seq = 0i64;
            while seq < count {
                seq += 1;
                if seq > 1 {
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = tx.closed() => return,
                    }
                }
                sent = sent.saturating_add(1);
                if !t.reachable {
                    // The probe times out: nothing per packet.
                    tokio::select! {
                        _ = tokio::time::sleep(wait.min(Duration::from_millis(50))) => {}
                        _ = tx.closed() => return,
                    }
                    continue;
                }
                let rtt = t.base_rtt_ns + ((hash(&format!("{}{seq}", t.address)) % 200_000) as i64);
                rtts.push(rtt);
                let m = pb::PingResponse {
                    source: t.address.clone(),
                    time: rtt,
                    bytes: size + 8,
                    sequence: seq as i32,
                    ttl: 64 - t.hops + 1,
                    ..Default::default()
                };
                if tx.send(Ok(m)).await.is_err() {
                    return;
                }
            }
            let n = rtts.len() as i64;
            let (min, max) = (
                rtts.iter().copied().min().unwrap_or(0),
                rtts.iter().copied().max().unwrap_or(0),
            );
            let avg = if n > 0 {
                rtts.iter().sum::<i64>() / n
            } else {
                0
            };
            let var = if n > 0 {
                rtts.iter().map(|r| (r - avg).pow(2)).sum::<i64>() / n
            } else {
                0
            };
            let summary = pb::PingResponse {
                source: t.address.clone(),
                time: start.elapsed().as_nanos() as i64,
                sent,
                received: n as i32,
                min_time: min,
                avg_time: avg,
                max_time: max,
                std_dev: (var as f64).sqrt() as i64,
                ..Default::default()
            };
            let _ = tx.send(Ok(summary)).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn traceroute(
        &self,
        req: Request<pb::TracerouteRequest>,
    ) -> Result<Response<Self::TracerouteStream>, Status> {
        note(&req, "destination", &req.get_ref().destination);
        let r = req.into_inner();
        if r.destination.is_empty() {
            return Err(Status::invalid_argument("destination is required"));
        }
        let t = target(&r.destination, r.l3protocol)?;
        let max_ttl = match r.max_ttl {
            0 => 30,
            n if (1..=255).contains(&n) => n,
            n => return Err(Status::invalid_argument(format!("max_ttl {n} is invalid"))),
        };
        // A u32 on the wire: compared as is, never wrapped into an i32 (a
        // huge initial_ttl once read as a negative one and traced from 1).
        let first = r.initial_ttl.max(1);
        if first > max_ttl as u32 {
            return Err(Status::invalid_argument(format!(
                "initial_ttl {} exceeds max_ttl {max_ttl}",
                r.initial_ttl
            )));
        }
        let first = first as i32;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let head = pb::TracerouteResponse {
                destination_name: t.name.clone(),
                destination_address: t.address.clone(),
                hops: max_ttl,
                packet_size: 60,
                ..Default::default()
            };
            if tx.send(Ok(head)).await.is_err() {
                return;
            }
            let last = if t.reachable {
                t.hops.min(max_ttl)
            } else {
                max_ttl.min(t.hops + 3)
            };
            for hop in first..=last {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let answering = t.reachable || hop <= 2;
                let address = if hop == t.hops && t.reachable {
                    t.address.clone()
                } else if answering {
                    format!("192.0.2.{hop}")
                } else {
                    "*".into()
                };
                let m = pb::TracerouteResponse {
                    hop,
                    name: if r.do_not_resolve || !answering {
                        String::new()
                    } else {
                        address.clone()
                    },
                    address,
                    rtt: if answering {
                        t.base_rtt_ns * hop as i64 / t.hops.max(1) as i64
                    } else {
                        0
                    },
                    state: if answering {
                        pb::traceroute_response::State::Default as i32
                    } else {
                        pb::traceroute_response::State::None as i32
                    },
                    ..Default::default()
                };
                if tx.send(Ok(m)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn time(
        &self,
        _req: Request<pb::TimeRequest>,
    ) -> Result<Response<pb::TimeResponse>, Status> {
        Ok(Response::new(pb::TimeResponse {
            time: self.dev.now_ns(),
        }))
    }

    async fn set_package(
        &self,
        _req: Request<tonic::Streaming<pb::SetPackageRequest>>,
    ) -> Result<Response<pb::SetPackageResponse>, Status> {
        Err(Status::unimplemented(
            "SetPackage is not supported on IOS-XE; use gnoi.os.OS/Install",
        ))
    }

    async fn switch_control_processor(
        &self,
        _req: Request<pb::SwitchControlProcessorRequest>,
    ) -> Result<Response<pb::SwitchControlProcessorResponse>, Status> {
        Err(Status::unimplemented(format!(
            "{} has a single supervisor",
            self.dev.profile().model
        )))
    }

    async fn reboot(
        &self,
        req: Request<pb::RebootRequest>,
    ) -> Result<Response<pb::RebootResponse>, Status> {
        let r = req.get_ref();
        note(
            &req,
            "method",
            pb::RebootMethod::try_from(r.method)
                .map(|m| m.as_str_name())
                .unwrap_or("?"),
        );
        note(&req, "delay_ns", r.delay);
        note(&req, "message", &r.message);
        if !r.subcomponents.is_empty() {
            return Err(Status::unimplemented(
                "rebooting subcomponents is not supported",
            ));
        }
        self.dev.request_reboot(r.method, r.delay, &r.message)?;
        Ok(Response::new(pb::RebootResponse {}))
    }

    async fn reboot_status(
        &self,
        req: Request<pb::RebootStatusRequest>,
    ) -> Result<Response<pb::RebootStatusResponse>, Status> {
        if !req.get_ref().subcomponents.is_empty() {
            return Err(Status::unimplemented(
                "subcomponent reboot status is not supported",
            ));
        }
        let (info, method) = self.dev.reboot_info();
        let status = if info.active || info.count == 0 {
            pb::reboot_status::Status::Unknown
        } else {
            pb::reboot_status::Status::Success
        };
        Ok(Response::new(pb::RebootStatusResponse {
            active: info.active,
            wait: info.wait_ns,
            when: info.when_ns,
            reason: info.reason,
            count: info.count,
            method,
            status: Some(pb::RebootStatus {
                status: status as i32,
                message: String::new(),
            }),
        }))
    }

    async fn cancel_reboot(
        &self,
        req: Request<pb::CancelRebootRequest>,
    ) -> Result<Response<pb::CancelRebootResponse>, Status> {
        note(&req, "message", &req.get_ref().message);
        self.dev.cancel_reboot()?;
        Ok(Response::new(pb::CancelRebootResponse {}))
    }

    async fn kill_process(
        &self,
        req: Request<pb::KillProcessRequest>,
    ) -> Result<Response<pb::KillProcessResponse>, Status> {
        let r = req.get_ref();
        note(&req, "pid", r.pid);
        note(&req, "name", &r.name);
        note(&req, "restart", r.restart);
        if r.pid == 0 && r.name.is_empty() {
            return Err(Status::invalid_argument("pid or name is required"));
        }
        if r.signal == 0 {
            return Err(Status::invalid_argument("signal is required"));
        }
        pb::kill_process_request::Signal::try_from(r.signal)
            .map_err(|_| Status::invalid_argument(format!("unknown signal {}", r.signal)))?;
        let p = self.dev.kill_process(r.pid, &r.name, r.restart)?;
        note(
            &req,
            "new_pid",
            if r.restart {
                p.pid.to_string()
            } else {
                "-".into()
            },
        );
        Ok(Response::new(pb::KillProcessResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_targets() {
        assert!(target("127.0.0.1", 0).unwrap().reachable);
        assert!(!target("203.0.113.9", 0).unwrap().reachable);
        assert!(!target("2001:db8::1", 2).unwrap().reachable);
        assert_eq!(target("localhost", 2).unwrap().address, "::1");
        assert!(target("nowhere.invalid", 0).is_err());
        let a = target("core1.example.net", 0).unwrap();
        assert_eq!(a.address, target("core1.example.net", 0).unwrap().address);
        assert!(a.address.starts_with("198.51.100."));
    }
}
