//! gRPC probes: `grpc.health.v1.Health/Check` on the pod IP, plaintext, with the kubelet's
//! `User-Agent` and messages (the kubelet 1.32 gRPC prober; kruise-daemon has none, §11.2).

use std::time::Duration;

use tonic::Code;
use tonic::transport::Endpoint;

use super::{Outcome, go_quote, go_seconds, join_host_port};
use crate::proto::grpc::health::v1::HealthCheckRequest;
use crate::proto::grpc::health::v1::health_check_response::ServingStatus;
use crate::proto::grpc::health::v1::health_client::HealthClient;

/// The `User-Agent` of gRPC probes: the kubelet's `kube-probe/<major>.<minor>` for the
/// Kubernetes 1.32 libraries kruise-daemon is built with.
pub const USER_AGENT: &str = "kube-probe/1.32";

/// Asks `host:port` for the health of `service` ("" is the whole server) within `timeout`.
pub async fn probe(host: &str, port: u16, service: &str, timeout: Duration) -> Outcome {
    let address = join_host_port(host, port);
    match tokio::time::timeout(timeout, check(&address, service, timeout)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failure(format!(
            "timeout: health rpc did not complete within {}",
            go_seconds(timeout)
        )),
    }
}

async fn check(address: &str, service: &str, timeout: Duration) -> Outcome {
    let endpoint = match Endpoint::from_shared(format!("http://{address}"))
        .and_then(|endpoint| endpoint.user_agent(USER_AGENT))
    {
        Ok(endpoint) => endpoint.connect_timeout(timeout).timeout(timeout),
        Err(error) => {
            return Outcome::Failure(format!(
                "error: failed to connect service at {}: {}",
                go_quote(address),
                chain(&error)
            ));
        }
    };
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(error) => {
            return Outcome::Failure(format!(
                "error: failed to connect service at {}: {}",
                go_quote(address),
                chain(&error)
            ));
        }
    };
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    });
    request.set_timeout(timeout);
    match HealthClient::new(channel).check(request).await {
        Ok(response) => {
            let status = response.into_inner().status;
            if status == ServingStatus::Serving as i32 {
                Outcome::Success("service healthy".to_owned())
            } else {
                let name = ServingStatus::try_from(status)
                    .map(|status| status.as_str_name().to_owned())
                    .unwrap_or_else(|_| status.to_string());
                Outcome::Failure(format!(
                    "service unhealthy (responded with {})",
                    go_quote(&name)
                ))
            }
        }
        Err(status) => Outcome::Failure(match status.code() {
            Code::Unimplemented => format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                status.message()
            ),
            Code::DeadlineExceeded => format!(
                "timeout: health rpc did not complete within {}",
                go_seconds(timeout)
            ),
            code => format!(
                "error: health rpc probe failed: rpc error: code = {} desc = {}",
                go_code(code),
                status.message()
            ),
        }),
    }
}

/// grpc-go's name of a code (`codes.Code.String()`).
fn go_code(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// An error and its sources, `: `-joined.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;

    use super::*;
    use crate::proto::grpc::health::v1::HealthCheckResponse;
    use crate::proto::grpc::health::v1::health_server::{Health, HealthServer};

    /// A health server whose answer the test sets; records each request's service and
    /// user agent.
    #[derive(Clone, Default)]
    struct Server {
        answer: Arc<Mutex<Option<ServingStatus>>>,
        seen: Arc<Mutex<Vec<(String, String)>>>,
    }

    #[tonic::async_trait]
    impl Health for Server {
        async fn check(
            &self,
            request: tonic::Request<HealthCheckRequest>,
        ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
            let agent = request
                .metadata()
                .get("user-agent")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            self.seen
                .lock()
                .unwrap()
                .push((request.get_ref().service.clone(), agent));
            match *self.answer.lock().unwrap() {
                Some(status) => Ok(tonic::Response::new(HealthCheckResponse {
                    status: status as i32,
                })),
                None => Err(tonic::Status::not_found("unknown service")),
            }
        }
    }

    async fn serve(server: Server) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(HealthServer::new(server))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        port
    }

    #[tokio::test]
    async fn serving_succeeds_and_other_answers_fail_with_the_kubelets_texts() {
        let server = Server::default();
        let port = serve(server.clone()).await;
        let second = Duration::from_secs(1);

        *server.answer.lock().unwrap() = Some(ServingStatus::Serving);
        assert_eq!(
            probe("127.0.0.1", port, "", second).await,
            Outcome::Success("service healthy".into())
        );
        *server.answer.lock().unwrap() = Some(ServingStatus::NotServing);
        assert_eq!(
            probe("127.0.0.1", port, "db", second).await,
            Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        *server.answer.lock().unwrap() = None;
        assert_eq!(
            probe("127.0.0.1", port, "nope", second).await,
            Outcome::Failure(
                "error: health rpc probe failed: rpc error: code = NotFound desc = unknown service"
                    .into()
            )
        );
        let seen = server.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[1].0, "db");
        assert!(seen[0].1.starts_with(USER_AGENT), "{:?}", seen[0].1);
    }

    #[tokio::test]
    async fn a_server_without_the_health_service_is_reported_as_such() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // A gRPC server with no services answers every method Unimplemented.
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_routes(tonic::service::Routes::default())
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let outcome = probe("127.0.0.1", port, "", Duration::from_secs(1)).await;
        let Outcome::Failure(message) = outcome else {
            panic!("{outcome:?}")
        };
        assert!(
            message.starts_with("error: this server does not implement the grpc health protocol (grpc.health.v1.Health)"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn nothing_listening_fails_to_connect() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let outcome = probe("127.0.0.1", port, "", Duration::from_secs(1)).await;
        let Outcome::Failure(message) = outcome else {
            panic!("{outcome:?}")
        };
        assert!(
            message.starts_with(&format!(
                "error: failed to connect service at \"127.0.0.1:{port}\": "
            )),
            "{message}"
        );
    }
}
