//! HTTP probes: the kubelet 1.32 HTTP prober as kruise-daemon configures it (§5.3).
//!
//! - URL `<scheme>://<host or pod IP>:<port><path>`, scheme `HTTP` unless `HTTPS`, the port a
//!   number or one of the container's port names;
//! - the probe's headers, plus `User-Agent: kruised/<version> kube-probe` (kruise sends
//!   `kruise-daemon/<version> kube-probe`) and `Accept: */*` unless set; an `Accept` set to
//!   empty removes it; a `Host` header becomes the request's host; `Connection: close`, as the
//!   prober's transport disables keep-alives;
//! - redirects to the same host name are followed, at most 10; a redirect elsewhere is not
//!   followed and counts as success (the kubelet's `Warning`) with the message
//!   `Probe terminated redirects, Response body: <body>`;
//! - 200–399 succeed with the body (at most 10 KiB read) as the message, anything else fails
//!   with `HTTP probe failed with statuscode: <code>`; transport errors fail with Go's
//!   `Get "<url>": <error>`;
//! - HTTPS does not verify the server's certificate (the prober's `InsecureSkipVerify`).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Outcome, ProbeError, go_quote, join_host_port, resolve_port, tcp};

/// The `User-Agent` of HTTP probes that set none.
pub const USER_AGENT: &str = concat!("kruised/", env!("CARGO_PKG_VERSION"), " kube-probe");
/// The most of a response body the prober reads (`maxRespBodyLength`, 10 KiB).
const MAX_BODY_BYTES: usize = 10 * 1024;
/// Go's client gives up after this many redirects.
const MAX_REDIRECTS: usize = 10;

/// Probes `action`, sending it to `pod_ip` unless it names a `host`.
pub async fn probe(
    action: &HTTPGetAction,
    pod_ip: &str,
    ports: &[ContainerPort],
    timeout: Duration,
) -> Result<Outcome, ProbeError> {
    let scheme = action
        .scheme
        .as_deref()
        .filter(|scheme| !scheme.is_empty())
        .unwrap_or("http")
        .to_ascii_lowercase();
    let host = action
        .host
        .as_deref()
        .filter(|host| !host.is_empty())
        .unwrap_or(pod_ip);
    let port = resolve_port(&action.port, ports)?;
    let mut target = action.path.clone().unwrap_or_default();
    if let Some(hash) = target.find('#') {
        target.truncate(hash);
    }
    if !target.starts_with('/') {
        target.insert(0, '/');
    }
    let url = Url {
        scheme,
        authority: join_host_port(host, port),
        host: host.to_owned(),
        port,
        target,
    };
    let headers = Headers::from_action(action);
    let deadline = Instant::now() + timeout;
    Ok(get(url, &headers, deadline).await)
}

/// A URL split as the prober needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    /// Lower-case scheme.
    scheme: String,
    /// `host[:port]` as written.
    authority: String,
    /// The host name without brackets or port.
    host: String,
    /// The port, explicit or the scheme's default.
    port: u16,
    /// Path and query, starting with `/`.
    target: String,
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.target)
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

impl Url {
    /// Splits `authority` into host and port.
    fn with_authority(scheme: String, authority: &str, target: String) -> Result<Self, String> {
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("missing ']' in host {}", go_quote(authority)))?;
            (host.to_owned(), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (authority.to_owned(), None),
            }
        };
        let port = match port.filter(|port| !port.is_empty()) {
            Some(port) => port.parse().map_err(|_| {
                format!("invalid port {} after host", go_quote(&format!(":{port}")))
            })?,
            None => default_port(&scheme),
        };
        let target = if target.is_empty() {
            "/".to_owned()
        } else {
            target
        };
        Ok(Self {
            scheme,
            authority: authority.to_owned(),
            host,
            port,
            target,
        })
    }

    /// Resolves a `Location` header against this URL.
    fn join(&self, location: &str) -> Result<Self, String> {
        let location = location.split('#').next().unwrap_or_default();
        if let Some((scheme, rest)) = location.split_once("://")
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            let split = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, target) = rest.split_at(split);
            return Self::with_authority(
                scheme.to_ascii_lowercase(),
                authority,
                absolute_target(target),
            );
        }
        if let Some(rest) = location.strip_prefix("//") {
            let split = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, target) = rest.split_at(split);
            return Self::with_authority(self.scheme.clone(), authority, absolute_target(target));
        }
        let target = if location.starts_with('/') {
            location.to_owned()
        } else if location.starts_with('?') {
            let path = self.target.split('?').next().unwrap_or("/");
            format!("{path}{location}")
        } else if location.is_empty() {
            self.target.clone()
        } else {
            let path = self.target.split('?').next().unwrap_or("/");
            let directory = &path[..path.rfind('/').map_or(0, |slash| slash + 1)];
            format!("{directory}{location}")
        };
        Ok(Self {
            target: absolute_target(&target),
            ..self.clone()
        })
    }
}

fn absolute_target(target: &str) -> String {
    if target.starts_with('/') {
        target.to_owned()
    } else {
        format!("/{target}")
    }
}

/// The request headers, built once and sent with every request of a probe.
#[derive(Debug, Clone, Default)]
struct Headers {
    /// Name and value pairs, in order.
    fields: Vec<(String, String)>,
    /// The `Host` header's value, if set and not empty.
    host: Option<String>,
}

impl Headers {
    fn from_action(action: &HTTPGetAction) -> Self {
        let mut headers = Self::default();
        let mut user_agent = false;
        let mut accept: Option<bool> = None;
        for header in action.http_headers.iter().flatten() {
            let name = header.name.as_str();
            if name.eq_ignore_ascii_case("host") {
                if headers.host.is_none() && !header.value.is_empty() {
                    headers.host = Some(header.value.clone());
                }
                continue;
            }
            if name.eq_ignore_ascii_case("user-agent") {
                user_agent = true;
                // Go sends no User-Agent at all for one set to empty.
                if header.value.is_empty() {
                    continue;
                }
            }
            if name.eq_ignore_ascii_case("accept") {
                // `headers.Get("Accept") == ""` looks at the first value only.
                accept.get_or_insert(!header.value.is_empty());
            }
            headers
                .fields
                .push((header.name.clone(), header.value.clone()));
        }
        match accept {
            None => headers.fields.push(("Accept".into(), "*/*".into())),
            Some(false) => headers
                .fields
                .retain(|(name, _)| !name.eq_ignore_ascii_case("accept")),
            Some(true) => {}
        }
        if !user_agent {
            headers
                .fields
                .push(("User-Agent".into(), USER_AGENT.into()));
        }
        headers
    }
}

/// The response, as far as the prober reads it.
struct Response {
    status: u16,
    location: Option<String>,
    body: String,
}

/// Go's `client.Get` with the prober's redirect rule, turned into an outcome.
async fn get(first: Url, headers: &Headers, deadline: Instant) -> Outcome {
    let mut url = first.clone();
    let mut redirects = 0;
    loop {
        let failed = |url: &Url, error: &str| {
            Outcome::Failure(format!("Get {}: {error}", go_quote(&url.to_string())))
        };
        // Go keeps a custom Host through a redirect only to a relative location.
        let host = if redirects == 0 {
            headers.host.as_deref()
        } else {
            None
        };
        let response = match tokio::time::timeout_at(deadline, send(&url, headers, host)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return failed(&url, &error),
            Err(_) => {
                return failed(
                    &url,
                    "context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                );
            }
        };
        let follows = matches!(response.status, 301 | 302 | 303 | 307 | 308);
        if let (true, Some(location)) = (follows, response.location.as_deref()) {
            let next = match url.join(location) {
                Ok(next) => next,
                Err(error) => return failed(&url, &error),
            };
            if next.host == first.host {
                if redirects + 1 >= MAX_REDIRECTS {
                    return failed(&next, "stopped after 10 redirects");
                }
                redirects += 1;
                url = next;
                continue;
            }
            // A redirect to another host is not followed: the prober's last response.
        }
        return classify(&response);
    }
}

fn classify(response: &Response) -> Outcome {
    match response.status {
        200..=299 => Outcome::Success(response.body.clone()),
        300..=399 => Outcome::Success(format!(
            "Probe terminated redirects, Response body: {}",
            response.body
        )),
        code => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
    }
}

/// One request on a fresh connection.
async fn send(url: &Url, headers: &Headers, host: Option<&str>) -> Result<Response, String> {
    let tls = match url.scheme.as_str() {
        "http" => false,
        "https" => true,
        other => return Err(format!("unsupported protocol scheme {}", go_quote(other))),
    };
    let mut request = http::Request::get(url.target.as_str());
    for (name, value) in &headers.fields {
        let name = http::HeaderName::try_from(name.as_str())
            .map_err(|_| format!("net/http: invalid header field name {}", go_quote(name)))?;
        let value = http::HeaderValue::try_from(value.as_str()).map_err(|_| {
            format!(
                "net/http: invalid header field value for {}",
                go_quote(name.as_str())
            )
        })?;
        request = request.header(name, value);
    }
    let host_header = host.unwrap_or(&url.authority);
    let request = request
        .header(http::header::HOST, host_header)
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|error| error.to_string())?;

    let address = join_host_port(&url.host, url.port);
    let stream = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|error| tcp::dial_error(&address, &error))?;
    if tls {
        let stream = tls_connect(stream, &url.host).await?;
        exchange(stream, request).await
    } else {
        exchange(stream, request).await
    }
}

/// Sends `request` and reads the head and at most [`MAX_BODY_BYTES`] of the body.
async fn exchange<S>(stream: S, request: http::Request<Empty<Bytes>>) -> Result<Response, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| error.to_string())?;
    // Aborted on return: the connection is not reused (no keep-alive).
    let driver = AbortOnDrop(tokio::spawn(connection));
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get(http::header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while bytes.len() < MAX_BODY_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Some(Err(error)) => return Err(error.to_string()),
            None => break,
        }
    }
    bytes.truncate(MAX_BODY_BYTES);
    drop(driver);
    Ok(Response {
        status,
        location,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A TLS client connection that, like the prober, does not verify the server's certificate.
async fn tls_connect(
    stream: TcpStream,
    host: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        .with_no_client_auth();
    let server_name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|error| error.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, stream)
        .await
        .map_err(|error| error.to_string())
}

/// Go's `InsecureSkipVerify`: any certificate is accepted, but the handshake signatures are
/// still checked against it.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
