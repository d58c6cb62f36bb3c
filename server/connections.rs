//! Connections, below HTTP: how many the service holds (in all, and per
//! client address) and how long one may sit idle or take to send a
//! request's headers. Without these a client that connects and sends
//! nothing, or a header byte now and then, holds a connection (and its
//! memory) for ever.
//!
//! [`GuardedListener`] accepts within the limits and wraps each connection
//! in a [`GuardedStream`], which closes it when a deadline passes while it
//! waits for a request: the idle timeout until a request's first byte, the
//! header timeout from there until its headers are complete. While a request
//! is being answered there is no deadline here (a stalled request body is
//! the XRPC runtime's `BodyTimeout`); after an upgrade to a WebSocket event
//! stream there is none at all (the stream has its own pings and send
//! timeout). [`track_requests`] tells the stream when requests start and
//! end, and when the connection was upgraded.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use axum::serve::{IncomingStream, Listener};
use catbird_generated::runtime::xrpc::XrpcError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// The connection limits and timeouts (`--max-connections`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Most connections at once; more wait in the listen queue.
    pub max_connections: usize,
    /// Most connections from one client address; more are closed at once.
    /// `None`: no limit (behind a reverse proxy every client has its address).
    pub max_per_address: Option<usize>,
    /// How long a connection may wait for a request's first byte (after
    /// connecting, or after its last response).
    pub idle_timeout: Duration,
    /// How long a request's headers may take from their first byte.
    pub header_read_timeout: Duration,
}

/// Open connections per client address.
type AddressCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A TCP listener that holds at most the configured connections, and
/// hands out each as a [`GuardedStream`].
pub struct GuardedListener {
    listener: TcpListener,
    settings: ConnectionSettings,
    permits: Arc<Semaphore>,
    per_address: AddressCounts,
}

impl GuardedListener {
    pub fn new(listener: TcpListener, settings: ConnectionSettings) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(settings.max_connections)),
            settings,
            per_address: Arc::default(),
        }
    }
}

impl Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (GuardedStream, Peer) {
        loop {
            // At the limit, new connections wait in the kernel's queue
            // until one closes (the timeouts make sure one does).
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                unreachable!("the semaphore is never closed");
            };
            let (stream, address) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            };
            let Some(slot) = AddressSlot::take(&self.per_address, address.ip(), self.settings)
            else {
                metrics::counter!("connections_refused_total", "reason" => "per_address")
                    .increment(1);
                tracing::debug!(%address, "connection refused: too many from this address");
                continue;
            };
            let activity = Arc::new(Activity::new());
            let peer = Peer {
                address,
                activity: activity.clone(),
            };
            let stream = GuardedStream {
                inner: stream,
                activity,
                settings: self.settings,
                head_started: None,
                deadline: None,
                sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
                _permit: permit,
                _slot: slot,
            };
            return (stream, peer);
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer {
            address: self.listener.local_addr()?,
            activity: Arc::new(Activity::new()),
        })
    }
}

/// An accept error: a connection that failed before we took it is nothing;
/// anything else (out of file descriptors) is logged and retried in a
/// second, by which time connections may have closed.
async fn accept_failed(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One connection's share of its address's limit, given back on drop.
struct AddressSlot {
    counts: Option<(AddressCounts, IpAddr)>,
}

impl AddressSlot {
    fn take(counts: &AddressCounts, ip: IpAddr, settings: ConnectionSettings) -> Option<Self> {
        let Some(limit) = settings.max_per_address else {
            return Some(Self { counts: None });
        };
        let mut map = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = map.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Self {
            counts: Some((counts.clone(), ip)),
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let Some((counts, ip)) = &self.counts else {
            return;
        };
        let mut map = counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = map.get_mut(ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(ip);
            }
        }
    }
}

/// What one connection is doing, shared by its stream (which enforces the
/// deadlines) and its requests (which say when each starts and ends).
#[derive(Debug)]
struct Activity {
    /// Requests being answered.
    requests: AtomicUsize,
    /// Upgraded to another protocol (a WebSocket event stream).
    upgraded: AtomicBool,
    /// When the connection last became idle: its start, or the end of its
    /// last response.
    idle_since: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            requests: AtomicUsize::new(0),
            upgraded: AtomicBool::new(false),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    fn idle_since(&self) -> Instant {
        *self
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request in progress on a connection; its end (the response body
/// dropped, sent or not) makes the connection idle again.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.requests.fetch_add(1, Ordering::SeqCst);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut idle_since = self
            .0
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *idle_since = Instant::now();
        self.0.requests.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The client of a connection, as the router sees it ([`ConnectInfo`]).
#[derive(Debug, Clone)]
pub struct Peer {
    pub address: SocketAddr,
    activity: Arc<Activity>,
}

impl Connected<IncomingStream<'_, GuardedListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, GuardedListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// The longest request target (path and query) answered with anything
/// but 414. hyper refuses longer than 65,534 bytes itself, before routing
/// and without a body; below that, this limit answers with an XRPC body.
pub const MAX_URI_BYTES: usize = 32 * 1024;

/// The most header bytes (names and values) answered with anything but
/// 431. hyper refuses a head over its read buffer (about 400 KiB) or with
/// more than 100 headers itself, without a body; below that, this limit
/// answers with an XRPC body.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Middleware, outermost: refuses an oversized request target or headers
/// with an XRPC error (414, 431), tells each request's connection when the
/// request starts and ends and whether it upgraded, and gives the rest of
/// the service the peer's address as `ConnectInfo<SocketAddr>`.
pub async fn track_requests(mut request: Request, next: Next) -> Response {
    if let Some(refusal) = oversized(&request) {
        return refusal.into_response();
    }
    let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<Peer>>().cloned() else {
        return next.run(request).await;
    };
    request.extensions_mut().insert(ConnectInfo(peer.address));
    let in_flight = InFlight::start(peer.activity.clone());
    let response = next.run(request).await;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        peer.activity.upgraded.store(true, Ordering::SeqCst);
    }
    response.map(|body| {
        Body::new(TrackedBody {
            body,
            _in_flight: in_flight,
        })
    })
}

/// 414 or 431 for a request target or headers over our limits.
fn oversized(request: &Request) -> Option<XrpcError> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > MAX_URI_BYTES {
        return Some(XrpcError::new(
            StatusCode::URI_TOO_LONG,
            "UriTooLong",
            format!("the request target is longer than {MAX_URI_BYTES} bytes"),
        ));
    }
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers > MAX_HEADER_BYTES {
        return Some(XrpcError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "HeaderFieldsTooLarge",
            format!("the request headers are larger than {MAX_HEADER_BYTES} bytes"),
        ));
    }
    None
}

/// A response body that ends its request when it is dropped.
struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for TrackedBody {
    type Data = <Body as HttpBody>::Data;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection that fails its reads (so hyper closes it) when it waits
/// too long for a request: [`ConnectionSettings::idle_timeout`] before the
/// first byte, [`ConnectionSettings::header_read_timeout`] after it. Holds
/// its share of the connection limits until dropped (also after an
/// upgrade, which takes the stream over).
pub struct GuardedStream {
    inner: TcpStream,
    activity: Arc<Activity>,
    settings: ConnectionSettings,
    /// When the first byte of the next request arrived while idle.
    head_started: Option<Instant>,
    /// The deadline `sleep` is set to.
    deadline: Option<Instant>,
    sleep: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
    _slot: AddressSlot,
}

/// Which deadline passed.
#[derive(Debug, Clone, Copy)]
enum Waiting {
    Idle,
    Headers,
}

impl GuardedStream {
    /// The deadline that applies now, if any.
    fn current_deadline(&mut self) -> Option<(Instant, Waiting)> {
        if self.activity.upgraded.load(Ordering::SeqCst)
            || self.activity.requests.load(Ordering::SeqCst) > 0
        {
            return None;
        }
        let idle_since = self.activity.idle_since();
        // Bytes read before the last request ended belonged to it.
        if self
            .head_started
            .is_some_and(|started| started < idle_since)
        {
            self.head_started = None;
        }
        Some(match self.head_started {
            Some(started) => (
                started + self.settings.header_read_timeout,
                Waiting::Headers,
            ),
            None => (idle_since + self.settings.idle_timeout, Waiting::Idle),
        })
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let idle = this.activity.requests.load(Ordering::SeqCst) == 0;
                if buf.filled().len() > before && idle && this.head_started.is_none() {
                    this.head_started = Some(Instant::now());
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                let Some((deadline, waiting)) = this.current_deadline() else {
                    return Poll::Pending;
                };
                if this.deadline != Some(deadline) {
                    this.sleep.as_mut().reset(deadline);
                    this.deadline = Some(deadline);
                }
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let (what, counter) = match waiting {
                    Waiting::Idle => ("idle for too long", "idle"),
                    Waiting::Headers => ("request headers too slow", "header_read"),
                };
                metrics::counter!("connections_timed_out_total", "reason" => counter).increment(1);
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
