//! tact end to end, against real servers on `127.0.0.1:0`: one test binary, one module
//! per front. One binary rather than one per file: each binary links the whole server
//! (tonic, rdkafka, sled), so ten of them took over a gigabyte of disk and ten links.
//!
//! Run one front with `cargo test -p tact-tests --test end_to_end kafka::`.

mod audit;
mod auth;
mod detail;
mod grpc;
mod hostile;
mod kafka;
mod operations;
mod policy_reload;
mod restart;
mod tls;
