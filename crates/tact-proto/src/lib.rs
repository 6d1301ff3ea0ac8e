//! tact's wire layer: the `tact.v1` protobuf messages and the `ContactPolicy` gRPC
//! service, with canonical protobuf-JSON serde impls, and the conversions between
//! them and [`tact_core`]'s types ([`convert`]).
//!
//! Only this crate knows wire types: everything else works with `tact_core` types
//! and converts at the edge.

pub mod codec;
pub mod convert;

/// Generated `tact.v1` messages, enums, and the `ContactPolicy` client and server.
#[allow(missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/tact.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/tact.v1.serde.rs"));
}

/// The encoded `FileDescriptorSet` of `tact.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tact_descriptor.bin"));

pub use convert::{
    ConvertError, WireFormat, decision_to_pb, event_from_bytes, event_from_json, event_to_bytes,
    event_to_json, proposal_from_pb,
};

#[cfg(test)]
mod convert_tests;
#[cfg(test)]
mod fuzz_tests;
