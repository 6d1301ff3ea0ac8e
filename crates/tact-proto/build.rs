//! Compiles `proto/tact/v1/*.proto` with the vendored `protoc`: prost messages and
//! tonic client/server (tonic-prost-build), a file descriptor set for reflection,
//! and canonical-JSON serde impls (pbjson-build).

use std::env;
use std::error::Error;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "tact/v1/events.proto",
    "tact/v1/contact_policy.proto",
    "tact/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("tact_descriptor.bin");

    let protos: Vec<PathBuf> = PROTOS.iter().map(|p| proto_root.join(p)).collect();
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-changed=build.rs");

    let includes = vec![proto_root.clone(), protoc_bin_vendored::include_path()?];

    let mut config = tonic_prost_build::Config::new();
    // No system protoc here: use the one shipped in the protoc-bin-vendored crate.
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // prost messages, each decoded from one slice (see src/codec.rs).
        .codec_path("crate::codec::Codec")
        .file_descriptor_set_path(&descriptor_path)
        // Well-known types come from pbjson-types (prost types with canonical JSON serde
        // impls) rather than prost-types; `compile_well_known_types` turns off prost's
        // built-in `.google.protobuf` mapping so that the extern path below replaces it.
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_with_config(config, &protos, &includes)?;

    let descriptor_set = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_set)?
        .extern_path(".google.protobuf", "::pbjson_types")
        .build(&[".tact.v1"])?;
    Ok(())
}
