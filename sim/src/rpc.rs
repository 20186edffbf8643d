//! The request, response and per-connection types every tower layer of a
//! device's gRPC stack shares: the listener ([`crate::server`]) puts a
//! [`ConnCtx`] into each request's extensions, and the journal and fault
//! layers read it.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

/// Request type inside the layer stack.
pub type GrpcRequest = http::Request<tonic::body::Body>;
/// Response type inside the layer stack.
pub type GrpcResponse = http::Response<tonic::body::Body>;

/// Per-connection context, in every request's extensions.
#[derive(Clone, Debug)]
pub struct ConnCtx {
    /// Cancelling it closes the connection.
    pub kill: CancellationToken,
    /// Client address.
    pub peer: SocketAddr,
}
