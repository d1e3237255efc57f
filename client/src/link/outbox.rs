//! The outbox: a bounded queue of requests and responses, drained into batch frames.
//!
//! Senders wait when it is full (backpressure, nothing is dropped). The writer side is a stream
//! of frames for tonic: each time the transport wants the next frame it takes everything queued
//! (up to the maximum frame size) and sends it as one batch, so a busy link sends few large
//! frames and an idle one sends each call at once.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::wire::proto::{self, frame::Body};
use crate::wire::{FRAME_OVERHEAD_BYTES, ITEM_OVERHEAD_BYTES};

/// One item to send.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Request(proto::Envelope),
    Response(proto::Response),
    /// Ends the stream with this status (the acceptor closing a connection).
    Close(tonic::Status),
}

impl Outgoing {
    fn encoded_len(&self) -> usize {
        ITEM_OVERHEAD_BYTES
            + match self {
                Outgoing::Request(envelope) => envelope.encoded_len(),
                Outgoing::Response(response) => response.encoded_len(),
                Outgoing::Close(_) => 0,
            }
    }
}

/// Whether an item of `len` encoded bytes fits in one frame of `max_frame_bytes`.
pub(crate) fn fits(len: usize, max_frame_bytes: usize) -> bool {
    len + ITEM_OVERHEAD_BYTES + FRAME_OVERHEAD_BYTES <= max_frame_bytes
}

/// The writer side of a connection: a stream of frames, the handshake first, then batches. It
/// ends when every sender is gone, the connection is cancelled, or a close status was sent.
pub struct OutboxStream {
    first: Option<proto::Frame>,
    queue: mpsc::Receiver<Outgoing>,
    /// An item that did not fit in the previous frame.
    carry: Option<Outgoing>,
    /// A close that ends the stream after the frame being built.
    closing: Option<tonic::Status>,
    max_frame_bytes: usize,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
}

impl OutboxStream {
    pub(crate) fn new(
        first: proto::Frame,
        queue: mpsc::Receiver<Outgoing>,
        max_frame_bytes: usize,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            first: Some(first),
            queue,
            carry: None,
            closing: None,
            max_frame_bytes,
            cancelled: Box::pin(cancel.cancelled_owned()),
            done: false,
        }
    }

    /// Adds `item` to `batch` if it fits; gives it back if not.
    fn push(&mut self, batch: &mut proto::Batch, size: &mut usize, item: Outgoing) -> bool {
        let len = item.encoded_len();
        let empty = batch.requests.is_empty() && batch.responses.is_empty();
        if !empty && *size + len + FRAME_OVERHEAD_BYTES > self.max_frame_bytes {
            self.carry = Some(item);
            return false;
        }
        *size += len;
        match item {
            Outgoing::Request(envelope) => batch.requests.push(envelope),
            Outgoing::Response(response) => batch.responses.push(response),
            Outgoing::Close(status) => {
                self.closing = Some(status);
                return false;
            }
        }
        true
    }
}

impl Stream for OutboxStream {
    type Item = Result<proto::Frame, tonic::Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        if let Some(status) = this.closing.take() {
            this.done = true;
            return Poll::Ready(Some(Err(status)));
        }
        if std::future::Future::poll(this.cancelled.as_mut(), cx).is_ready() {
            this.done = true;
            return Poll::Ready(None);
        }
        let mut batch = proto::Batch::default();
        let mut size = 0;
        let mut more = match this.carry.take() {
            Some(item) => this.push(&mut batch, &mut size, item),
            None => true,
        };
        while more {
            match this.queue.poll_recv(cx) {
                Poll::Ready(Some(item)) => more = this.push(&mut batch, &mut size, item),
                Poll::Ready(None) => {
                    if batch.requests.is_empty() && batch.responses.is_empty() {
                        this.done = true;
                        return Poll::Ready(this.closing.take().map(Err));
                    }
                    break;
                }
                Poll::Pending => break,
            }
        }
        if batch.requests.is_empty() && batch.responses.is_empty() {
            if let Some(status) = this.closing.take() {
                this.done = true;
                return Poll::Ready(Some(Err(status)));
            }
            return Poll::Pending;
        }
        let frame = proto::Frame {
            body: Some(Body::Batch(batch)),
        };
        Poll::Ready(Some(Ok(frame)))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{FutureExt, StreamExt};

    use super::*;

    fn request(call_id: u64) -> Outgoing {
        Outgoing::Request(proto::Envelope {
            call_id,
            args: vec![1_u8; 100].into(),
            ..Default::default()
        })
    }

    fn hello() -> proto::Frame {
        proto::Frame {
            body: Some(Body::Hello(proto::Hello::default())),
        }
    }

    // Pins batching: everything queued goes out in as few frames as the size limit allows, each
    // under it, in order; then the stream ends when the senders are gone.
    #[test]
    fn drains_the_queue_into_frames_under_the_limit() {
        let (sender, queue) = mpsc::channel(64);
        for id in 0..10 {
            sender.try_send(request(id)).unwrap();
        }
        drop(sender);
        let max = 400;
        let mut stream = OutboxStream::new(hello(), queue, max, CancellationToken::new());
        let first = stream.next().now_or_never().flatten().unwrap().unwrap();
        assert!(matches!(first.body, Some(Body::Hello(_))));
        let mut ids = Vec::new();
        let mut frames = 0;
        while let Some(frame) = stream.next().now_or_never().expect("ready") {
            let frame = frame.unwrap();
            assert!(frame.encoded_len() <= max, "{} bytes", frame.encoded_len());
            let Some(Body::Batch(batch)) = frame.body else {
                panic!("a batch")
            };
            ids.extend(batch.requests.iter().map(|e| e.call_id));
            frames += 1;
        }
        assert_eq!(ids, (0..10).collect::<Vec<_>>());
        assert!((3..10).contains(&frames), "{frames} frames for 10 requests");
    }

    // Pins that a close status is sent after what was queued before it, and ends the stream.
    #[test]
    fn a_close_ends_the_stream_with_its_status() {
        let (sender, queue) = mpsc::channel(8);
        sender.try_send(request(1)).unwrap();
        sender
            .try_send(Outgoing::Close(tonic::Status::aborted("bye")))
            .unwrap();
        let mut stream = OutboxStream::new(hello(), queue, 1 << 20, CancellationToken::new());
        let mut next = || stream.next().now_or_never().expect("ready");
        assert!(next().unwrap().is_ok(), "hello");
        assert!(next().unwrap().is_ok(), "the queued request");
        assert_eq!(next().unwrap().unwrap_err().code(), tonic::Code::Aborted);
        assert!(next().is_none());
    }

    // Pins that an empty outbox waits (pending) rather than sending empty frames, and that
    // cancelling the connection ends the stream.
    #[test]
    fn waits_when_empty_and_ends_when_cancelled() {
        let (_sender, queue) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let mut stream = OutboxStream::new(hello(), queue, 1 << 20, cancel.clone());
        assert!(stream.next().now_or_never().is_some(), "hello");
        assert!(
            stream.next().now_or_never().is_none(),
            "nothing to send: pending"
        );
        cancel.cancel();
        assert!(matches!(stream.next().now_or_never(), Some(None)));
    }
}
