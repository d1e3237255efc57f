//! One live caller-side connection: sends requests through its outbox, reads responses, and
//! fails every waiting call when it ends.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use silica_clocks::{HybridClock, wall_clock_ms};
use silica_grains::{CallError, Payload, PendingCall};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use super::outbox::{Outgoing, fits};
use super::pending::Pending;
use crate::wire::proto::{self, frame::Body};
use crate::wire::{LinkError, WireError, error_from_status, hlc_from_wire};

/// The caller side of one connection.
pub(crate) struct Connection {
    outbox: mpsc::Sender<Outgoing>,
    pending: Pending,
    max_frame_bytes: usize,
    /// Ends the outbox stream (and so the request half of the gRPC stream).
    cancel: CancellationToken,
}

impl Connection {
    pub(crate) fn new(
        outbox: mpsc::Sender<Outgoing>,
        max_frame_bytes: usize,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            outbox,
            pending: Pending::default(),
            max_frame_bytes,
            cancel,
        })
    }

    /// Sends `envelope` (its call id is assigned here) and returns the wait for its response,
    /// at most `timeout`.
    pub(crate) fn call(
        self: &Arc<Self>,
        mut envelope: proto::Envelope,
        timeout: Duration,
    ) -> PendingCall {
        let len = envelope.encoded_len();
        if !fits(len, self.max_frame_bytes) {
            return PendingCall::answered(Err(CallError::rejected(
                silica_grains::RejectCode::TooLarge,
                format!(
                    "a request of {len} bytes does not fit in a frame of at most {} bytes",
                    self.max_frame_bytes
                ),
            )));
        }
        let Some((id, answer)) = self.pending.register() else {
            return PendingCall::answered(Err(closed()));
        };
        envelope.call_id = id;
        let blocked = match self.outbox.try_send(Outgoing::Request(envelope)) {
            Ok(()) => None,
            // Backpressure: the caller waits for room, nothing is dropped.
            Err(TrySendError::Full(item)) => Some(item),
            Err(TrySendError::Closed(_)) => {
                self.pending.forget(id);
                return PendingCall::answered(Err(closed()));
            }
        };
        let connection = self.clone();
        PendingCall::waiting(async move {
            let wait = async {
                if let Some(item) = blocked
                    && connection.outbox.send(item).await.is_err()
                {
                    return Err(closed());
                }
                answer.await.unwrap_or_else(|_| Err(closed()))
            };
            match tokio::time::timeout(timeout, wait).await {
                Ok(result) => result,
                Err(_) => {
                    connection.pending.forget(id);
                    Err(CallError::Timeout(timeout))
                }
            }
        })
    }

    /// Calls waiting for a response now.
    pub(crate) fn waiting(&self) -> usize {
        self.pending.len()
    }

    /// Ends the connection: the outbox stream stops and every waiting call fails.
    pub(crate) fn close(&self, reason: &LinkError) {
        self.cancel.cancel();
        self.pending
            .fail_all(&format!("the link to the silo ended: {reason}"));
    }

    /// Reads responses until the stream ends or breaks; returns why it ended.
    pub(crate) async fn read_responses(
        &self,
        inbound: &mut tonic::Streaming<proto::Frame>,
        clock: &HybridClock,
    ) -> LinkError {
        loop {
            let frame = match inbound.message().await {
                Ok(Some(frame)) => frame,
                Ok(None) => return LinkError::Transport("the peer ended the link".into()),
                Err(status) => return LinkError::from_tonic(&status),
            };
            let Some(Body::Batch(batch)) = frame.body else {
                return LinkError::UnexpectedFrame("a handshake frame after the handshake");
            };
            if !batch.requests.is_empty() {
                return LinkError::UnexpectedFrame("requests from the acceptor");
            }
            for response in batch.responses {
                if let Err(error) = self.deliver(response, clock) {
                    return error.into();
                }
            }
        }
    }

    fn deliver(&self, response: proto::Response, clock: &HybridClock) -> Result<(), WireError> {
        if let Some(hlc) = response.hlc
            && let Err(error) = clock.update(hlc_from_wire(hlc), wall_clock_ms())
        {
            // The answer is kept (the call ran); the timestamp is not adopted.
            tracing::warn!(%error, "response timestamp not merged");
        }
        let result = match response.result {
            None => return Err(WireError::MissingField("response.result")),
            Some(proto::response::Result::Ok(bytes)) => Ok(Payload::from_slice(&bytes)),
            Some(proto::response::Result::Error(status)) => Err(error_from_status(status)?),
        };
        self.pending.answer(response.call_id, result);
        Ok(())
    }
}

fn closed() -> CallError {
    CallError::SiloUnavailable("the link to the silo is closed".into())
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn envelope() -> proto::Envelope {
        proto::Envelope::default()
    }

    // Pins backpressure: with the outbox full a call waits for room (it is neither dropped nor
    // failed), goes out when there is room, and gets its answer by call id.
    #[tokio::test]
    async fn a_full_outbox_makes_callers_wait() {
        let (sender, mut queue) = mpsc::channel(1);
        let connection = Connection::new(sender, 1 << 20, CancellationToken::new());
        let timeout = Duration::from_secs(30);
        let mut first = connection.call(envelope(), timeout);
        let mut second = connection.call(envelope(), timeout);
        assert!((&mut first).now_or_never().is_none());
        assert!((&mut second).now_or_never().is_none(), "waits for room");
        let Some(Outgoing::Request(sent)) = queue.recv().await else {
            panic!("the first request")
        };
        assert_eq!(sent.call_id, 0);
        assert!(
            (&mut second).now_or_never().is_none(),
            "sent now, waiting for its answer"
        );
        let Some(Outgoing::Request(sent)) = queue.recv().await else {
            panic!("the second request")
        };
        assert_eq!(sent.call_id, 1);
        connection
            .pending
            .answer(1, Ok(Payload::from_slice(b"two")));
        assert_eq!(second.await.unwrap().as_slice(), b"two");
        connection.close(&LinkError::Closed);
        assert!(matches!(first.await, Err(CallError::SiloUnavailable(_))));
    }

    // Pins that a call made on a closed connection fails at once, and that a request that cannot
    // fit in a frame is refused before it is queued.
    #[tokio::test]
    async fn closed_connections_and_oversized_requests_fail_at_once() {
        let (sender, _queue) = mpsc::channel(4);
        let connection = Connection::new(sender, 64, CancellationToken::new());
        let big = proto::Envelope {
            args: vec![0_u8; 100].into(),
            ..Default::default()
        };
        let refused = connection.call(big, Duration::from_secs(1)).now_or_never();
        assert!(matches!(
            refused,
            Some(Err(CallError::Rejected {
                code: silica_grains::RejectCode::TooLarge,
                ..
            }))
        ));
        connection.close(&LinkError::Closed);
        let after = connection
            .call(envelope(), Duration::from_secs(1))
            .now_or_never();
        assert!(matches!(after, Some(Err(CallError::SiloUnavailable(_)))));
    }
}
