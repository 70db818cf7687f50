//! The request body as a handler sees it: the bytes hyper reads, refused once the body timeout
//! has passed or the body grows past the listener's largest body, and holding one of the
//! listener's body slots until it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::{Body as HttpBody, Bytes, Frame, Incoming, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;

use super::{Refusal, Shared};

/// Why reading a request body failed (the error a handler gets from the body, inside
/// whatever its extractor wraps it in: see [`body_refusal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyRefusal {
    /// The body had not arrived within the listener's body timeout.
    #[error("the request body did not arrive within the body timeout")]
    Timeout,
    /// The body is larger than the listener accepts.
    #[error("the request body is larger than this listener accepts")]
    TooLarge,
}

/// The [`BodyRefusal`] behind a body error, if the listener refused the body (it looks
/// through the error's sources, so an extractor's wrapping does not hide it).
pub fn body_refusal(error: &(dyn std::error::Error + 'static)) -> Option<BodyRefusal> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(refusal) = e.downcast_ref::<BodyRefusal>() {
            return Some(*refusal);
        }
        current = e.source();
    }
    None
}

/// hyper's body with the listener's limits.
pub(super) struct LimitedBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    remaining: u64,
    slot: Option<OwnedSemaphorePermit>,
    shared: Arc<Shared>,
    refused: bool,
}

impl LimitedBody {
    /// `inner`, whose headers arrived now, holding `slot` until it ends.
    pub(super) fn new(
        inner: Incoming,
        slot: Option<OwnedSemaphorePermit>,
        shared: Arc<Shared>,
    ) -> LimitedBody {
        LimitedBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(shared.limits.body_timeout)),
            remaining: shared.limits.max_body_bytes,
            slot,
            shared,
            refused: false,
        }
    }

    fn refuse(&mut self, refusal: BodyRefusal) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.refused = true;
        self.slot = None;
        self.shared.counters.count(match refusal {
            BodyRefusal::Timeout => Refusal::BodyTimeout,
            BodyRefusal::TooLarge => Refusal::BodyTooLarge,
        });
        Poll::Ready(Some(Err(Box::new(refusal))))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl HttpBody for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.refused {
            return Poll::Ready(None);
        }
        // The deadline first: a body drip-fed so that a byte is always ready must still end.
        if this.deadline.as_mut().poll(cx).is_ready() {
            return this.refuse(BodyRefusal::Timeout);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if len > this.remaining {
                    return this.refuse(BodyRefusal::TooLarge);
                }
                this.remaining -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.slot = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                this.slot = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.refused || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
