//! The feed contract ([`Feed`], [`Access`], [`FeedStatus`], [`DeadLetter`], ...) lives in
//! [`tact_log::feed`], below both the server and `tact-ingest`; re-exported here.

pub use tact_log::feed::*;
