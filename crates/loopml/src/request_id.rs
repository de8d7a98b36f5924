//! The request-id middleware: every request gets an id (the caller's `x-request-id` when it is
//! usable, else a fresh UUID), which handlers read from the request headers (the inference log
//! and feedback key on it) and which is echoed on the answer; at debug level each request is
//! logged with method, path, status and latency.
//!
//! A plain tower layer rather than `axum::middleware::from_fn`: that one boxes a future and
//! clones the route's service for every request, which showed in the serving profile.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderValue, Method};
use axum::response::Response;

const HEADER: &str = "x-request-id";

/// Adds [`RequestId`] around a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> tower_layer::Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;
    fn layer(&self, inner: S) -> RequestId<S> {
        RequestId { inner }
    }
}

/// The middleware service (see the module docs).
#[derive(Debug, Clone)]
pub struct RequestId<S> {
    inner: S,
}

/// The caller's id when it is a short, visible string; else a fresh one (unique across restarts).
fn request_id(req: &Request) -> Option<HeaderValue> {
    req.headers()
        .get(HEADER)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.to_str().is_ok())
        .cloned()
}

fn fresh_id() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
    let id = uuid::Uuid::new_v4().simple().encode_lower(&mut buf);
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

impl<S> tower_service::Service<Request> for RequestId<S>
where
    S: tower_service::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let id = match request_id(&req) {
            Some(v) => v,
            None => {
                let v = fresh_id();
                req.headers_mut().insert(HEADER, v.clone());
                v
            }
        };
        let debug = tracing::enabled!(tracing::Level::DEBUG).then(|| {
            (
                req.method().clone(),
                req.uri().path().to_owned(),
                Instant::now(),
            )
        });
        RequestIdFuture {
            inner: self.inner.call(req),
            id: Some(id),
            debug,
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of a [`RequestId`] service.
    pub struct RequestIdFuture<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
        debug: Option<(Method, String, Instant)>,
    }
}

impl<F, E> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = match this.inner.poll(cx) {
            Poll::Ready(Ok(r)) => r,
            other => return other,
        };
        let id = this
            .id
            .take()
            .unwrap_or_else(|| HeaderValue::from_static("-"));
        if let Some((method, path, start)) = this.debug.take() {
            let status = resp.status().as_u16();
            let request_id = id.to_str().unwrap_or("-");
            tracing::debug!(request_id, %method, %path, status, micros = start.elapsed().as_micros() as u64, "request");
        }
        resp.headers_mut().insert(HEADER, id);
        Poll::Ready(Ok(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_layer::Layer;
    use tower_service::Service;

    /// Sends `req` through the layer around a handler that answers the id it saw.
    async fn call(req: Request) -> (String, String) {
        let echo = axum::Router::new().fallback(|req: Request| async move {
            req.headers()
                .get(HEADER)
                .map(|v| v.to_str().unwrap_or_default().to_string())
                .unwrap_or_default()
        });
        let resp = RequestIdLayer.layer(echo).call(req).await.unwrap();
        let header = resp.headers()[HEADER].to_str().unwrap().to_string();
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        (header, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn callers_id_is_kept_and_echoed() {
        let req = Request::builder()
            .header(HEADER, "abc-123")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(call(req).await, ("abc-123".into(), "abc-123".into()));
    }

    #[tokio::test]
    async fn a_missing_or_unusable_id_gets_a_fresh_one_seen_by_the_handler() {
        for given in [None, Some(""), Some(&"x".repeat(200)[..])] {
            let mut b = Request::builder();
            if let Some(g) = given {
                b = b.header(HEADER, g);
            }
            let (header, seen) = call(b.body(axum::body::Body::empty()).unwrap()).await;
            assert_eq!(header.len(), 32, "{given:?}: {header}");
            assert!(header.chars().all(|c| c.is_ascii_hexdigit()), "{header}");
            assert_eq!(header, seen, "the handler sees the id the caller gets");
        }
        let (a, _) = call(Request::new(axum::body::Body::empty())).await;
        let (b, _) = call(Request::new(axum::body::Body::empty())).await;
        assert_ne!(a, b, "ids are fresh");
    }
}
