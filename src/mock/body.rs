//! The mock's response body: one buffer, or a sequence of frames written one at a time
//! (SSE events, or a deliberately truncated body that ends in an error so hyper closes the
//! connection).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::stats::Stats;

/// Stats to record once a streamed answer has been produced in full.
pub(crate) struct OnComplete {
    pub stats: Arc<Stats>,
    pub input_tokens: u64,
    /// Including the reasoning tokens.
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
}

pub(crate) enum MockBody {
    Full(Option<Bytes>),
    Frames {
        frames: std::vec::IntoIter<Bytes>,
        /// Content-length to announce (truncated bodies); `None` means chunked.
        declared_len: Option<u64>,
        /// Return `Pending` once before the next frame so hyper flushes each frame separately.
        pause: bool,
        /// After the last frame: fail (close the connection) instead of ending cleanly.
        fail_at_end: bool,
        on_complete: Option<OnComplete>,
    },
}

impl MockBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> MockBody {
        MockBody::Full(Some(bytes.into()))
    }

    /// A stream of frames that ends cleanly, recording `on_complete` at the end.
    pub(crate) fn frames(frames: Vec<Bytes>, on_complete: Option<OnComplete>) -> MockBody {
        MockBody::Frames {
            frames: frames.into_iter(),
            declared_len: None,
            pause: false,
            fail_at_end: false,
            on_complete,
        }
    }

    /// Sends `frames`, then breaks the connection. With `declared_len` the response announces
    /// that content-length (more than is sent).
    pub(crate) fn truncated(frames: Vec<Bytes>, declared_len: Option<u64>) -> MockBody {
        MockBody::Frames {
            frames: frames.into_iter(),
            declared_len,
            pause: false,
            fail_at_end: true,
            on_complete: None,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            MockBody::Full(data) => Poll::Ready(data.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Frames {
                frames,
                pause,
                fail_at_end,
                on_complete,
                ..
            } => {
                if *pause {
                    // Let hyper flush what it has before the next frame.
                    *pause = false;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                if let Some(frame) = frames.next() {
                    *pause = true;
                    // Counted as the last frame goes out, before the client can see it: a
                    // client that stops reading after the last event (and a test that reads
                    // the stats right after) must find the answer counted.
                    if frames.len() == 0
                        && !*fail_at_end
                        && let Some(done) = on_complete.take()
                    {
                        done.stats.record_ok(
                            done.input_tokens,
                            done.output_tokens,
                            done.reasoning_tokens,
                        );
                    }
                    return Poll::Ready(Some(Ok(Frame::data(frame))));
                }
                if *fail_at_end {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "mock: truncated body",
                    ))));
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, MockBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            MockBody::Full(None) => SizeHint::with_exact(0),
            MockBody::Frames {
                declared_len: Some(n),
                ..
            } => SizeHint::with_exact(*n),
            MockBody::Frames { .. } => SizeHint::default(),
        }
    }
}
