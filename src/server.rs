//! The HTTP surface on `--addr`: `/metrics`, `/livez`, `/readyz` and kruise's `/healthz`.
//!
//! There is deliberately no pprof or other debug endpoint.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// Rendered on `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Decides `/readyz` and `/healthz`.
    pub readiness: Readiness,
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Routes one request.
pub fn handle(state: &HttpState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    route(state, request.method(), request.uri().path())
}

fn route(state: &HttpState, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        );
    }
    match path {
        "/metrics" => {
            let mut response = text(StatusCode::OK, state.metrics.encode());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(OPENMETRICS),
            );
            response
        }
        // The process answers: that is all liveness means. A dead CRI or API server is
        // not fixed by restarting the agent.
        "/livez" => text(StatusCode::OK, "ok".into()),
        "/readyz" => {
            let mut body = String::new();
            for (name, ready) in state.readiness.snapshot() {
                let mark = if ready { '+' } else { '-' };
                body.push_str(&format!(
                    "[{mark}]{name} {}\n",
                    if ready { "ok" } else { "not ready" }
                ));
            }
            if state.readiness.is_ready() {
                body.push_str("readyz check passed\n");
                text(StatusCode::OK, body)
            } else {
                body.push_str("readyz check failed\n");
                text(StatusCode::SERVICE_UNAVAILABLE, body)
            }
        }
        // kruise-daemon's healthz (§7.1): "ok", or 500 naming the first failed check.
        "/healthz" => match state.readiness.pending().first() {
            None => text(StatusCode::OK, "ok".into()),
            Some(name) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("check {name} failed, err: not synced"),
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "404 page not found\n".into()),
    }
}

/// Serves until `shutdown` completes, then lets open connections finish.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: keep serving the connections we have.
                    warn!(%error, "accepting an HTTP connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let state = state.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let response = handle(&state, &request);
            // At debug only: probes hit these paths every few seconds.
            debug!(%peer, method = %request.method(), uri = %request.uri(),
                status = response.status().as_u16(), "HTTP request");
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
    // Probes are short; don't let a stuck scraper hold up shutdown.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), graceful.shutdown()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn state() -> HttpState {
        HttpState {
            metrics: Metrics::new(),
            readiness: Readiness::new(),
        }
    }

    async fn body(response: Response<Full<Bytes>>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn healthz_matches_kruise_until_every_check_passes() {
        let state = state();
        let cri = state.readiness.register("cri");
        let response = route(&state, &Method::GET, "/healthz");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body(response).await, "check cri failed, err: not synced");
        cri.set(true);
        let response = route(&state, &Method::GET, "/healthz");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body(response).await, "ok");
    }

    #[tokio::test]
    async fn readyz_lists_checks_and_livez_always_answers() {
        let state = state();
        let cri = state.readiness.register("cri");
        let response = route(&state, &Method::GET, "/readyz");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(body(response).await.contains("[-]cri not ready"));
        assert_eq!(
            route(&state, &Method::GET, "/livez").status(),
            StatusCode::OK
        );
        cri.set(true);
        let response = route(&state, &Method::GET, "/readyz");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(body(response).await.contains("[+]cri ok"));
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_and_unknown_paths_404() {
        let state = state();
        let response = route(&state, &Method::GET, "/metrics");
        assert_eq!(response.headers()[header::CONTENT_TYPE], OPENMETRICS);
        assert!(body(response).await.ends_with("# EOF\n"));
        assert_eq!(
            route(&state, &Method::GET, "/debug/pprof/").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            route(&state, &Method::POST, "/metrics").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
