//! TCP probes: open a connection and close it (the kubelet's `DoTCPProbe`, §5.3). Success has
//! no message; a failure carries Go's dial error text.

use std::time::Duration;

use tokio::net::TcpStream;

use super::{Outcome, join_host_port};

/// Connects to `host:port` within `timeout`.
pub async fn probe(host: &str, port: u16, timeout: Duration) -> Outcome {
    let address = join_host_port(host, port);
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(stream)) => {
            drop(stream);
            Outcome::Success(String::new())
        }
        Ok(Err(error)) => Outcome::Failure(dial_error(&address, &error)),
        Err(_) => Outcome::Failure(format!("dial tcp {address}: i/o timeout")),
    }
}

/// Go's `*net.OpError` text for a failed dial: `dial tcp 10.0.0.1:80: connect: connection
/// refused`.
pub fn dial_error(address: &str, error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let reason = match error.kind() {
        ErrorKind::ConnectionRefused => "connect: connection refused".to_owned(),
        ErrorKind::TimedOut => "i/o timeout".to_owned(),
        ErrorKind::HostUnreachable => "connect: no route to host".to_owned(),
        ErrorKind::NetworkUnreachable => "connect: network is unreachable".to_owned(),
        _ => format!("connect: {error}"),
    };
    format!("dial tcp {address}: {reason}")
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn a_listening_port_succeeds_and_a_closed_one_fails_with_gos_text() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(
            probe("127.0.0.1", port, Duration::from_secs(1)).await,
            Outcome::Success(String::new())
        );
        drop(listener);
        assert_eq!(
            probe("127.0.0.1", port, Duration::from_secs(1)).await,
            Outcome::Failure(format!(
                "dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
    }
}
