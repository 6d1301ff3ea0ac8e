//! The pure decision core of tact.
//!
//! Nothing in this crate does I/O, reads a clock or knows a wire format: time is
//! an argument, so [`apply`](state::CustomerState::apply) and [`decide`](decide::decide)
//! are deterministic and replay gives the same answers as live traffic.

pub mod backtest;
pub mod decide;
pub mod describe;
pub mod event;
mod explain;
pub mod policy;
pub mod proof;
mod quiet;
mod rules;
pub mod state;
pub mod time;
mod touch;
pub mod view;

pub use decide::{
    Alternative, Clock, Decision, Detail, Effect, Explain, LocalClock, Proposal, Reason, Verdict, decide,
    decide_explained, decide_with_lag,
};
pub use event::{
    Admission, Channel, ContactLimit, Engagement, Event, EventKind, InvalidEvent, NonResponse, Origin,
    Purpose, Signal, UnknownName,
};
pub use policy::{Policy, PolicyError};
pub use state::{CustomerState, Retention};
pub use time::{DAY, HOUR, MINUTE, SECOND, Span, Timestamp};
pub use view::{CustomerView, customer_view};
