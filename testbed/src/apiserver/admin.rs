//! The admin endpoint: fault injection and accounting over HTTP.
//!
//! | method | path | body |
//! | --- | --- | --- |
//! | POST | `/faults/fail` | [`FailRule`] JSON |
//! | POST | `/faults/latency` | [`LatencyRule`] JSON |
//! | POST | `/faults/drop-watches` | – (now), or `{"everySeconds": P, "durationSeconds": T}` |
//! | POST | `/faults/expire-watches` | [`ExpireRule`] JSON: re-watches get 410 Gone |
//! | POST | `/faults/unavailable` | `{"seconds": T}` |
//! | POST | `/faults/compact` | – |
//! | POST | `/faults/history` | `{"window": N}` |
//! | POST | `/faults/clear` | – |
//! | GET | `/accounting` | – (JSON list of [`super::accounting::Usage`]) |
//! | POST | `/accounting/reset` | – |
//! | GET | `/healthz` | – |

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::faults::{ExpireRule, FailRule, LatencyRule};
use super::http::{ApiState, Body};

fn reply(status: StatusCode, value: Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Serves one admin request.
pub async fn handle(state: Arc<ApiState>, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => return reply(StatusCode::BAD_REQUEST, json!({"error": error.to_string()})),
    };
    let parse = |body: &Bytes| -> Result<Value, Response<Body>> {
        if body.is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_slice(body)
            .map_err(|e| reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})))
    };
    let ok = || reply(StatusCode::OK, json!({"ok": true}));
    match (method, path.as_str()) {
        (Method::GET, "/healthz") => ok(),
        (Method::GET, "/accounting") => reply(StatusCode::OK, json!(state.accounting.snapshot())),
        (Method::POST, "/accounting/reset") => {
            state.accounting.reset();
            ok()
        }
        (Method::POST, "/faults/fail") => match serde_json::from_slice::<FailRule>(&body) {
            Ok(rule) => {
                state.faults.fail(rule);
                ok()
            }
            Err(e) => reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
        },
        (Method::POST, "/faults/latency") => match serde_json::from_slice::<LatencyRule>(&body) {
            Ok(rule) => {
                state.faults.add_latency(rule);
                ok()
            }
            Err(e) => reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
        },
        (Method::POST, "/faults/drop-watches") => match parse(&body) {
            Ok(value) => match (
                value["everySeconds"].as_f64(),
                value["durationSeconds"].as_f64(),
            ) {
                (None, None) => {
                    state.faults.drop_watches();
                    ok()
                }
                (Some(every), Some(duration)) if every > 0.0 && duration >= 0.0 => {
                    state.faults.drop_watches_every(
                        Duration::from_secs_f64(every),
                        Duration::from_secs_f64(duration),
                    );
                    ok()
                }
                _ => reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "everySeconds (> 0) and durationSeconds go together"}),
                ),
            },
            Err(response) => response,
        },
        (Method::POST, "/faults/expire-watches") => {
            match serde_json::from_slice::<ExpireRule>(&body) {
                Ok(rule) => {
                    state.faults.expire_watches(rule);
                    ok()
                }
                Err(e) => reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
            }
        }
        (Method::POST, "/faults/unavailable") => match parse(&body) {
            Ok(value) => match value["seconds"].as_f64() {
                Some(seconds) if seconds >= 0.0 => {
                    state.faults.outage(Duration::from_secs_f64(seconds));
                    ok()
                }
                _ => reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "seconds is required"}),
                ),
            },
            Err(response) => response,
        },
        (Method::POST, "/faults/compact") => {
            state.store.compact();
            ok()
        }
        (Method::POST, "/faults/history") => match parse(&body) {
            Ok(value) => match value["window"].as_u64() {
                Some(window) => {
                    state.store.set_window(window as usize);
                    ok()
                }
                None => reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "window is required"}),
                ),
            },
            Err(response) => response,
        },
        (Method::POST, "/faults/clear") => {
            state.faults.clear();
            ok()
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no admin route {path}")}),
        ),
    }
}
