//! Serving HTTP/1.1 and HTTP/2 connections so that slow or idle clients cannot hold the
//! server: a request's headers must arrive within the header timeout, its body within the body
//! timeout, a kept-alive connection is closed after the idle timeout, and at most
//! `max_connections` are open, the ones waiting longest on their client making room for new
//! ones. None of this touches a connection while the server works for it: a slow handler or
//! a long event stream is never cut. Infrastructure: nothing here knows a route.

mod watch;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service as _;

use self::watch::{Conn, InFlight, TimedBody, TrackedBody, WatchedIo};
use crate::config::ConnectionConfig;

/// Serves `router` on `listener` until `shutdown`; then stops accepting, lets open
/// connections finish their requests, and returns once every connection has closed.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnectionConfig,
    shutdown: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Our own header timeout below; hyper's would also close idle connections at that time.
    builder.http1().header_read_timeout(None);
    let server = Arc::new(Server {
        builder,
        router,
        limits,
        shutdown,
        open: Arc::new(Registry::default()),
    });
    let tasks = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = server.shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                server.accept_failed(&error).await;
                continue;
            }
        };
        // Events must leave at once: with Nagle's algorithm a delta waited ~40 ms for the
        // previous packet's ACK (bench/chat.sh).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        match server.open.admit(server.limits.max_connections) {
            Some(registration) => {
                tasks.spawn(Arc::clone(&server).serve_connection(stream, peer, registration));
            }
            None => {
                tasks.spawn(refuse(stream));
            }
        }
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

struct Server {
    builder: auto::Builder<TokioExecutor>,
    router: axum::Router,
    limits: ConnectionConfig,
    shutdown: CancellationToken,
    open: Arc<Registry>,
}

impl Server {
    async fn serve_connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        registration: Registration,
    ) {
        let conn = Arc::clone(&registration.conn);
        let io = TokioIo::new(WatchedIo::new(stream, Arc::clone(&conn)));
        let service = hyper::service::service_fn(|request| self.respond(request, peer, &conn));
        let connection = self.builder.serve_connection(io, service);
        tokio::pin!(connection);
        let mut draining = false;
        loop {
            let deadline = conn.deadline(&self.limits);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                    return;
                }
                () = conn.changed.notified() => {}
                () = sleep_until(deadline) => {
                    if conn.deadline(&self.limits).is_some_and(|at| at <= tokio::time::Instant::now()) {
                        tracing::debug!(%peer, "closing a connection that kept the server waiting");
                        return;
                    }
                }
                () = conn.evict.cancelled() => {
                    tracing::debug!(%peer, "closing a waiting connection to make room");
                    return;
                }
                () = self.shutdown.cancelled(), if !draining => {
                    connection.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        }
    }

    /// Hands a request to the router, with the client's address (`ConnectInfo`), its body
    /// under the body timeout, and the connection counting it until its response is sent.
    fn respond(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        conn: &Arc<Conn>,
    ) -> impl Future<Output = Result<Response<TrackedBody<axum::body::Body>>, Infallible>> + Send + 'static
    {
        let (in_flight, arriving) = InFlight::start(conn);
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(ConnectInfo(peer));
        let body = TimedBody::new(body, self.limits.body_timeout, arriving);
        let response = self.router.clone().call(Request::from_parts(parts, body));
        async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody::new(body, in_flight)))
        }
    }

    /// Accepting fails per connection (aborted before accepted: nothing to do) or for want of
    /// file descriptors: then the connection waiting longest on its client is closed to free
    /// one, and accepting pauses a moment rather than spin.
    async fn accept_failed(&self, error: &std::io::Error) {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
        if matches!(
            error.kind(),
            ConnectionAborted | ConnectionRefused | ConnectionReset
        ) {
            return;
        }
        tracing::warn!(%error, open = self.open.len(), "could not accept a connection");
        self.open.evict_one();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Full of connections the server works for: answer 503 and close.
async fn refuse(mut stream: TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    tracing::debug!("refused a connection: every connection is busy");
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(BUSY)).await;
}

/// The open connections.
#[derive(Default)]
struct Registry {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Registers a new connection; at the limit, first closes the connection waiting longest
    /// on its client. `None` when every open connection is one the server works for.
    fn admit(self: &Arc<Self>, max: usize) -> Option<Registration> {
        let mut open = self.lock();
        if open.len() >= max && !Self::evict_longest_waiting(&mut open) {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Conn::new();
        open.insert(id, Arc::clone(&conn));
        Some(Registration {
            registry: Arc::clone(self),
            id,
            conn,
        })
    }

    fn evict_one(&self) -> bool {
        Self::evict_longest_waiting(&mut self.lock())
    }

    fn evict_longest_waiting(open: &mut HashMap<u64, Arc<Conn>>) -> bool {
        let longest = open
            .iter()
            .filter_map(|(id, conn)| Some((conn.waiting_since()?, *id)))
            .min()
            .map(|(_, id)| id);
        let Some(conn) = longest.and_then(|id| open.remove(&id)) else {
            return false;
        };
        conn.evict.cancel();
        true
    }
}

/// A connection's place in the registry, given up when its task ends.
struct Registration {
    registry: Arc<Registry>,
    id: u64,
    conn: Arc<Conn>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}
