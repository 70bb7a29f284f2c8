//! The accept loop: HTTP/1.1 connections served by hyper under a cap on open connections,
//! each closed when it dawdles over a request header or idles between requests, and a
//! graceful drain on shutdown (stop accepting, let every in-flight response finish).

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

pub use super::activity::Timeouts;
use super::activity::{Activity, Tracked, Watched};
use crate::metrics::Metrics;

/// Pause after an accept error that is not the client's (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the connections of one listener share: their cap, timeouts and metrics.
#[derive(Clone)]
pub struct Connections {
    permits: Arc<Semaphore>,
    timeouts: Timeouts,
    metrics: Arc<Metrics>,
}

impl Connections {
    pub fn new(max: usize, timeouts: Timeouts, metrics: Arc<Metrics>) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            timeouts,
            metrics,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits for
/// every open connection to finish its responses and close.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    connections: Connections,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    // Connection tasks hold a receiver of `closed`; the drain is over when none is left.
    let (closed_tx, closed_rx) = watch::channel(());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_error(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        match connections.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let task = Connection {
                    app: app.clone(),
                    connections: connections.clone(),
                    _permit: permit,
                    stop: stop_rx.clone(),
                    _closed: closed_rx.clone(),
                };
                tokio::spawn(task.run(stream));
            }
            Err(_) => refuse(&stream, &connections.metrics),
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(closed_rx);
    closed_tx.closed().await;
}

/// Client-side failures (a connection reset before it was accepted) are not worth a line; the
/// rest (out of file descriptors) are logged and retried after a pause.
async fn accept_error(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

/// Past the cap: a 503 written at once if the socket takes it (never waited on), then closed.
fn refuse(stream: &TcpStream, metrics: &Metrics) {
    const BODY: &str = r#"{"error":"too many open connections, retry later","type":"overloaded"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(answer.as_bytes());
    metrics.connections.refused_total.inc();
    tracing::debug!("connection refused: --max-connections are open");
}

/// Resolves once the server stops (or is gone).
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// One accepted connection and what it holds until it closes.
struct Connection {
    app: Router,
    connections: Connections,
    _permit: OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
    _closed: watch::Receiver<()>,
}

impl Connection {
    async fn run(mut self, stream: TcpStream) {
        let metrics = self.connections.metrics.clone();
        metrics.connections.open.inc();
        let activity = Activity::new(self.connections.timeouts);
        let io = TokioIo::new(Watched {
            stream,
            activity: activity.clone(),
        });
        let app = self.app.clone();
        let requests = activity.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let in_flight = requests.begin();
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(Body::new)).await?;
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(Tracked {
                        body,
                        _in_flight: in_flight,
                    })
                }))
            }
        });
        // hyper's header timeout would also cut idle keep-alive connections (see `activity`).
        let mut conn = pin!(http1::Builder::new()
            .header_read_timeout(None)
            .serve_connection(io, service));
        let mut expired = pin!(activity.expired());
        let mut draining = false;
        let result = loop {
            tokio::select! {
                result = conn.as_mut() => break result,
                why = &mut expired => {
                    // No request is in flight: nothing is lost by closing the socket now, and a
                    // half-read header would keep a graceful close waiting.
                    metrics.connections.timed_out_total.with_label_values(&[why.as_str()]).inc();
                    break Ok(());
                }
                () = stop_requested(&mut self.stop), if !draining => {
                    // Idle connections close now; busy ones after their response.
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "connection ended with an error");
        }
        metrics.connections.open.dec();
    }
}
