//! `gnoi.factory_reset.FactoryReset`: Start (control class). IOS-XE runs
//! `factory-reset all` (install mode only) and may drop the connection
//! instead of answering, which is reported as
//! [`FactoryResetOutcome::ConnectionClosed`].

use cvk_proto::gnoi::factory_reset as pb;
use cvk_proto::gnoi::factory_reset::factory_reset_client::FactoryResetClient;
use serde::Serialize;

use super::error::{is_transport_break, status_text};
use super::{ClientError, DeviceClient, rpcs};

/// Factory reset arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactoryResetParams {
    /// Also roll back to the factory OS image.
    pub factory_os: bool,
    /// Zero-fill persistent storage.
    pub zero_fill: bool,
    /// Keep installed certificates.
    pub retain_certs: bool,
}

impl Default for FactoryResetParams {
    fn default() -> Self {
        Self {
            factory_os: false,
            zero_fill: false,
            retain_certs: true,
        }
    }
}

/// How a factory reset request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "result")]
pub enum FactoryResetOutcome {
    /// ResetSuccess.
    Started,
    /// ResetError from the device.
    Error {
        /// factory_os was requested but is unsupported.
        factory_os_unsupported: bool,
        /// zero_fill was requested but is unsupported.
        zero_fill_unsupported: bool,
        /// Another error.
        other: bool,
        /// Device's detail.
        detail: String,
    },
    /// The connection dropped after the request was sent and before any
    /// answer (the reset has started).
    ConnectionClosed {
        /// What the transport said.
        detail: String,
    },
}

impl DeviceClient {
    /// FactoryReset.Start.
    pub async fn factory_reset(
        &self,
        p: &FactoryResetParams,
    ) -> Result<FactoryResetOutcome, ClientError> {
        let rpc = rpcs::FACTORY_RESET_START;
        let d = self.settings().timeouts.control;
        self.preflight(rpc)?;
        let req = self.request(
            pb::StartRequest {
                factory_os: p.factory_os,
                zero_fill: p.zero_fill,
                retain_certs: p.retain_certs,
            },
            Some(d),
        );
        let mut c = FactoryResetClient::new(self.channel(rpc.class));
        let call = c.start(req);
        let result = match tokio::time::timeout(d, call).await {
            Err(_) => Err(ClientError::DeadlineExceeded {
                rpc: rpc.path,
                after: d,
            }),
            Ok(Ok(resp)) => {
                self.mark_supported(rpc);
                match resp.into_inner().response {
                    Some(pb::start_response::Response::ResetSuccess(_)) => {
                        Ok(FactoryResetOutcome::Started)
                    }
                    Some(pb::start_response::Response::ResetError(e)) => {
                        Ok(FactoryResetOutcome::Error {
                            factory_os_unsupported: e.factory_os_unsupported,
                            zero_fill_unsupported: e.zero_fill_unsupported,
                            other: e.other,
                            detail: e.detail,
                        })
                    }
                    None => Err(ClientError::Protocol(
                        "FactoryReset.Start: empty StartResponse".into(),
                    )),
                }
            }
            Ok(Err(status)) if is_transport_break(&status) => {
                Ok(FactoryResetOutcome::ConnectionClosed {
                    detail: status_text(&status),
                })
            }
            Ok(Err(status)) => Err(self.status_error(rpc, d, &status)),
        };
        self.finish(rpc, &result);
        result
    }
}
