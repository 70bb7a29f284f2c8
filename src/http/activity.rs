//! What one connection is doing, for its two timeouts: the requests in flight (until the last
//! byte of each response body, so a live event stream always counts), and whether bytes have
//! arrived while none is (a request header on its way).
//!
//! hyper's own `header_read_timeout` starts whenever the connection waits for a request, so it
//! would also close every keep-alive connection idle for longer; wick tells the two apart.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a connection may take over a request header, and stay idle between requests.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub keep_alive: Duration,
}

/// Which timeout closed a connection (the `phase` label of `wick_connections_timed_out_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    Header,
    Idle,
}

impl Expiry {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Expiry::Header => "header",
            Expiry::Idle => "idle",
        }
    }
}

pub(super) struct Activity {
    state: Mutex<State>,
    /// Woken on every change that can bring the deadline closer or remove it.
    changed: Notify,
    timeouts: Timeouts,
}

struct State {
    in_flight: usize,
    /// Since when no request has been in flight (the connection's opening at first).
    idle_since: Instant,
    /// When the first byte arrived while no request was in flight.
    header_since: Option<Instant>,
    served: u64,
}

impl Activity {
    pub(super) fn new(timeouts: Timeouts) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                in_flight: 0,
                idle_since: Instant::now(),
                header_since: None,
                served: 0,
            }),
            changed: Notify::new(),
            timeouts,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few plain fields, consistent after every statement.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes arrived from the client.
    fn received(&self) {
        let mut state = self.state();
        if state.in_flight == 0 && state.header_since.is_none() {
            state.header_since = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// A request was read; it is in flight until the returned guard is dropped.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        let mut state = self.state();
        state.in_flight += 1;
        state.header_since = None;
        state.served += 1;
        InFlight(self.clone())
    }

    /// When the connection must close and why; `None` while a request is in flight.
    fn deadline(&self) -> Option<(Instant, Expiry)> {
        let state = self.state();
        if state.in_flight > 0 {
            return None;
        }
        Some(match state.header_since {
            Some(since) => (since + self.timeouts.header_read, Expiry::Header),
            // A new connection that sends nothing is a client that never starts its header.
            None if state.served == 0 => {
                (state.idle_since + self.timeouts.header_read, Expiry::Header)
            }
            None => (state.idle_since + self.timeouts.keep_alive, Expiry::Idle),
        })
    }

    /// Resolves when a timeout has passed with no request in flight.
    pub(super) async fn expired(&self) -> Expiry {
        loop {
            // `notify_one` stores a wake-up when nobody waits, so none is lost between reading
            // the deadline and waiting.
            let changed = self.changed.notified();
            match self.deadline() {
                None => changed.await,
                Some((at, why)) if at <= Instant::now() => return why,
                Some((at, _)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = changed => {}
                    }
                }
            }
        }
    }
}

/// A request in flight; dropped with the response body, after its last byte.
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
            state.header_since = None;
            drop(state);
            self.0.changed.notify_one();
        }
    }
}

/// A response body that keeps its request in flight until it is done.
pub(super) struct Tracked {
    pub(super) body: Body,
    pub(super) _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The client's socket, telling the connection's activity when bytes arrive.
pub(super) struct Watched {
    pub(super) stream: TcpStream,
    pub(super) activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.received();
        }
        poll
    }
}

impl AsyncWrite for Watched {
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

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header_read: Duration::from_millis(150),
        keep_alive: Duration::from_millis(400),
    };
    /// Timers fire a little late, never early.
    const SLACK: Duration = Duration::from_millis(100);

    fn within(elapsed: Duration, expected: Duration) -> bool {
        elapsed >= expected && elapsed < expected + SLACK
    }

    #[tokio::test]
    async fn a_silent_new_connection_gets_the_header_timeout() {
        let activity = Activity::new(TIMEOUTS);
        let started = Instant::now();
        assert_eq!(activity.expired().await, Expiry::Header);
        assert!(within(started.elapsed(), TIMEOUTS.header_read));
    }

    #[tokio::test]
    async fn requests_in_flight_never_expire_and_idle_follows_the_last_one() {
        let activity = Activity::new(TIMEOUTS);
        let request = activity.begin();
        let waiting = tokio::spawn({
            let activity = activity.clone();
            async move { (activity.expired().await, Instant::now()) }
        });
        tokio::time::sleep(2 * TIMEOUTS.keep_alive).await;
        assert!(!waiting.is_finished());
        let ended = Instant::now();
        drop(request);
        let (why, at) = waiting.await.unwrap();
        assert_eq!(why, Expiry::Idle);
        assert!(within(at - ended, TIMEOUTS.keep_alive), "{:?}", at - ended);
    }

    #[tokio::test]
    async fn a_header_begun_while_idle_gets_the_header_timeout() {
        let activity = Activity::new(TIMEOUTS);
        drop(activity.begin());
        let waiting = tokio::spawn({
            let activity = activity.clone();
            async move { (activity.expired().await, Instant::now()) }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let first_byte = Instant::now();
        activity.received();
        let (why, at) = waiting.await.unwrap();
        assert_eq!(why, Expiry::Header);
        assert!(
            within(at - first_byte, TIMEOUTS.header_read),
            "{:?}",
            at - first_byte
        );
    }
}
