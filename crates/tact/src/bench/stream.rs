//! The load of `--op stream`: `DecideStream` driven without the load generator's own
//! per-message work getting in the way of measuring the server's.
//!
//! Each request is two slices copied into the frame: the customer's id field, encoded
//! once for the whole audience, and one of the [`PROPOSALS`]' other fields, encoded
//! once (protobuf fields may be concatenated: the result is byte for byte what prost
//! encodes for the whole message). Of each answer only the verdict is decoded (the
//! other fields are skipped on the wire). The requests in flight are a counter, not a
//! semaphore and a channel a message; the sending instants are kept per burst of
//! requests (what the encoder takes together leaves together), one clock read each.
//! Answers come back in request order, so the oldest burst is the next answer's.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use prost::Message;
use prost::bytes::{BufMut, Bytes};
use tact_proto::pb;
use tokio_stream::Stream;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::population::{PROPOSALS, Rng};

/// The requests of a stream, encoded ahead: every customer's id field, and every
/// proposal's other fields at one level of detail.
#[derive(Debug)]
pub struct Encoded {
    ids: Vec<Bytes>,
    tails: Vec<Bytes>,
}

impl Encoded {
    pub fn new(ids: &[String], detail: i32) -> Encoded {
        let ids = ids
            .iter()
            .map(|id| {
                Bytes::from(
                    pb::DecideRequest {
                        customer_id: id.clone(),
                        ..Default::default()
                    }
                    .encode_to_vec(),
                )
            })
            .collect();
        let tails = PROPOSALS
            .iter()
            // An empty id is not encoded: these are the other fields.
            .map(|&(channel, purpose)| {
                Bytes::from(super::proposal(String::new(), channel, purpose, detail).encode_to_vec())
            })
            .collect();
        Encoded { ids, tails }
    }

    /// The next request: the same draws from `rng`, in the same order, as
    /// `Audience::request` makes.
    pub fn request(&self, rng: &mut Rng) -> Wire {
        let proposal = rng.below(self.tails.len() as u64) as usize;
        let customer = rng.below(self.ids.len() as u64) as usize;
        Wire {
            id: self.ids[customer].clone(),
            tail: self.tails[proposal].clone(),
        }
    }
}

/// One encoded `DecideRequest`.
#[derive(Debug, Clone)]
pub struct Wire {
    id: Bytes,
    tail: Bytes,
}

/// Of a `Decision`, the verdict (field 1); prost skips the other fields.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct Verdict {
    #[prost(int32, tag = "1")]
    pub verdict: i32,
}

/// `DecideStream`'s codec for the load: [`Wire`] out, [`Verdict`] in.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadCodec;

impl Codec for LoadCodec {
    type Encode = Wire;
    type Decode = Verdict;
    type Encoder = LoadCodec;
    type Decoder = LoadCodec;

    fn encoder(&mut self) -> Self::Encoder {
        LoadCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        LoadCodec
    }
}

impl Encoder for LoadCodec {
    type Item = Wire;
    type Error = Status;

    fn encode(&mut self, item: Wire, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.id);
        dst.put_slice(&item.tail);
        Ok(())
    }
}

impl Decoder for LoadCodec {
    type Item = Verdict;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Verdict>, Status> {
        Verdict::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode a Decision: {e}")))
    }
}

/// What the sending and the receiving half of a stream share.
#[derive(Debug)]
pub struct Flight {
    state: Mutex<FlightState>,
    /// The most requests in flight.
    limit: usize,
    /// A sender held back at `limit` goes on once this few are in flight: it sends a
    /// burst, not one request per answer.
    resume: usize,
}

#[derive(Debug, Default)]
struct FlightState {
    in_flight: usize,
    /// When each burst of the requests not yet answered was sent, and how many of them
    /// are left, oldest first. The last entry stays (at 0) until a newer one exists.
    sent: VecDeque<(Instant, u32)>,
    /// The sender, when it waits for answers.
    waker: Option<Waker>,
}

impl Flight {
    pub fn new(limit: usize) -> Arc<Flight> {
        let limit = limit.max(1);
        Arc::new(Flight {
            state: Mutex::new(FlightState::default()),
            limit,
            resume: limit - limit.div_ceil(8),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FlightState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An answer came: when its request was sent (`None` if more answers came than
    /// requests were sent, which a server may not do).
    pub fn answered(&self) -> Option<Instant> {
        let mut s = self.state();
        s.in_flight = s.in_flight.checked_sub(1)?;
        while s.sent.front().is_some_and(|(_, left)| *left == 0) && s.sent.len() > 1 {
            s.sent.pop_front();
        }
        let (at, left) = s.sent.front_mut()?;
        *left = left.checked_sub(1)?;
        let at = *at;
        let wake = if s.in_flight <= self.resume {
            s.waker.take()
        } else {
            None
        };
        drop(s);
        if let Some(w) = wake {
            w.wake();
        }
        Some(at)
    }
}

/// The requests of one stream: random proposals, as many as `flight` allows, until
/// `end`.
pub struct Requests {
    flight: Arc<Flight>,
    encoded: Arc<Encoded>,
    rng: Rng,
    end: Instant,
    /// Whether the next request starts a burst (reads the clock).
    fresh: bool,
}

impl Requests {
    pub fn new(flight: Arc<Flight>, encoded: Arc<Encoded>, rng: Rng, end: Instant) -> Requests {
        Requests {
            flight,
            encoded,
            rng,
            end,
            fresh: true,
        }
    }
}

impl Stream for Requests {
    type Item = Wire;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Wire>> {
        let this = self.get_mut();
        let mut s = this.flight.state();
        if s.in_flight >= this.flight.limit {
            s.waker = Some(cx.waker().clone());
            this.fresh = true;
            return Poll::Pending;
        }
        if this.fresh || s.sent.is_empty() {
            let now = Instant::now();
            if now >= this.end {
                // The request stream ends: the server answers what it has.
                return Poll::Ready(None);
            }
            s.sent.push_back((now, 0));
            this.fresh = false;
        }
        s.in_flight += 1;
        if let Some((_, n)) = s.sent.back_mut() {
            *n += 1;
            // A long burst gets a new instant now and then.
            if *n >= 256 {
                this.fresh = true;
            }
        }
        drop(s);
        Poll::Ready(Some(this.encoded.request(&mut this.rng)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Audience;

    /// The two slices are exactly prost's encoding of the whole request, for the same
    /// draws as the typed load makes.
    #[test]
    fn encoded_requests_are_the_typed_requests() {
        let ids: Vec<String> = (0..50).map(crate::bench::population::customer_id).collect();
        let audience = Audience { ids: ids.clone() };
        for detail in [pb::Detail::Full as i32, pb::Detail::Verdict as i32] {
            let encoded = Encoded::new(&ids, detail);
            let (mut a, mut b) = (Rng::new(7), Rng::new(7));
            for _ in 0..200 {
                let typed = audience.request(&mut a, detail).encode_to_vec();
                let wire = encoded.request(&mut b);
                assert_eq!([&wire.id[..], &wire.tail[..]].concat(), typed);
            }
        }
    }

    #[test]
    fn a_verdict_is_read_from_a_whole_decision() {
        let d = pb::Decision {
            verdict: pb::Verdict::Defer as i32,
            decision_id: "d-1".into(),
            customer_id: "c-1".into(),
            reasons: vec![pb::Reason {
                rule_id: "r".into(),
                effect: 1,
                message: "m".into(),
            }],
            ..Default::default()
        };
        let v = Verdict::decode(&d.encode_to_vec()[..]).unwrap();
        assert_eq!(v.verdict, pb::Verdict::Defer as i32);
    }

    /// Answers take the sending instants in order, and the sender is held at the limit
    /// until enough answers came.
    #[test]
    fn the_flight_counts_bursts_and_holds_the_sender() {
        let ids: Vec<String> = (0..5).map(crate::bench::population::customer_id).collect();
        let flight = Flight::new(16);
        let mut requests = Requests::new(
            Arc::clone(&flight),
            Arc::new(Encoded::new(&ids, 0)),
            Rng::new(1),
            Instant::now() + std::time::Duration::from_secs(3600),
        );
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut sent = 0;
        while let Poll::Ready(Some(_)) = Pin::new(&mut requests).poll_next(&mut cx) {
            sent += 1;
        }
        assert_eq!(sent, 16, "held at the limit");
        let first = flight.state().sent.front().copied().unwrap();
        assert_eq!(first.1, 16);
        // One answer does not let the sender go on; enough do (16 - 2 = 14 in flight).
        assert_eq!(flight.answered(), Some(first.0));
        assert!(flight.state().waker.is_some());
        assert_eq!(flight.answered(), Some(first.0));
        assert!(flight.state().waker.is_none(), "woken at the resume mark");
        while let Poll::Ready(Some(_)) = Pin::new(&mut requests).poll_next(&mut cx) {
            sent += 1;
        }
        assert_eq!(sent, 18);
        // A second burst: its answers come after the first burst's 14 left.
        assert_eq!(flight.state().sent.len(), 2);
        for _ in 0..14 {
            assert_eq!(flight.answered(), Some(first.0));
        }
        let second = flight.answered().unwrap();
        assert!(second >= first.0);
        assert_eq!(flight.state().sent.len(), 1);
        assert_eq!(flight.answered(), Some(second));
        assert_eq!(flight.answered(), None, "no request is left in flight");
    }
}
