//! Interactive calls first: batch work (`DecideBatch`) runs on a bounded share of the
//! cores, waits for its turn in a bounded queue for a bounded time, and is shed
//! (`RESOURCE_EXHAUSTED`, `retry-after`, `tact-reason: overloaded`) when it cannot be
//! served in time; streams are bounded per client. `Decide` and `Authorize` never wait
//! here, so a campaign screening millions leaves cores for a sales rep's call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::auth::Caller;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShedOptions {
    /// `DecideBatch` calls deciding at once (default: half the cores, at least 1).
    pub batch_concurrency: usize,
    /// Batches waiting for a turn; more are shed at once.
    pub batch_queue: usize,
    /// How long a batch may wait for its turn before it is shed.
    pub batch_wait: Duration,
    /// Open `DecideStream` calls per client.
    pub max_streams_per_client: usize,
}

impl Default for ShedOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ShedOptions {
            batch_concurrency: (cores / 2).max(1),
            batch_queue: 256,
            batch_wait: Duration::from_secs(2),
            max_streams_per_client: 16,
        }
    }
}

#[derive(Debug)]
pub struct Shedder {
    opts: ShedOptions,
    batch: Arc<Semaphore>,
    waiting: AtomicUsize,
    streams: Arc<Mutex<HashMap<Arc<str>, usize>>>,
}

fn overloaded(caller: &Caller, method: &'static str, why: String, retry_ms: u64) -> Status {
    metrics::counter!("tact_shed_total", "client" => caller.id.to_string(), "method" => method).increment(1);
    tracing::debug!(client = %caller.id, method, "shed");
    let mut status = Status::resource_exhausted(why);
    let md = status.metadata_mut();
    if let Ok(v) = retry_ms.to_string().parse() {
        md.insert("retry-after", v);
    }
    md.insert(
        "tact-reason",
        tonic::metadata::MetadataValue::from_static("overloaded"),
    );
    status
}

/// An open stream of a client; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    client: Arc<str>,
    streams: Arc<Mutex<HashMap<Arc<str>, usize>>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = streams.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                streams.remove(&self.client);
            }
        }
    }
}

impl Shedder {
    pub fn new(opts: ShedOptions) -> Shedder {
        Shedder {
            opts,
            batch: Arc::new(Semaphore::new(opts.batch_concurrency.max(1))),
            waiting: AtomicUsize::new(0),
            streams: Arc::default(),
        }
    }

    /// A turn for a batch: at once if a slot is free, else after waiting in the bounded
    /// queue at most `batch_wait`; shed otherwise.
    pub async fn batch_turn(&self, caller: &Caller) -> Result<OwnedSemaphorePermit, Status> {
        if let Ok(permit) = Arc::clone(&self.batch).try_acquire_owned() {
            return Ok(permit);
        }
        let retry_ms = self.opts.batch_wait.as_millis().try_into().unwrap_or(u64::MAX);
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.opts.batch_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(overloaded(
                caller,
                "DecideBatch",
                format!(
                    "overloaded: {} batches already wait for a turn",
                    self.opts.batch_queue
                ),
                retry_ms,
            ));
        }
        let turn = tokio::time::timeout(self.opts.batch_wait, Arc::clone(&self.batch).acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match turn {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(overloaded(
                caller,
                "DecideBatch",
                format!(
                    "overloaded: no turn for this batch within {} ms",
                    self.opts.batch_wait.as_millis()
                ),
                retry_ms,
            )),
        }
    }

    /// A slot for one more open stream of the caller, or RESOURCE_EXHAUSTED.
    pub fn open_stream(&self, caller: &Caller) -> Result<StreamSlot, Status> {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let n = streams.entry(Arc::clone(&caller.id)).or_default();
        if *n >= self.opts.max_streams_per_client {
            drop(streams);
            return Err(overloaded(
                caller,
                "DecideStream",
                format!(
                    "client `{}` already has {} streams open",
                    caller.id, self.opts.max_streams_per_client
                ),
                1000,
            ));
        }
        *n += 1;
        Ok(StreamSlot {
            client: Arc::clone(&caller.id),
            streams: Arc::clone(&self.streams),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{RateLimits, Scopes};

    fn caller(id: &str) -> Caller {
        Caller {
            id: id.into(),
            scopes: Scopes::all(),
            limits: RateLimits::default(),
            authenticated: true,
        }
    }

    #[tokio::test]
    async fn batches_beyond_the_slots_wait_then_are_shed() {
        let shed = Shedder::new(ShedOptions {
            batch_concurrency: 1,
            batch_queue: 1,
            batch_wait: Duration::from_millis(20),
            max_streams_per_client: 1,
        });
        let c = caller("campaign");
        let first = shed.batch_turn(&c).await.unwrap();
        let e = shed.batch_turn(&c).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert_eq!(e.metadata().get("tact-reason").unwrap(), "overloaded");
        assert_eq!(e.metadata().get("retry-after").unwrap(), "20");
        drop(first);
        let _second = shed.batch_turn(&c).await.unwrap();
    }

    #[test]
    fn streams_are_bounded_per_client() {
        let shed = Shedder::new(ShedOptions {
            max_streams_per_client: 1,
            ..ShedOptions::default()
        });
        let one = shed.open_stream(&caller("a")).unwrap();
        assert!(shed.open_stream(&caller("a")).is_err());
        let _other = shed.open_stream(&caller("b")).unwrap();
        drop(one);
        let _again = shed.open_stream(&caller("a")).unwrap();
    }
}
