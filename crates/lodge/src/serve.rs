//! Serving HTTP/1.1 connections with limits on slow clients (what `axum::serve` lacks).
//!
//! Each connection is in one of three phases, watched by its own task:
//! - **idle** (just accepted, or between kept-alive requests): closed after `idle_timeout`;
//! - **head** (a request's first byte arrived, its headers not yet complete): closed
//!   `header_timeout` after that first byte;
//! - **busy** (a request is being handled): its body must arrive within `body_timeout` of the
//!   headers, else the request is answered `408 Request Timeout` and the connection closed.
//!
//! The connection cap is a semaphore: a connection accepted over it is answered
//! `503 Service Unavailable` with `Retry-After: 1` and closed at once (so clients and load
//! balancers learn at once, rather than waiting in the kernel's backlog).
//!
//! Graceful shutdown: the accept loop stops, every connection is told to finish its request
//! in progress and close (idle ones close at once), and the loop ends once all have closed.
//! These are network timeouts, so they use real time (tokio's), not Lodge's clock.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::config::ConnLimits;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a connection over the cap is told before it is closed: its request is not read, so
/// the body is in both dialects' error shapes at once, `/v1`'s `detail` and `/apiv2`'s
/// `code` and `message` (found by the fault audit: it was plain text, in neither).
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
content-type: application/json\r\ncontent-length: 120\r\nconnection: close\r\n\r\n\
{\"detail\":\"Too many connections: retry in a second.\",\"code\":\"503\",\"message\":\"Too many connections: retry in a second.\"}\n";

/// Serves `app` on `listener` until `shutdown` turns true (or its sender is dropped), then
/// waits for the open connections to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let cap = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(usize::try_from(cap).unwrap_or(usize::MAX)));
    let (stop_conns, conns_stop) = watch::channel(false);
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = wait_true(&mut shutdown) => break,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::error!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let _ = stream.try_write(OVER_CAPACITY);
            drop(stream);
            let now = Instant::now();
            if last_refusal_log.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
                last_refusal_log = Some(now);
                tracing::warn!(max_connections = cap, %remote, "connection cap reached: refusing connections (503)");
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let stop = conns_stop.clone();
        tokio::spawn(async move {
            connection(stream, remote, app, limits, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_conns.send(true);
    // Every connection holds a slot: all slots back means all connections are closed.
    let _ = slots.acquire_many(cap).await;
    Ok(())
}

/// Resolves once the value is `true` or the sender is gone.
async fn wait_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Idle { since: Instant },
    Head { since: Instant },
    Busy { requests: u32 },
}

/// One connection's phase, shared by its reader, its requests and its watchdog.
#[derive(Debug)]
struct ConnState {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl ConnState {
    fn get(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(Phase) -> Phase) {
        let mut p = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        *p = f(*p);
        drop(p);
        self.changed.notify_one();
    }

    /// Bytes arrived: an idle connection starts a request head.
    fn read_some(&self) {
        let mut p = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if let Phase::Idle { .. } = *p {
            *p = Phase::Head {
                since: Instant::now(),
            };
            drop(p);
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        self.update(|p| match p {
            Phase::Busy { requests } => Phase::Busy {
                requests: requests.saturating_add(1),
            },
            _ => Phase::Busy { requests: 1 },
        });
    }

    fn request_ended(&self) {
        self.update(|p| match p {
            Phase::Busy { requests } if requests > 1 => Phase::Busy {
                requests: requests - 1,
            },
            _ => Phase::Idle {
                since: Instant::now(),
            },
        });
    }

    /// When the connection must be closed if its phase does not change.
    fn deadline(&self, limits: &ConnLimits) -> Option<Instant> {
        match self.get() {
            Phase::Idle { since } => Some(since + limits.idle_timeout),
            Phase::Head { since } => Some(since + limits.header_timeout),
            Phase::Busy { .. } => None,
        }
    }
}

async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    app: Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let state = Arc::new(ConnState {
        phase: Mutex::new(Phase::Idle {
            since: Instant::now(),
        }),
        changed: Notify::new(),
    });
    let io = TokioIo::new(WatchedIo {
        inner: stream,
        state: state.clone(),
    });
    let svc_state = state.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        handle(
            req,
            remote,
            app.clone(),
            svc_state.clone(),
            limits.body_timeout,
        )
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The phases above time the headers (hyper's own header timer would also cut idle
    // keep-alive connections at the header limit).
    builder.keep_alive(true).header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let deadline = state.deadline(&limits);
        let expire = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, %remote, "connection ended with an error");
                }
                return;
            }
            () = expire => {
                if state.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    let what = match state.get() {
                        Phase::Head { .. } => "its request headers",
                        _ => "a request",
                    };
                    tracing::debug!(%remote, "closing a connection that did not send {what} in time");
                    return;
                }
            }
            () = state.changed.notified() => {}
            _ = wait_true(&mut stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// One request: its body is timed, its connection's address attached, and the end of its
/// response marks the connection idle again.
async fn handle(
    req: Request<Incoming>,
    remote: SocketAddr,
    app: Router,
    state: Arc<ConnState>,
    body_timeout: Duration,
) -> Result<Response<TrackedBody>, Infallible> {
    state.request_started();
    let timed_out = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let body = TimedBody {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(body_timeout)),
        timed_out: timed_out.clone(),
    };
    let mut req = Request::from_parts(parts, Body::new(body));
    req.extensions_mut().insert(ConnectInfo(remote));
    let resp = match app.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    // The application answers a body that timed out with 408 itself (in the path's dialect,
    // logged as such); this is for a handler that gave up on it another way.
    let resp = if timed_out.load(Ordering::Relaxed) && resp.status() != StatusCode::REQUEST_TIMEOUT
    {
        tracing::debug!(%remote, "a request body did not arrive in time: 408");
        let mut r = Response::new(Body::from(
            "408 Request Timeout: the request body did not arrive in time\n",
        ));
        *r.status_mut() = StatusCode::REQUEST_TIMEOUT;
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    } else {
        resp
    };
    Ok(resp.map(|inner| TrackedBody {
        inner,
        state: Some(state),
    }))
}

/// A request body that fails once its deadline passes (and says so in `timed_out`).
struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(lodge_http::doc::BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that marks its request ended when hyper is done with it.
struct TrackedBody {
    inner: Body,
    state: Option<Arc<ConnState>>,
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        if let Some(s) = self.state.take() {
            s.request_ended();
        }
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, telling its connection's state when bytes arrive.
struct WatchedIo {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.read_some();
        }
        r
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
