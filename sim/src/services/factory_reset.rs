//! `gnoi.factory_reset.FactoryReset`: wipe and reboot.

use std::sync::Arc;
use std::time::Duration;

use cvk_proto::gnoi::factory_reset::{self as pb, factory_reset_server::FactoryReset};
use tonic::{Request, Response, Status};

use super::note;
use crate::device::Device;

/// Handler.
pub struct FactoryResetService {
    dev: Arc<Device>,
}

impl FactoryResetService {
    /// For `dev`.
    pub fn new(dev: Arc<Device>) -> Self {
        Self { dev }
    }
}

fn error(e: pb::ResetError) -> Result<Response<pb::StartResponse>, Status> {
    Ok(Response::new(pb::StartResponse {
        response: Some(pb::start_response::Response::ResetError(e)),
    }))
}

#[tonic::async_trait]
impl FactoryReset for FactoryResetService {
    async fn start(
        &self,
        req: Request<pb::StartRequest>,
    ) -> Result<Response<pb::StartResponse>, Status> {
        let r = req.get_ref();
        note(&req, "factory_os", r.factory_os);
        note(&req, "zero_fill", r.zero_fill);
        note(&req, "retain_certs", r.retain_certs);
        let p = self.dev.profile();
        if r.factory_os && !p.factory_os_supported {
            return error(pb::ResetError {
                factory_os_unsupported: true,
                detail: "rolling back to the factory OS is not supported".into(),
                ..Default::default()
            });
        }
        if r.zero_fill && !p.zero_fill_supported {
            return error(pb::ResetError {
                zero_fill_unsupported: true,
                detail: "zero fill is not supported".into(),
                ..Default::default()
            });
        }
        if self.dev.snapshot().reboot.active {
            return error(pb::ResetError {
                other: true,
                detail: "a reboot is pending".into(),
                ..Default::default()
            });
        }
        if let Err(e) = self.dev.factory_reset(r.factory_os, r.retain_certs) {
            return error(pb::ResetError {
                other: true,
                detail: e.to_string(),
                ..Default::default()
            });
        }
        if let Err(e) = self
            .dev
            .schedule_reboot(1, Duration::from_millis(200), "factory reset")
        {
            return error(pb::ResetError {
                other: true,
                detail: e.to_string(),
                ..Default::default()
            });
        }
        Ok(Response::new(pb::StartResponse {
            response: Some(pb::start_response::Response::ResetSuccess(
                pb::ResetSuccess {},
            )),
        }))
    }
}
