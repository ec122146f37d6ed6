//! The data path's transport, one for both hops (boardreader -> eventbuilder
//! fragments, eventbuilder -> aggregator events): the sending side
//! (`outbound`: destinations, routing, batching, end-of-data, the summary
//! check, lost destinations) and the receiving side (`inbound`: the stream
//! loop around the run's end-of-data handshake), generic over the hop
//! (`hop`: the wire message of each, the only prost types here).
//!
//! A change to batching or flow control is made here, once, for both hops.

pub mod hop;
pub mod inbound;
pub mod outbound;

pub use hop::{Events, Fragments, Hop};
pub use inbound::{Decoded, Intake, Receiver, RunEnded};
pub use outbound::{BlockingOutbound, CountSent, Finished, Outbound, OutboundConfig, SendCounts};

#[cfg(test)]
mod tests;
