//! The manager's HTTP surface: the agent's `/livez`, `/readyz` and `/healthz` (same
//! handler, same readiness latches), with `/metrics` rendering the manager's registry.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use super::metrics::ManagerMetrics;
use crate::readiness::Readiness;
use crate::server::{self, HttpState};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn respond(
    state: &HttpState,
    metrics: &ManagerMetrics,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if request.uri().path() == "/metrics"
        && (request.method() == http::Method::GET || request.method() == http::Method::HEAD)
    {
        let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
        *response.status_mut() = StatusCode::OK;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(OPENMETRICS),
        );
        return response;
    }
    server::handle(state, request)
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    metrics: Arc<ManagerMetrics>,
    shutdown: impl Future<Output = ()>,
) {
    // The agent's registry is only there to satisfy the shared handler; /metrics never
    // reaches it.
    let state = HttpState {
        metrics: crate::metrics::Metrics::new(),
        readiness,
    };
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "accepting an HTTP connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let state = state.clone();
        let metrics = metrics.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let response = respond(&state, &metrics, &request);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%peer, %error, "HTTP connection ended with an error");
            }
        });
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), graceful.shutdown()).await;
}
