//! Generates the gRPC code from `proto/` with protox (a protobuf compiler in Rust), so building
//! Strata never needs a system `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = ["strata/v1/client.proto", "strata/v1/admin.proto", "strata/v1/internal.proto"];
    let paths: Vec<PathBuf> = files.iter().map(|f| root.join(f)).collect();
    for path in &paths {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let descriptors = protox::compile(&paths, [&root])?;
    tonic_prost_build::configure()
        // Record batches stay `bytes::Bytes` end to end: no copy into a Vec on decode.
        .bytes(".strata.v1")
        // Sizes each message's buffer before encoding it (see `src/codec.rs`).
        .codec_path("crate::codec::PresizedCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
