//! The data path's transport, one for both hops (boardreader -> eventbuilder
//! fragments, eventbuilder -> aggregator events): the sending side
//! (`outbound`: destinations, routing, batching, end-of-data, the summary
//! check, lost destinations) and the receiving side (`inbound`: the stream
//! loop around the run's end-of-data handshake), generic over the hop
//! (`hop`: the wire message of each, the only prost types here).
//!
//! Two mechanisms carry the batches (`[transfer] mode`): a gRPC client
//! stream, and between processes of one host a shared-memory link (`shm`:
//! a ring with futex wake-ups and pidfd liveness). Both feed the same
//! outbound and inbound code; `links` records which one each link uses.
//!
//! A change to batching or flow control is made here, once, for both hops
//! and both mechanisms.

pub mod hop;
pub mod inbound;
pub mod links;
pub mod outbound;
pub mod shm;

pub use hop::{Events, Fragments, Hop};
pub use inbound::{Decoded, Intake, Receiver, RunEnded};
pub use outbound::{
    BlockingOutbound, CountSent, Finished, Item, Outbound, OutboundConfig, SendCounts,
};

#[cfg(test)]
mod tests;
