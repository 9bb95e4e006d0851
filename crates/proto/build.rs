//! Compiles `proto/settle.proto` (at the workspace root) into Rust with tonic-prost-build,
//! generating both the server and the client.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so a fresh machine needs nothing
//! installed. On a platform that crate has no binary for, an explicit `PROTOC`
//! environment variable is used instead.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest_dir.join("../../proto");
    let proto_file = proto_dir.join("settle.proto");

    let protoc = match protoc_bin_vendored::protoc_bin_path() {
        Ok(path) => path,
        Err(vendored_error) => match std::env::var_os("PROTOC") {
            Some(path) => PathBuf::from(path),
            None => {
                return Err(format!(
                    "no vendored protoc for this platform ({vendored_error}) and PROTOC is not set"
                )
                .into())
            }
        },
    };

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // The packed batches (a megabyte each) as `Bytes`: decoding slices the received
    // buffer instead of copying it into a `Vec`.
    config.bytes([
        ".settle.v1.CreateTransfersRequest.packed",
        ".settle.v1.CreateAccountsRequest.packed",
    ]);

    println!("cargo:rerun-if-changed={}", proto_file.display());
    println!("cargo:rerun-if-env-changed=PROTOC");
    tonic_prost_build::configure().build_server(true).build_client(true).compile_with_config(
        config,
        &[proto_file],
        &[proto_dir],
    )?;
    Ok(())
}
