//! The two data hops and their wire messages: the only transport code that
//! builds or reads the prost batches and opens the tonic client streams.
//!
//! | hop         | sender      | receiver     | message                    | end-of-data                     |
//! |-------------|-------------|--------------|----------------------------|---------------------------------|
//! | [Fragments] | boardreader | eventbuilder | `FragmentBatch` (fragments) | an EndOfData fragment with the count |
//! | [Events]    | eventbuilder | aggregator  | `EventBatch` (NetMonOutput events) | the `end_of_data` field       |

use crate::net::Channel;
use bytes::Bytes;
use daq_format::fragment::{Fragment, FragmentError};
use daq_format::record::Counters;
use std::future::Future;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Debug, thiserror::Error)]
pub enum HopError {
    #[error("sender rank {rank} does not fit a fragment id")]
    RankOutOfRange { rank: u32 },
    #[error("cannot build the end-of-data fragment: {0}")]
    EndOfDataFragment(#[from] FragmentError),
}

/// One hop of the data path: its wire message, who is at either end, and
/// how its client stream is opened. The outbound and inbound sides are
/// generic over this; items are the serialized fragments or events, as
/// `Bytes`, so neither side copies them.
pub trait Hop: Send + Sync + 'static {
    /// The batch message on the wire.
    type Batch: Send + 'static;
    /// The kind of process that sends on this hop (names sources).
    const SENDER: &'static str;
    /// The kind of process that receives on this hop (names destinations).
    const RECEIVER: &'static str;
    /// What the items are, plural, for messages.
    const ITEMS: &'static str;

    /// A batch of data items from `source` in `run`.
    fn batch(source: u32, run: u32, items: Vec<Bytes>) -> Self::Batch;
    /// The last batch of a stream: the number of items sent on it.
    /// `sequence_id` is where the stream ended, for hops that carry one.
    fn end_of_data(
        source: u32,
        run: u32,
        count: u64,
        sequence_id: u64,
    ) -> Result<Self::Batch, HopError>;
    fn run(batch: &Self::Batch) -> u32;
    fn source(batch: &Self::Batch) -> u32;
    /// The batch's raw items, and its end-of-data count when the hop
    /// carries it outside the items.
    fn into_items(batch: Self::Batch) -> (Vec<Bytes>, Option<u64>);
    /// Adds a sent batch of `items` items and `bytes` bytes to the sender's
    /// counters (the fields this hop's items count in).
    fn count_sent(c: &mut Counters, items: u64, bytes: u64);
    /// Adds one batch handed on by the receiver to its counters.
    fn count_received(c: &mut Counters, items: u64, bytes: u64);
    /// Adds the items of a rejected batch to the receiver's counters:
    /// `malformed` items that could not be decoded, `discarded` well-formed
    /// ones thrown away with them (per reason, in this hop's fields).
    fn count_rejected(c: &mut Counters, malformed: u64, discarded: u64);
    /// A batch from its parts, as a shared-memory link carries them: the
    /// inverse of [`Hop::run`], [`Hop::source`] and [`Hop::into_items`].
    fn from_parts(
        source: u32,
        run: u32,
        items: Vec<Bytes>,
        end_of_data: Option<u64>,
    ) -> Self::Batch;
    /// Offers the receiver behind `channel` a shared-memory link (its
    /// `Attach` call).
    fn attach(
        channel: Channel,
        offer: proto::LinkOffer,
    ) -> impl Future<Output = Result<proto::LinkAccept, tonic::Status>> + Send;
    /// Sends `batches` as one client stream on `channel`; resolves to the
    /// receiver's summary once the stream has ended.
    fn open(
        channel: Channel,
        batches: ReceiverStream<Self::Batch>,
    ) -> impl Future<Output = Result<proto::TransferSummary, tonic::Status>> + Send;
}

/// Boardreader -> eventbuilder: `FragmentSink.Send`.
pub struct Fragments;

impl Hop for Fragments {
    type Batch = proto::FragmentBatch;
    const SENDER: &'static str = "boardreader";
    const RECEIVER: &'static str = "eventbuilder";
    const ITEMS: &'static str = "fragments";

    fn count_sent(c: &mut Counters, fragments: u64, bytes: u64) {
        c.fragments_sent += fragments;
        c.bytes_sent += bytes;
    }

    fn count_received(c: &mut Counters, fragments: u64, bytes: u64) {
        c.fragments_received += fragments;
        c.bytes_received += bytes;
    }

    fn count_rejected(c: &mut Counters, malformed: u64, discarded: u64) {
        c.fragments_rejected += malformed;
        c.fragments_discarded += discarded;
    }

    fn batch(source: u32, run: u32, fragments: Vec<Bytes>) -> Self::Batch {
        proto::FragmentBatch {
            source,
            run,
            fragments,
        }
    }

    fn end_of_data(
        source: u32,
        run: u32,
        count: u64,
        sequence_id: u64,
    ) -> Result<Self::Batch, HopError> {
        let rank = u16::try_from(source).map_err(|_| HopError::RankOutOfRange { rank: source })?;
        let seq = sequence_id.min(daq_format::fragment::MAX_SEQUENCE_ID - 1);
        let eod = Fragment::end_of_data(rank, seq, count)?;
        Ok(Self::batch(source, run, vec![eod.into_bytes()]))
    }

    fn run(batch: &Self::Batch) -> u32 {
        batch.run
    }

    fn source(batch: &Self::Batch) -> u32 {
        batch.source
    }

    /// The end-of-data fragment travels among the items; the receiver's
    /// decoder recognizes it.
    fn into_items(batch: Self::Batch) -> (Vec<Bytes>, Option<u64>) {
        (batch.fragments, None)
    }

    fn from_parts(source: u32, run: u32, fragments: Vec<Bytes>, _: Option<u64>) -> Self::Batch {
        Self::batch(source, run, fragments)
    }

    fn attach(
        channel: Channel,
        offer: proto::LinkOffer,
    ) -> impl Future<Output = Result<proto::LinkAccept, tonic::Status>> + Send {
        let mut client = proto::fragment_sink_client::FragmentSinkClient::new(channel);
        async move { client.attach(offer).await.map(tonic::Response::into_inner) }
    }

    fn open(
        channel: Channel,
        batches: ReceiverStream<Self::Batch>,
    ) -> impl Future<Output = Result<proto::TransferSummary, tonic::Status>> + Send {
        let mut client = proto::fragment_sink_client::FragmentSinkClient::new(channel)
            .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(proto::MAX_MESSAGE_BYTES);
        async move { client.send(batches).await.map(tonic::Response::into_inner) }
    }
}

/// Eventbuilder -> aggregator: `EventSink.Send`.
pub struct Events;

impl Hop for Events {
    type Batch = proto::EventBatch;
    const SENDER: &'static str = "eventbuilder";
    const RECEIVER: &'static str = "aggregator";
    const ITEMS: &'static str = "events";

    fn count_sent(c: &mut Counters, events: u64, bytes: u64) {
        c.events_sent += events;
        c.bytes_sent += bytes;
    }

    fn count_received(c: &mut Counters, events: u64, bytes: u64) {
        c.events_received += events;
        c.bytes_received += bytes;
    }

    fn count_rejected(c: &mut Counters, malformed: u64, discarded: u64) {
        c.events_rejected += malformed;
        c.events_discarded += discarded;
    }

    fn batch(source: u32, run: u32, events: Vec<Bytes>) -> Self::Batch {
        proto::EventBatch {
            source,
            run,
            events,
            end_of_data: None,
        }
    }

    fn end_of_data(
        source: u32,
        run: u32,
        count: u64,
        _sequence_id: u64,
    ) -> Result<Self::Batch, HopError> {
        Ok(proto::EventBatch {
            source,
            run,
            events: vec![],
            end_of_data: Some(count),
        })
    }

    fn run(batch: &Self::Batch) -> u32 {
        batch.run
    }

    fn source(batch: &Self::Batch) -> u32 {
        batch.source
    }

    fn into_items(batch: Self::Batch) -> (Vec<Bytes>, Option<u64>) {
        (batch.events, batch.end_of_data)
    }

    fn from_parts(
        source: u32,
        run: u32,
        events: Vec<Bytes>,
        end_of_data: Option<u64>,
    ) -> Self::Batch {
        proto::EventBatch {
            source,
            run,
            events,
            end_of_data,
        }
    }

    fn attach(
        channel: Channel,
        offer: proto::LinkOffer,
    ) -> impl Future<Output = Result<proto::LinkAccept, tonic::Status>> + Send {
        let mut client = proto::event_sink_client::EventSinkClient::new(channel);
        async move { client.attach(offer).await.map(tonic::Response::into_inner) }
    }

    fn open(
        channel: Channel,
        batches: ReceiverStream<Self::Batch>,
    ) -> impl Future<Output = Result<proto::TransferSummary, tonic::Status>> + Send {
        let mut client = proto::event_sink_client::EventSinkClient::new(channel)
            .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(proto::MAX_MESSAGE_BYTES);
        async move { client.send(batches).await.map(tonic::Response::into_inner) }
    }
}
