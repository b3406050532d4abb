//! What one connection is doing, seen from its socket and its requests: waiting on its client
//! (for a request's headers, for its body, or idle between requests), or having the server
//! work for it (a request being handled, a response or event stream being sent).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::config::ConnectionConfig;

/// One open connection.
pub struct Conn {
    state: Mutex<State>,
    /// Wakes the connection's watchdog when its deadline may have moved.
    pub changed: Notify,
    /// Cancelled to close the connection at once, to make room for another.
    pub evict: CancellationToken,
}

struct State {
    /// Requests handed to the application whose response has not been sent yet.
    in_flight: u32,
    /// Of those, requests whose body is still arriving.
    reading_body: u32,
    /// When the headers of the next request started (the connection opened, or bytes arrived
    /// while no request was in flight).
    head_started: Option<Instant>,
    /// When the connection last changed between waiting on its client and the server working
    /// (with nothing in flight: when the last response ended, or the connection opened).
    since: Instant,
    /// A request body timed out: close once its answer is out, the rest cannot be read.
    doomed: bool,
}

impl Conn {
    pub fn new() -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            state: Mutex::new(State {
                in_flight: 0,
                reading_body: 0,
                head_started: Some(now),
                since: now,
                doomed: false,
            }),
            changed: Notify::new(),
            evict: CancellationToken::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is a few assignments; a panic cannot leave them half done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut State, Instant)) {
        change(&mut self.state(), Instant::now());
        self.changed.notify_one();
    }

    /// When the connection should be closed for waiting too long on its client; `None` while
    /// the server works for it (so event streams and slow handlers are never cut).
    pub fn deadline(&self, limits: &ConnectionConfig) -> Option<Instant> {
        let state = self.state();
        if state.in_flight > 0 {
            return None;
        }
        if state.doomed {
            return Some(state.since);
        }
        Some(match state.head_started {
            Some(started) => started + limits.header_timeout,
            None => state.since + limits.idle_timeout,
        })
    }

    /// Since when the connection has been waiting on its client, if it is: a candidate to
    /// close when the connection limit is reached. `None` while the server works for it.
    pub fn waiting_since(&self) -> Option<Instant> {
        let state = self.state();
        (state.in_flight == state.reading_body).then_some(state.since)
    }

    fn bytes_arrived(&self) {
        let mut state = self.state();
        if state.in_flight == 0 && state.head_started.is_none() {
            state.head_started = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }
}

/// The socket, noting when a request's first bytes arrive.
pub struct WatchedIo {
    stream: TcpStream,
    conn: Arc<Conn>,
}

impl WatchedIo {
    pub fn new(stream: TcpStream, conn: Arc<Conn>) -> Self {
        Self { stream, conn }
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A request from its headers until its response has been sent (or abandoned).
pub struct InFlight(Arc<Conn>);

impl InFlight {
    /// The request whose headers just arrived, and its body, arriving until it has.
    pub fn start(conn: &Arc<Conn>) -> (Self, BodyArriving) {
        conn.update(|state, now| {
            state.in_flight += 1;
            state.reading_body += 1;
            state.head_started = None;
            state.since = now;
        });
        (Self(Arc::clone(conn)), BodyArriving(Arc::clone(conn)))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.update(|state, now| {
            state.in_flight = state.in_flight.saturating_sub(1);
            if state.in_flight == 0 {
                state.since = now;
            }
        });
    }
}

/// A request's body until it has fully arrived (or was given up on).
pub struct BodyArriving(Arc<Conn>);

impl Drop for BodyArriving {
    fn drop(&mut self) {
        self.0.update(|state, now| {
            state.reading_body = state.reading_body.saturating_sub(1);
            if state.in_flight > state.reading_body {
                state.since = now;
            }
        });
    }
}

/// A request body that must arrive within the body timeout of its headers. Past it the body
/// fails with `TimedOut` (the RPC layer answers TIMEOUT) and the connection closes after the
/// answer.
pub struct TimedBody<B> {
    inner: B,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    arriving: Option<BodyArriving>,
    conn: Arc<Conn>,
}

impl<B: Body> TimedBody<B> {
    pub fn new(inner: B, timeout: Duration, arriving: BodyArriving) -> Self {
        let conn = Arc::clone(&arriving.0);
        Self {
            deadline: Instant::now() + timeout,
            timer: None,
            // A request without a body (GET) never waits on its client.
            arriving: (!inner.is_end_stream()).then_some(arriving),
            inner,
            conn,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if frame.is_none() || this.inner.is_end_stream() {
                    this.arriving = None;
                }
                Poll::Ready(frame.map(|frame| frame.map_err(io::Error::other)))
            }
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.arriving = None;
                this.conn.update(|state, now| {
                    state.doomed = true;
                    state.since = now;
                });
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request body did not arrive in time",
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request counted as in flight until it has been sent.
pub struct TrackedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> TrackedBody<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
