//! `gnoi.os.OS`: Install, Activate, Verify.

use std::sync::Arc;
use std::time::Duration;

use cvk_proto::gnoi::os::{self as pb, os_server::Os};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{note, notes};
use crate::device::{ActivateFail, Device, InstallBegin, InstallFail, InstallFailKind};
use crate::journal::CallNotes;

/// Time between ActivateOK and the reload, so the answer leaves first.
const ACTIVATE_GRACE: Duration = Duration::from_millis(100);

/// Handler.
pub struct OsService {
    dev: Arc<Device>,
}

impl OsService {
    /// For `dev`.
    pub fn new(dev: Arc<Device>) -> Self {
        Self { dev }
    }
}

type Tx = mpsc::Sender<Result<pb::InstallResponse, Status>>;

fn resp(r: pb::install_response::Response) -> Result<pb::InstallResponse, Status> {
    Ok(pb::InstallResponse { response: Some(r) })
}

fn install_error(f: InstallFail) -> pb::install_response::Response {
    use pb::install_error::Type as T;
    let t = match f.kind {
        InstallFailKind::Incompatible => T::Incompatible,
        InstallFailKind::TooLarge => T::TooLarge,
        InstallFailKind::ParseFail => T::ParseFail,
        InstallFailKind::IntegrityFail => T::IntegrityFail,
        InstallFailKind::InstallRunPackage => T::InstallRunPackage,
        InstallFailKind::InstallInProgress => T::InstallInProgress,
        InstallFailKind::NotSupportedOnBackup => T::NotSupportedOnBackup,
    };
    pb::install_response::Response::InstallError(pb::InstallError {
        r#type: t as i32,
        detail: f.detail,
    })
}

async fn run_install(
    dev: Arc<Device>,
    mut stream: Streaming<pb::InstallRequest>,
    tx: Tx,
    notes: Option<CallNotes>,
) {
    use pb::install_request::Request as R;
    use pb::install_response::Response as A;
    let note = |k: &str, v: &dyn ToString| {
        if let Some(n) = &notes {
            n.note(k, v.to_string());
        }
    };
    let first = match stream.message().await {
        Ok(m) => m.and_then(|m| m.request),
        Err(_) => return,
    };
    let Some(R::TransferRequest(tr)) = first else {
        let _ = tx
            .send(Err(Status::invalid_argument(
                "the first InstallRequest must be transfer_request",
            )))
            .await;
        return;
    };
    note("version", &tr.version);
    note("package_size", &tr.package_size);
    if tr.standby_supervisor {
        note("standby_supervisor", &true);
    }
    let mut session = match dev.begin_install(&tr.version, tr.package_size, tr.standby_supervisor) {
        Err(f) => {
            note("result", &format!("{:?}", f.kind));
            let _ = tx.send(resp(install_error(f))).await;
            return;
        }
        Ok(InstallBegin::AlreadyPresent {
            version,
            description,
        }) => {
            note("result", &"already-present");
            let _ = tx
                .send(resp(A::Validated(pb::Validated {
                    version,
                    description,
                })))
                .await;
            return;
        }
        Ok(InstallBegin::Transfer(s)) => s,
    };
    if tx
        .send(resp(A::TransferReady(pb::TransferReady {})))
        .await
        .is_err()
    {
        return;
    }
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m.request,
            Ok(None) => {
                note("result", &"closed-before-transfer-end");
                let _ = tx
                    .send(Err(Status::aborted(
                        "stream closed before transfer_end; image discarded",
                    )))
                    .await;
                return;
            }
            Err(e) => {
                note("result", &format!("stream error: {}", e.message()));
                return;
            }
        };
        match msg {
            Some(R::TransferContent(b)) => match session.write(b).await {
                Ok(Some(n)) => {
                    let p = A::TransferProgress(pb::TransferProgress { bytes_received: n });
                    if tx.send(resp(p)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(f) => {
                    note("result", &format!("{:?}", f.kind));
                    let _ = tx.send(resp(install_error(f))).await;
                    return;
                }
            },
            Some(R::TransferEnd(_)) => {
                note("bytes", &session.received());
                match session.finish().await {
                    Ok((version, path)) => {
                        note("result", &"validated");
                        note("image_version", &version);
                        let d = format!("stored as {path}; install add done");
                        let _ = tx
                            .send(resp(A::Validated(pb::Validated {
                                version,
                                description: d,
                            })))
                            .await;
                    }
                    Err(f) => {
                        note("result", &format!("{:?}", f.kind));
                        let _ = tx.send(resp(install_error(f))).await;
                    }
                }
                return;
            }
            Some(R::TransferRequest(_)) => {
                let _ = tx
                    .send(Err(Status::invalid_argument("transfer_request sent twice")))
                    .await;
                return;
            }
            // Once answered "transfer_request sent twice", which it was not.
            None => {
                let _ = tx
                    .send(Err(Status::invalid_argument(
                        "an InstallRequest with no request set; \
                         transfer_content or transfer_end expected",
                    )))
                    .await;
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl Os for OsService {
    type InstallStream = ReceiverStream<Result<pb::InstallResponse, Status>>;

    async fn install(
        &self,
        req: Request<Streaming<pb::InstallRequest>>,
    ) -> Result<Response<Self::InstallStream>, Status> {
        let notes = notes(&req);
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(run_install(self.dev.clone(), req.into_inner(), tx, notes));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn activate(
        &self,
        req: Request<pb::ActivateRequest>,
    ) -> Result<Response<pb::ActivateResponse>, Status> {
        use pb::activate_error::Type as T;
        let r = req.get_ref();
        note(&req, "version", &r.version);
        note(&req, "no_reboot", r.no_reboot);
        let err = |t: T, detail: String| {
            Ok(Response::new(pb::ActivateResponse {
                response: Some(pb::activate_response::Response::ActivateError(
                    pb::ActivateError {
                        r#type: t as i32,
                        detail,
                    },
                )),
            }))
        };
        if !r.no_reboot && self.dev.snapshot().reboot.active {
            return Err(Status::failed_precondition("a reboot is already pending"));
        }
        match self
            .dev
            .activate(&r.version, r.no_reboot, r.standby_supervisor)
        {
            Err(ActivateFail::NonExistentVersion(d)) => return err(T::NonExistentVersion, d),
            Err(ActivateFail::NotSupportedOnBackup(d)) => return err(T::NotSupportedOnBackup, d),
            Err(ActivateFail::Unspecified(d)) => return err(T::Unspecified, d),
            Ok(()) => {}
        }
        if !r.no_reboot {
            let reason = format!("OS.Activate {}", r.version);
            if self.dev.profile().activate_closes_connection {
                // IOS-XE reloads at once; the client only sees the connection close.
                self.dev.schedule_reboot(1, Duration::ZERO, &reason)?;
                std::future::pending::<()>().await;
            }
            self.dev.schedule_reboot(1, ACTIVATE_GRACE, &reason)?;
        }
        Ok(Response::new(pb::ActivateResponse {
            response: Some(pb::activate_response::Response::ActivateOk(
                pb::ActivateOk {},
            )),
        }))
    }

    async fn verify(
        &self,
        _req: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let v = self.dev.verify()?;
        Ok(Response::new(pb::VerifyResponse {
            version: v.version,
            activation_fail_message: v.activation_fail_message,
            verify_standby: Some(pb::VerifyStandby {
                state: Some(pb::verify_standby::State::StandbyState(pb::StandbyState {
                    state: pb::standby_state::State::Unsupported as i32,
                })),
            }),
            individual_supervisor_install: false,
        }))
    }
}
