//! Compiles the vendored-by-hand gNOI/gNMI `.proto` files with protox (pure
//! Rust, no system `protoc`) and generates prost messages plus tonic clients
//! and servers. The include root mirrors the upstream import paths
//! (`github.com/openconfig/...`), so the files import each other exactly as
//! openconfig's do.

use std::path::PathBuf;

const ROOT: &str = "protos";
const FILES: &[&str] = &[
    "github.com/openconfig/gnoi/types/types.proto",
    "github.com/openconfig/gnoi/common/common.proto",
    "github.com/openconfig/gnoi/system/system.proto",
    "github.com/openconfig/gnoi/file/file.proto",
    "github.com/openconfig/gnoi/os/os.proto",
    "github.com/openconfig/gnoi/cert/cert.proto",
    "github.com/openconfig/gnoi/factory_reset/factory_reset.proto",
    "github.com/openconfig/gnmi/proto/gnmi_ext/gnmi_ext.proto",
    "github.com/openconfig/gnmi/proto/gnmi/gnmi.proto",
];

/// `bytes` fields that carry image and file content.
const BULK_BYTES_FIELDS: &[&str] = &[
    ".gnoi.os.InstallRequest.transfer_content",
    ".gnoi.file.PutRequest.contents",
    ".gnoi.file.GetResponse.contents",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={ROOT}");
    let fds = protox::compile(FILES, [ROOT])?;

    // The descriptor set is exported so that servers can offer gRPC
    // reflection (grpcurl, gnoic and gnmic work without local protos).
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("cvk_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    // The bulk payload fields decode as `bytes::Bytes`: a slice of tonic's
    // receive buffer instead of a copy into a new Vec, and the sender can
    // hand over a chunk it already holds. The wire is unchanged.
    let mut cfg = tonic_prost_build::configure();
    for field in BULK_BYTES_FIELDS {
        cfg = cfg.bytes(field);
    }
    cfg.build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
