//! `gnoi.file.File`: Get, Put, Stat, Remove on IOS-XE filesystems.

use std::sync::Arc;

use cvk_proto::gnoi::file::{self as pb, file_server::File};
use cvk_proto::gnoi::types::HashType;
use sha2::Digest;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{note, notes};
use crate::device::Device;

/// Handler.
pub struct FileService {
    dev: Arc<Device>,
}

impl FileService {
    /// For `dev`.
    pub fn new(dev: Arc<Device>) -> Self {
        Self { dev }
    }
}

enum Hasher {
    Md5(md5::Md5),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(name: &str) -> (Self, i32) {
        match name {
            "sha256" => (Hasher::Sha256(sha2::Sha256::new()), 1),
            "sha512" => (Hasher::Sha512(sha2::Sha512::new()), 2),
            _ => (Hasher::Md5(md5::Md5::new()), 3),
        }
    }
    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(b),
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }
    fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

#[tonic::async_trait]
impl File for FileService {
    type GetStream = ReceiverStream<Result<pb::GetResponse, Status>>;

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<Self::GetStream>, Status> {
        note(&req, "path", &req.get_ref().remote_file);
        let mut reader = self.dev.open_read(&req.get_ref().remote_file)?;
        let (mut hasher, method) = Hasher::new(&self.dev.profile().file_get_hash);
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            loop {
                match reader.next_chunk(64 * 1024) {
                    Ok(Some(chunk)) => {
                        hasher.update(&chunk);
                        let m = pb::GetResponse {
                            response: Some(pb::get_response::Response::Contents(chunk.into())),
                        };
                        if tx.send(Ok(m)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
            let h = HashType {
                method,
                hash: hasher.finish(),
            };
            let _ = tx
                .send(Ok(pb::GetResponse {
                    response: Some(pb::get_response::Response::Hash(h)),
                }))
                .await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn transfer_to_remote(
        &self,
        _req: Request<pb::TransferToRemoteRequest>,
    ) -> Result<Response<pb::TransferToRemoteResponse>, Status> {
        Err(Status::unimplemented(
            "TransferToRemote is not supported by the simulator (it opens no outside connections)",
        ))
    }

    async fn put(
        &self,
        req: Request<Streaming<pb::PutRequest>>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        use pb::put_request::Request as R;
        let notes = notes(&req);
        let mut stream = req.into_inner();
        let first = stream.message().await?.and_then(|m| m.request);
        let Some(R::Open(details)) = first else {
            return Err(Status::invalid_argument(
                "the first PutRequest must be open",
            ));
        };
        if let Some(n) = &notes {
            n.note("path", &details.remote_file);
            n.note("permissions", details.permissions);
        }
        let mut session = self
            .dev
            .begin_put(&details.remote_file, details.permissions)?;
        loop {
            match stream.message().await?.and_then(|m| m.request) {
                Some(R::Contents(b)) => session.write(&b)?,
                Some(R::Hash(h)) => {
                    if let Some(n) = &notes {
                        n.note("bytes", session.written());
                    }
                    if h.method == 0 {
                        return Err(Status::invalid_argument(
                            "hash method UNSPECIFIED; file discarded",
                        ));
                    }
                    session.commit(h.method, &h.hash)?;
                    return Ok(Response::new(pb::PutResponse {}));
                }
                Some(R::Open(_)) => return Err(Status::invalid_argument("open sent twice")),
                None => {
                    return Err(Status::invalid_argument(
                        "the stream ended without a hash; file discarded",
                    ));
                }
            }
        }
    }

    async fn stat(
        &self,
        req: Request<pb::StatRequest>,
    ) -> Result<Response<pb::StatResponse>, Status> {
        note(&req, "path", &req.get_ref().path);
        let stats = self
            .dev
            .stat(&req.get_ref().path)?
            .into_iter()
            .map(|e| pb::StatInfo {
                path: e.path,
                last_modified: e.mtime_ns,
                permissions: e.permissions,
                size: e.size,
                umask: 22,
            })
            .collect();
        Ok(Response::new(pb::StatResponse { stats }))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        note(&req, "path", &req.get_ref().remote_file);
        self.dev.remove(&req.get_ref().remote_file)?;
        Ok(Response::new(pb::RemoveResponse {}))
    }
}
