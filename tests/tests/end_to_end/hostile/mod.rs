//! The hostile-client suite: what a careless or malicious caller, sender or operator can
//! try, and what tact must do instead of turning a DENY into an ALLOW, growing memory
//! without bound, crashing, or failing to stop. One module per front: add to them.
//!
//! - `input`: events and requests over gRPC (future-dated events, reserved ids, sizes).
//! - `transport`: connections that idle, flood or never finish; shutdown deadlines.
//! - `storage`: a failing or corrupt store (poisoned log, corrupt snapshot).

mod input;
mod storage;
mod transport;
