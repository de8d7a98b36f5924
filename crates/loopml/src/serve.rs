//! The HTTP server loop: hyper's connection builder with the limits `axum::serve` leaves unset,
//! so a slow client holds nothing for long. A client has [`Limits::header_read`] to send a
//! request's headers (a slowloris connection is closed), and a request body that stalls between
//! two chunks for [`Limits::body_idle`] fails its read (the handler answers 400 and the
//! connection goes). Graceful: once `stop` resolves the listener closes and the connections
//! finish their in-flight requests.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio_util::task::TaskTracker;

/// How long a client may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// To send a request's headers, from the connection's start or the previous answer (so
    /// it also closes idle keep-alive connections, as uvicorn's keep-alive timeout does).
    pub header_read: Duration,
    /// Between two chunks of a request body.
    pub body_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read: Duration::from_secs(30),
            body_idle: Duration::from_secs(60),
        }
    }
}

/// The largest request head (request line and headers) taken, and hyper's read buffer.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves `router` on `listener` until `stop` resolves, then closes the listener and waits
/// for the open connections to finish their requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    // A bug that panics in a handler answers 500 in MLflow's shape (and is logged) instead of
    // dropping the connection without a word.
    let router = router.layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        // Request line and headers over this answer 431 (hyper's default lets ~400 KiB in).
        .max_buf_size(MAX_HEAD_BYTES);
    let graceful = GracefulShutdown::new();
    let connections = TaskTracker::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let stream = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, never spin.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small JSON answers must leave at once: Nagle + delayed ACK costs MLflow ~40 ms a call.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(Service {
            router: router.clone(),
            body_idle: limits.body_idle,
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        connections.spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    connections.close();
    connections.wait().await;
}

/// The answer to a request whose handler panicked.
fn panicked(err: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let what = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("a panic");
    tracing::error!(panic = %what, "a request handler panicked; answered 500");
    axum::response::IntoResponse::into_response((
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        r#"{"error_code":"INTERNAL_ERROR","message":"Internal error: the request could not be completed (the server's log has the details)"}"#,
    ))
}

/// The router with each request's body watched for stalls.
#[derive(Clone)]
struct Service {
    router: Router,
    body_idle: Duration,
}

impl<B> tower_service::Service<Request<B>> for Service
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = axum::routing::future::RouteFuture<std::convert::Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::<Request<Body>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let idle = self.body_idle;
        let req = req.map(|b| Body::new(IdleTimeout::new(b, idle)));
        tower_service::Service::<Request<Body>>::call(&mut self.router, req)
    }
}

pin_project_lite::pin_project! {
    /// A body whose read fails when no chunk comes for `idle`.
    struct IdleTimeout<B> {
        #[pin]
        inner: B,
        idle: Duration,
        sleep: Pin<Box<tokio::time::Sleep>>,
    }
}

impl<B> IdleTimeout<B> {
    fn new(inner: B, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            sleep: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

/// A request body stalled for longer than the limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled for over {0:?}")]
struct Stalled(Duration);

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + *this.idle;
                this.sleep.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Stalled(*this.idle))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    async fn start(limits: Limits) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new()
            .route("/ok", axum::routing::get(|| async { "ok" }))
            .route(
                "/echo",
                axum::routing::post(|body: Bytes| async move { body.len().to_string() }),
            );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let tracker = TaskTracker::new();
        tracker.spawn(serve(listener, router, limits, async {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    fn limits() -> Limits {
        Limits {
            header_read: Duration::from_millis(300),
            body_idle: Duration::from_millis(300),
        }
    }

    /// A client that sends half its headers and stops is disconnected; others are served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_client_is_cut_off_and_others_are_served() {
        let (addr, _stop) = start(limits()).await;
        let slow = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n")
                .expect("write");
            let started = std::time::Instant::now();
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            (started.elapsed(), buf)
        });
        let fast = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .expect("write");
            let mut buf = String::new();
            s.read_to_string(&mut buf).expect("read");
            buf
        });
        assert!(fast.await.expect("fast").ends_with("ok"));
        let (waited, answer) = slow.await.expect("slow");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        // hyper answers 408 or just closes: either way no request was served.
        let text = String::from_utf8_lossy(&answer);
        assert!(!text.contains("200 OK"), "{text}");
    }

    /// A keep-alive connection serves its next request within the limit (an idle one is closed
    /// after it, as uvicorn closes MLflow's after 5 s; clients open a new one).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_keep_alive_connection_stays_usable() {
        let (addr, _stop) = start(limits()).await;
        let answers = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut out = Vec::new();
            for close in [false, true] {
                let extra = if close { "Connection: close\r\n" } else { "" };
                write!(s, "GET /ok HTTP/1.1\r\nHost: x\r\n{extra}\r\n").expect("write");
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).unwrap_or(0);
                out.push(String::from_utf8_lossy(&buf[..n]).to_string());
                std::thread::sleep(Duration::from_millis(100));
            }
            out
        })
        .await
        .expect("join");
        for a in &answers {
            assert!(
                a.starts_with("HTTP/1.1 200") && a.ends_with("ok"),
                "{answers:?}"
            );
        }
    }

    /// A body that stalls mid-way fails; a whole one is read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_body_fails_its_read() {
        let (addr, _stop) = start(limits()).await;
        let answer = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
                .expect("write");
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).to_string()
        })
        .await
        .expect("join");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        let whole = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.write_all(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
            )
            .expect("write");
            let mut buf = String::new();
            s.read_to_string(&mut buf).expect("read");
            buf
        })
        .await
        .expect("join");
        assert!(whole.ends_with("\r\n\r\n3"), "{whole}");
    }
}
