//! Authentication: the [`Credentials`] a device expects in `username` /
//! `password` metadata and the tower layer that checks them, between the
//! journal and the fault layers.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};

use crate::journal::note;
use crate::rpc::{GrpcRequest, GrpcResponse};

/// Credentials a device expects in `username` / `password` metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// Answers UNAUTHENTICATED when the credentials are missing or wrong.
#[derive(Clone)]
pub struct AuthLayer {
    creds: Option<Arc<Credentials>>,
}

impl AuthLayer {
    /// No check when `creds` is none.
    pub fn new(creds: Option<Credentials>) -> Self {
        Self {
            creds: creds.map(Arc::new),
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            creds: self.creds.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    creds: Option<Arc<Credentials>>,
}

impl<S> tower::Service<GrpcRequest> for AuthService<S>
where
    S: tower::Service<GrpcRequest, Response = GrpcResponse, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = GrpcResponse;
    type Error = Infallible;
    type Future = futures::future::Either<
        S::Future,
        futures::future::Ready<Result<GrpcResponse, Infallible>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: GrpcRequest) -> Self::Future {
        if let Some(c) = &self.creds {
            let get = |k: &str| req.headers().get(k).and_then(|v| v.to_str().ok());
            let ok = get("username") == Some(c.username.as_str())
                && get("password") == Some(c.password.as_str());
            if !ok {
                let why = if get("username").is_none() {
                    "missing username/password metadata"
                } else {
                    "authentication failed"
                };
                note(req.extensions(), "auth", "rejected");
                return futures::future::Either::Right(futures::future::ready(Ok(
                    tonic::Status::unauthenticated(why).into_http(),
                )));
            }
        }
        futures::future::Either::Left(self.inner.call(req))
    }
}
