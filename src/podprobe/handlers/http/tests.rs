//! The HTTP prober against small servers in the test process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::HTTPHeader;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A server answering each path with a fixed response; records every request head.
#[derive(Clone, Default)]
struct Server {
    routes: Arc<Mutex<HashMap<String, String>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn route(&self, path: &str, status: &str, extra_headers: &str, body: &str) {
        let response = format!(
            "HTTP/1.1 {status}\r\n{extra_headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        self.routes
            .lock()
            .unwrap()
            .insert(path.to_owned(), response);
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    async fn answer<S: AsyncRead + AsyncWrite + Unpin>(&self, mut stream: S) {
        let mut head = Vec::new();
        let mut buffer = [0u8; 1024];
        while !head.windows(4).any(|window| window == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => head.extend_from_slice(&buffer[..read]),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let target = head.split(' ').nth(1).unwrap_or("/").to_owned();
        self.requests.lock().unwrap().push(head);
        let response = self
            .routes
            .lock()
            .unwrap()
            .get(&target)
            .cloned()
            .unwrap_or_else(|| "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into());
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    async fn serve(&self) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move { server.answer(stream).await });
            }
        });
        port
    }

    async fn serve_tls(&self) -> u16 {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(include_bytes!("../testdata/cert.pem"))
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(include_bytes!("../testdata/key.pem")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        server.answer(stream).await;
                    }
                });
            }
        });
        port
    }
}

fn action(port: u16, path: &str) -> HTTPGetAction {
    HTTPGetAction {
        port: IntOrString::Int(i32::from(port)),
        path: Some(path.to_owned()),
        ..HTTPGetAction::default()
    }
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn success_carries_the_body_and_failure_the_status_code() {
    let server = Server::default();
    server.route("/healthz", "200 OK", "", "all good");
    server.route("/broken", "503 Service Unavailable", "", "secret details");
    let port = server.serve().await;
    assert_eq!(
        probe(&action(port, "/healthz"), "127.0.0.1", &[], SECOND)
            .await
            .unwrap(),
        Outcome::Success("all good".into())
    );
    assert_eq!(
        probe(&action(port, "/broken"), "127.0.0.1", &[], SECOND)
            .await
            .unwrap(),
        Outcome::Failure("HTTP probe failed with statuscode: 503".into()),
        "the body is not in the failure message (kubernetes#99425)"
    );
}

#[tokio::test]
async fn default_headers_and_the_probes_own() {
    let server = Server::default();
    server.route("/h?x=1", "200 OK", "", "");
    let port = server.serve().await;
    probe(&action(port, "h?x=1"), "127.0.0.1", &[], SECOND)
        .await
        .unwrap();
    let head = server.requests().pop().unwrap();
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("GET /h?x=1 HTTP/1.1\r\n"), "{head}");
    assert!(
        lower.contains(&format!(
            "user-agent: {}\r\n",
            USER_AGENT.to_ascii_lowercase()
        )),
        "{head}"
    );
    assert!(lower.contains("accept: */*\r\n"), "{head}");
    assert!(
        lower.contains(&format!("host: 127.0.0.1:{port}\r\n")),
        "{head}"
    );
    assert!(lower.contains("connection: close\r\n"), "{head}");

    let mut custom = action(port, "/h?x=1");
    custom.http_headers = Some(vec![
        HTTPHeader {
            name: "user-agent".into(),
            value: "mine".into(),
        },
        HTTPHeader {
            name: "Accept".into(),
            value: String::new(),
        },
        HTTPHeader {
            name: "Host".into(),
            value: "example.test".into(),
        },
        HTTPHeader {
            name: "X-Probe".into(),
            value: "1".into(),
        },
    ]);
    probe(&custom, "127.0.0.1", &[], SECOND).await.unwrap();
    let head = server.requests().pop().unwrap().to_ascii_lowercase();
    assert!(head.contains("user-agent: mine\r\n"), "{head}");
    assert!(
        !head.contains("accept:"),
        "an empty Accept removes it: {head}"
    );
    assert!(head.contains("host: example.test\r\n"), "{head}");
    assert!(head.contains("x-probe: 1\r\n"), "{head}");
}

#[tokio::test]
async fn same_host_redirects_are_followed_and_others_are_a_warning() {
    let server = Server::default();
    let port = server.serve().await;
    server.route("/start", "302 Found", "Location: /next\r\n", "");
    server.route("/next", "200 OK", "", "arrived");
    server.route(
        "/away",
        "301 Moved Permanently",
        "Location: http://other.invalid/x\r\n",
        "moved",
    );
    server.route("/loop", "302 Found", "Location: /loop\r\n", "");
    assert_eq!(
        probe(&action(port, "/start"), "127.0.0.1", &[], SECOND)
            .await
            .unwrap(),
        Outcome::Success("arrived".into())
    );
    assert_eq!(
        probe(&action(port, "/away"), "127.0.0.1", &[], SECOND)
            .await
            .unwrap(),
        Outcome::Success("Probe terminated redirects, Response body: moved".into())
    );
    let before = server.requests().len();
    assert_eq!(
        probe(&action(port, "/loop"), "127.0.0.1", &[], SECOND)
            .await
            .unwrap(),
        Outcome::Failure(format!(
            "Get \"http://127.0.0.1:{port}/loop\": stopped after 10 redirects"
        ))
    );
    assert_eq!(
        server.requests().len() - before,
        10,
        "Go sends ten requests"
    );
}

#[tokio::test]
async fn named_ports_and_transport_errors() {
    let server = Server::default();
    server.route("/", "200 OK", "", "named");
    let port = server.serve().await;
    let ports: Vec<ContainerPort> = serde_json::from_value(serde_json::json!([
        {"name": "web", "containerPort": port}
    ]))
    .unwrap();
    let mut named = action(port, "");
    named.port = IntOrString::String("web".into());
    assert_eq!(
        probe(&named, "127.0.0.1", &ports, SECOND).await.unwrap(),
        Outcome::Success("named".into())
    );
    assert!(matches!(
        probe(&named, "127.0.0.1", &[], SECOND).await,
        Err(ProbeError::InvalidPort(_))
    ));

    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    assert_eq!(
        probe(&action(closed_port, "/"), "127.0.0.1", &[], SECOND)
            .await
            .unwrap(),
        Outcome::Failure(format!(
            "Get \"http://127.0.0.1:{closed_port}/\": dial tcp 127.0.0.1:{closed_port}: connect: connection refused"
        ))
    );

    // Accepts, never answers: the probe times out.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let outcome = probe(&action(silent_port, "/"), "127.0.0.1", &[], SECOND)
        .await
        .unwrap();
    drop(silent);
    assert_eq!(
        outcome,
        Outcome::Failure(format!(
            "Get \"http://127.0.0.1:{silent_port}/\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        ))
    );
}

#[tokio::test]
async fn https_does_not_verify_the_certificate() {
    let server = Server::default();
    server.route("/secure", "200 OK", "", "tls ok");
    let port = server.serve_tls().await;
    let mut secure = action(port, "/secure");
    secure.scheme = Some("HTTPS".into());
    assert_eq!(
        probe(&secure, "127.0.0.1", &[], SECOND).await.unwrap(),
        Outcome::Success("tls ok".into())
    );
}

#[test]
fn locations_resolve_like_gos_url_package() {
    let base = Url::with_authority("http".into(), "10.0.0.1:8080", "/a/b?q=1".into()).unwrap();
    let join = |location: &str| base.join(location).unwrap().to_string();
    assert_eq!(join("/c"), "http://10.0.0.1:8080/c");
    assert_eq!(join("c"), "http://10.0.0.1:8080/a/c");
    assert_eq!(join("?z=2"), "http://10.0.0.1:8080/a/b?z=2");
    assert_eq!(
        join("https://example.test/x#frag"),
        "https://example.test/x"
    );
    assert_eq!(join("//other:9/y"), "http://other:9/y");
    let other = base.join("https://example.test").unwrap();
    assert_eq!((other.host.as_str(), other.port), ("example.test", 443));
    let ipv6 = base.join("http://[::1]:81/").unwrap();
    assert_eq!((ipv6.host.as_str(), ipv6.port), ("::1", 81));
}
