//! The shared-memory mechanism of a hop, for a sender and a receiver on one
//! host: the same batches as a gRPC stream, on a [`daq_shm::link`] ring.
//!
//! Set-up, in `Outbound::connect` when `[transfer] mode` is `auto` or
//! `shm`: the sender creates a link segment (0600, named per partition),
//! offers it to the receiver through the hop's authenticated `Attach` call
//! with its host's boot id and its pid; the receiver refuses a different
//! boot id (another host), maps and checks the segment (it fails where the
//! two do not share `/dev/shm`, as two pods on one node may not) and opens
//! a pidfd on the sender; the sender unlinks the name whatever the answer
//! and opens a pidfd on the receiver. From then on nothing is in
//! `/dev/shm`: the ring lives in the two mappings.
//!
//! Each side watches the other's pidfd from the runtime, and beats once per
//! keep-alive interval in the segment: the death of the other process wakes
//! a sleeping side at once (futex), and a process that stops beating (hung,
//! SIGSTOPped) is given up after the keep-alive timeout, as HTTP/2
//! keep-alive does. So a dead or hung receiver makes the destination lost,
//! and a dead or hung sender ends the source's stream with an error, as a
//! broken gRPC stream does. Routing, batching, the
//! end-of-data count, the summary check and backpressure are the
//! transport's, unchanged: a full ring blocks the sender as a full HTTP/2
//! window does.
//!
//! Received items are `Bytes` that point into the ring (no copy): the ring
//! space of a record is released when the last of its items is dropped.

use super::hop::Hop;
use super::inbound::{Receiver, serve_stream};
use super::links;
use super::outbound::Item;
use crate::net::Channel;
use crate::sources::RunSlot;
use bytes::Bytes;
use daq_shm::link::{LinkError, LinkReader, LinkWaker, LinkWriter, Replier, parse_batch};
use std::hash::BuildHasher;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{info, warn};

/// What a link needs to know of its sender.
pub(crate) struct Offer<'a> {
    pub partition: u32,
    pub sender: &'a str,
    pub receiver: &'a str,
    pub source: u32,
    pub run: u32,
    pub capacity: usize,
}

/// A link the receiver accepted: the ring's writing end and the
/// receiver's pidfd.
pub(crate) struct Offered {
    writer: LinkWriter,
    receiver: OwnedFd,
}

fn nonce() -> u64 {
    // RandomState is seeded from the OS once per process and per call
    // advanced: enough to tell one link from another, not a secret (the
    // segment is 0600 and the offer travels on the authenticated channel).
    std::collections::hash_map::RandomState::new()
        .hash_one((std::process::id(), std::time::Instant::now()))
}

/// Offers a link to the receiver behind `channel`. `Err` says why shared
/// memory cannot be used between the two (the caller falls back to gRPC
/// or refuses, by mode).
pub(crate) async fn offer<H: Hop>(channel: &Channel, o: Offer<'_>) -> Result<Offered, String> {
    let boot_id =
        daq_shm::boot_id().map_err(|e| format!("cannot read this host's boot id: {e}"))?;
    let dir = daq_shm::shm_dir();
    let abandoned = daq_shm::link::remove_abandoned_links(&dir, o.partition);
    if abandoned > 0 {
        warn!(
            dir = %dir.display(),
            abandoned,
            "removed link segments left by dead processes"
        );
    }
    let path = daq_shm::link::link_path_in(&dir, o.partition, o.sender, o.receiver);
    let nonce = nonce();
    let mut writer = LinkWriter::create(&path, o.capacity, nonce).map_err(|e| e.to_string())?;
    let request = proto::LinkOffer {
        path: path.to_string_lossy().into_owned(),
        source: o.source,
        run: o.run,
        boot_id,
        pid: std::process::id(),
        nonce,
    };
    let answer = H::attach(channel.clone(), request).await;
    // Mapped by the receiver or refused: the name goes either way.
    writer.unlink();
    let accept = answer.map_err(|status| status.message().to_string())?;
    if writer.reader_pid() != accept.pid {
        return Err(format!(
            "the segment was mapped by pid {}, the receiver says it is {}",
            writer.reader_pid(),
            accept.pid
        ));
    }
    let receiver = daq_shm::pidfd_open(accept.pid)
        .map_err(|e| format!("cannot watch the receiver (pid {}): {e}", accept.pid))?;
    Ok(Offered { writer, receiver })
}

/// This side's part of a link's liveness, on the runtime: beats every
/// keep-alive interval (a hung process stops beating, and the other side
/// gives it up after the keep-alive timeout, as HTTP/2 keep-alive does),
/// and wakes this side at once when the process behind `pidfd` exits.
/// Aborted when the link ends.
#[allow(unsafe_code)]
fn watch(pidfd: OwnedFd, waker: LinkWaker) -> JoinHandle<()> {
    tokio::spawn(async move {
        // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open
        // and the same for the AsyncFd's whole life, and OwnedFd::as_raw_fd
        // always returns it.
        let Ok(fd) = (unsafe { AsyncFd::register(pidfd) }) else {
            // Not pollable: the other side cannot be watched, so treat it
            // as gone rather than wait on it forever.
            waker.peer_gone();
            return;
        };
        let mut beat = tokio::time::interval(crate::net::keepalive().0);
        loop {
            tokio::select! {
                exited = fd.readable() => {
                    if exited.is_ok() {
                        waker.peer_gone();
                    }
                    return;
                }
                _ = beat.tick() => waker.beat(),
            }
        }
    })
}

fn status(e: LinkError) -> Status {
    match e {
        LinkError::Rejected(why) => Status::invalid_argument(why),
        other => Status::unavailable(other.to_string()),
    }
}

/// What the outbound side queues for a link: the items of a batch, which
/// the link's thread writes into the ring in place, or a whole batch (the
/// end-of-data one).
pub(crate) enum Queued<H: Hop, I> {
    Items(Vec<I>),
    Batch(H::Batch),
}

/// The task that carries one destination's batches over its link; resolves
/// to the receiver's summary, as the gRPC stream's reply does. Runs on its
/// own thread (it sleeps in futex waits), never on the runtime's. Each
/// item is written into the ring by [`Item::write_to`] and dropped once it
/// is there.
pub(crate) fn spawn_sender<H: Hop, I: Item>(
    offered: Offered,
    mut batches: mpsc::Receiver<Queued<H, I>>,
    run: u32,
    source: u32,
) -> JoinHandle<Result<proto::TransferSummary, Status>> {
    let Offered {
        mut writer,
        receiver,
    } = offered;
    writer.set_hung_after(crate::net::keepalive().1);
    let watcher = watch(receiver, writer.waker());
    let (done, result) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(format!("link-to-{}", H::RECEIVER))
        .spawn(move || {
            let outcome = (|| {
                while let Some(queued) = batches.blocking_recv() {
                    match queued {
                        Queued::Items(items) => writer.send_with(
                            run,
                            source,
                            &items,
                            I::len,
                            |item, dst| item.write_to(dst),
                            None,
                        )?,
                        Queued::Batch(batch) => {
                            let (run, source) = (H::run(&batch), H::source(&batch));
                            let (items, end_of_data) = H::into_items(batch);
                            writer.send(run, source, &items, end_of_data)?;
                        }
                    }
                }
                writer.finish();
                writer.wait_reply()
            })();
            let _ = done.send(outcome);
        });
    tokio::spawn(async move {
        if let Err(e) = thread {
            watcher.abort();
            return Err(Status::internal(format!(
                "cannot start the link thread: {e}"
            )));
        }
        let outcome = result.await;
        watcher.abort();
        match outcome {
            Ok(Ok((received, announced))) => Ok(proto::TransferSummary {
                received,
                announced,
            }),
            Ok(Err(e)) => Err(status(e)),
            Err(_) => Err(Status::internal("the link thread panicked")),
        }
    })
}

/// The receiver's side of `Attach`: checks the offer against this run and
/// host, maps the segment and serves it as one inbound stream of the run.
pub async fn accept<R: Receiver>(
    process: &str,
    slot: &RunSlot<R>,
    offer: proto::LinkOffer,
) -> Result<proto::LinkAccept, Status> {
    let sender = format!("{}-{}", <R::Hop as Hop>::SENDER, offer.source);
    let Some(receiver) = slot.get() else {
        return Err(Status::failed_precondition(format!(
            "{process} is not running; link from {sender} refused"
        )));
    };
    if offer.run != receiver.run() {
        return Err(Status::invalid_argument(format!(
            "link for run {} during run {}",
            offer.run,
            receiver.run()
        )));
    }
    let ours = daq_shm::boot_id().map_err(|e| {
        Status::failed_precondition(format!("cannot read this host's boot id: {e}"))
    })?;
    if ours != offer.boot_id {
        return Err(Status::failed_precondition(format!(
            "{sender} runs on another host (boot id {}, here {ours})",
            offer.boot_id
        )));
    }
    let reader = LinkReader::attach(std::path::Path::new(&offer.path), offer.pid, offer.nonce)
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
    let pidfd = daq_shm::pidfd_open(offer.pid).map_err(|e| {
        Status::failed_precondition(format!("cannot watch {sender} (pid {}): {e}", offer.pid))
    })?;
    links::set(&sender, links::Mechanism::Shm);
    info!(process, %sender, "{} arrive through shared memory", <R::Hop as Hop>::ITEMS);
    tokio::spawn(serve_link::<R>(
        process.to_string(),
        receiver,
        reader,
        pidfd,
    ));
    Ok(proto::LinkAccept {
        pid: std::process::id(),
    })
}

/// Reads a link on its own thread into the transport's generic inbound
/// loop, then answers the sender with the loop's summary or rejection.
async fn serve_link<R: Receiver>(
    process: String,
    receiver: Arc<R>,
    mut reader: LinkReader,
    pidfd: OwnedFd,
) {
    reader.set_hung_after(crate::net::keepalive().1);
    let watcher = watch(pidfd, reader.waker());
    // Whatever ends this task (the runtime shutting down with it), the
    // sender is told: a link never waits on a receiver that is gone.
    let replier = AnswerOnDrop(reader.replier());
    let (tx, rx) = mpsc::channel::<Result<<R::Hop as Hop>::Batch, Status>>(4);
    let thread = std::thread::Builder::new()
        .name(format!("link-from-{}", <R::Hop as Hop>::SENDER))
        .spawn(move || {
            loop {
                let next = match reader.next() {
                    Ok(Some(record)) => batch_of::<R::Hop>(record),
                    Ok(None) => return,
                    Err(LinkError::Closed) => return,
                    Err(e) => Err(Status::aborted(e.to_string())),
                };
                let failed = next.is_err();
                if tx.blocking_send(next).is_err() || failed {
                    return;
                }
            }
        });
    if let Err(e) = thread {
        replier.reject(&format!("{process}: cannot start the link thread: {e}"));
        watcher.abort();
        return;
    }
    match serve_stream(
        &process,
        &*receiver,
        ReceiverStream::new(rx),
        links::Mechanism::Shm,
    )
    .await
    {
        Ok(summary) => replier.reply(summary.received, summary.announced),
        Err(status) => replier.reject(status.message()),
    }
    watcher.abort();
}

/// Rejects the stream when dropped before it was answered (the first
/// answer counts; later ones are no-ops).
struct AnswerOnDrop(Replier);

impl std::ops::Deref for AnswerOnDrop {
    type Target = Replier;
    fn deref(&self) -> &Replier {
        &self.0
    }
}

impl Drop for AnswerOnDrop {
    fn drop(&mut self) {
        self.0.reject("the receiver ended the link");
    }
}

/// A record as the hop's batch: its items point into the ring.
fn batch_of<H: Hop>(record: daq_shm::link::Record) -> Result<H::Batch, Status> {
    let view = parse_batch(record.as_ref()).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let all = Bytes::from_owner(record);
    let items = view.items.into_iter().map(|r| all.slice(r)).collect();
    Ok(H::from_parts(
        view.source,
        view.run,
        items,
        view.end_of_data,
    ))
}
