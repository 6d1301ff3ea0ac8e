//! The codec of tact's gRPC services: protobuf through prost, as `tonic_prost`'s
//! `ProstCodec` does, but decoding each message from one contiguous slice.
//!
//! tonic hands a decoder the message as a `DecodeBuf`, a length-limited view of the
//! connection's `BytesMut`. prost reads it through the `Buf` trait, and for a
//! `DecodeBuf` every varint and every field costs calls that do not inline: about a
//! third of a small `DecideRequest`'s decoding. The message's bytes are contiguous
//! (one `BytesMut`), so they are decoded as a `&[u8]`, whose `Buf` methods inline.
//! The encoder is prost's.

use std::marker::PhantomData;

use prost::Message;
use prost::bytes::Buf;
use tonic::Status;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder};

/// A [`tonic::codec::Codec`] for prost messages (`application/grpc+proto`).
#[derive(Debug, Clone)]
pub struct Codec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec { _pd: PhantomData }
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = SliceDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder { _pd: PhantomData }
    }
}

/// Decodes a `U` from the message's bytes as one slice (see the module).
#[derive(Debug, Clone)]
pub struct SliceDecoder<U> {
    _pd: PhantomData<U>,
}

impl<U: Message + Default> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        decode(buf).map(Some).map_err(|e| Status::internal(e.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// All of `buf`, decoded; from one slice when `buf`'s bytes are contiguous (always, as
/// tonic reads them), else through `Buf`.
fn decode<U: Message + Default>(buf: &mut impl Buf) -> Result<U, prost::DecodeError> {
    let len = buf.remaining();
    let chunk = buf.chunk();
    if chunk.len() < len {
        return U::decode(buf);
    }
    let decoded = U::decode(&chunk[..len]);
    buf.advance(len);
    decoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    fn request() -> pb::DecideRequest {
        pb::DecideRequest {
            customer_id: "customer-1".into(),
            channel: pb::Channel::Email as i32,
            purpose: pb::Purpose::Marketing as i32,
            campaign_id: "spring".into(),
            requested_by: "crm".into(),
            at: Some(pbjson_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            detail: pb::Detail::Verdict as i32,
        }
    }

    #[test]
    fn a_contiguous_message_decodes_as_prost_decodes_it_and_is_consumed() {
        let bytes = request().encode_to_vec();
        let mut buf = &bytes[..];
        let decoded: pb::DecideRequest = decode(&mut buf).unwrap();
        assert_eq!(decoded, request());
        assert!(buf.is_empty());
    }

    #[test]
    fn a_message_in_pieces_decodes_through_buf() {
        let bytes = request().encode_to_vec();
        let (a, b) = bytes.split_at(7);
        let mut buf = a.chain(b);
        let decoded: pb::DecideRequest = decode(&mut buf).unwrap();
        assert_eq!(decoded, request());
        assert_eq!(buf.remaining(), 0);
    }

    #[test]
    fn bad_bytes_are_an_error_not_a_panic() {
        let bytes = request().encode_to_vec();
        for cut in 0..bytes.len() {
            let mut buf = &bytes[..cut];
            let _ = decode::<pb::DecideRequest>(&mut buf);
        }
        let mut buf = &[0xffu8, 0xff, 0xff][..];
        assert!(decode::<pb::DecideRequest>(&mut buf).is_err());
    }
}
