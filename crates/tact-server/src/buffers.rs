//! Watching the storage engines' write buffers (the event log's and the audit's).
//!
//! fjall keeps recent writes in memory until a background worker flushes them. Its
//! worker pool (3.1.13) can stop flushing: a worker queues a flush on the bounded
//! queue that only the workers read, and a flood of commits can fill that queue
//! first (fjall-rs/fjall#323; a process limited to one core has one worker). Writes
//! then go on, and memory grows with every one of them until tact is restarted (which
//! replays fjall's journal: nothing written is lost). Nothing in tact can restart the
//! flushing, so this says so, loudly and early: the gauges
//! `tact_storage_write_buffer_bytes{store}` and
//! `tact_storage_write_buffer_over_bound{store}`, and an error in the log when a store
//! passes its bound (again every [`REPEAT`] while it stays over, and a line when it is
//! back under).

use std::time::{Duration, Instant};

use tact_log::WriteBuffers;

/// How often an alarm that stays up is logged again.
pub(crate) const REPEAT: Duration = Duration::from_secs(60);

/// What the watch has to say about one sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alarm {
    /// Over its bound: newly, or still (every [`REPEAT`]).
    Over(WriteBuffers),
    /// Back under its bound after being over.
    Cleared(WriteBuffers),
}

/// One store's watch, fed a sample at a time (pure: the caller supplies the instant).
#[derive(Debug)]
pub(crate) struct BufferWatch {
    pub(crate) store: &'static str,
    /// When the alarm was last logged, while it is up.
    raised: Option<Instant>,
}

impl BufferWatch {
    pub(crate) fn new(store: &'static str) -> Self {
        BufferWatch { store, raised: None }
    }

    pub(crate) fn observe(&mut self, sample: WriteBuffers, now: Instant) -> Option<Alarm> {
        match (sample.over_bound(), self.raised) {
            (true, None) => {
                self.raised = Some(now);
                Some(Alarm::Over(sample))
            }
            (true, Some(at)) if now.duration_since(at) >= REPEAT => {
                self.raised = Some(now);
                Some(Alarm::Over(sample))
            }
            (true, Some(_)) => None,
            (false, Some(_)) => {
                self.raised = None;
                Some(Alarm::Cleared(sample))
            }
            (false, None) => None,
        }
    }

    /// Samples the store: sets its gauges and logs what [`observe`](Self::observe) says.
    pub(crate) fn sample(&mut self, buffers: Option<WriteBuffers>, now: Instant) {
        let Some(b) = buffers else { return };
        metrics::gauge!("tact_storage_write_buffer_bytes", "store" => self.store).set(b.bytes as f64);
        metrics::gauge!("tact_storage_write_buffer_over_bound", "store" => self.store)
            .set(if b.over_bound() { 1.0 } else { 0.0 });
        match self.observe(b, now) {
            Some(Alarm::Over(b)) => tracing::error!(
                store = self.store,
                write_buffer_bytes = b.bytes,
                bound_bytes = b.bound,
                "storage write buffers over their bound: flushing has stopped or fallen far behind \
                 (fjall-rs/fjall#323); memory grows with every write until tact is restarted, which \
                 loses nothing"
            ),
            Some(Alarm::Cleared(b)) => tracing::warn!(
                store = self.store,
                write_buffer_bytes = b.bytes,
                bound_bytes = b.bound,
                "storage write buffers back under their bound"
            ),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(bytes: u64) -> WriteBuffers {
        WriteBuffers { bytes, bound: 100 }
    }

    #[test]
    fn an_alarm_is_raised_repeated_every_minute_and_cleared_once() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut w = BufferWatch::new("log");
        assert_eq!(w.observe(at(50), s(0)), None);
        assert_eq!(w.observe(at(100), s(1)), None, "at the bound is not over it");
        assert_eq!(w.observe(at(101), s(2)), Some(Alarm::Over(at(101))));
        assert_eq!(w.observe(at(500), s(3)), None);
        assert_eq!(w.observe(at(500), s(61)), None);
        assert_eq!(w.observe(at(900), s(62)), Some(Alarm::Over(at(900))));
        assert_eq!(w.observe(at(10), s(63)), Some(Alarm::Cleared(at(10))));
        assert_eq!(w.observe(at(10), s(64)), None);
        assert_eq!(
            w.observe(at(101), s(65)),
            Some(Alarm::Over(at(101))),
            "raised again at once"
        );
    }

    #[test]
    fn the_bound_of_an_lsm_is_ten_write_buffers() {
        let b = WriteBuffers::bound_of_lsm(7, 64);
        assert_eq!(b, WriteBuffers { bytes: 7, bound: 640 });
        assert!(!b.over_bound());
        assert!(WriteBuffers::bound_of_lsm(641, 64).over_bound());
        assert_eq!(WriteBuffers::bound_of_lsm(0, u64::MAX).bound, u64::MAX);
    }
}
