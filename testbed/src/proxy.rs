//! A bandwidth-limiting TCP proxy, put between containerd and a registry so that pulls
//! are slow enough to observe progress, timeouts and cancellation.
//!
//! The limit applies to the bytes flowing from the upstream (registry) to clients, shared
//! by all connections, like a slow link. A rate of 0 stalls every transfer: no byte moves
//! until the rate is raised again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};

/// Bytes moved per read; small enough that the limiter is smooth at low rates.
const CHUNK: usize = 16 * 1024;

/// A shared token bucket.
struct Limiter {
    rate: watch::Sender<u64>,
    bucket: Mutex<(f64, Instant)>,
}

impl Limiter {
    /// Waits until `bytes` may pass.
    async fn acquire(&self, bytes: usize) {
        let mut rate_changes = self.rate.subscribe();
        loop {
            let rate = *rate_changes.borrow_and_update();
            if rate == u64::MAX {
                return;
            }
            if rate > 0 {
                let mut bucket = self.bucket.lock().await;
                let now = Instant::now();
                let elapsed = now.duration_since(bucket.1).as_secs_f64();
                // Burst of at most one chunk: keeps the average honest at any rate.
                bucket.0 = (bucket.0 + elapsed * rate as f64).min(CHUNK.max(bytes) as f64);
                bucket.1 = now;
                if bucket.0 >= bytes as f64 {
                    bucket.0 -= bytes as f64;
                    return;
                }
                let missing = bytes as f64 - bucket.0;
                drop(bucket);
                let wait = Duration::from_secs_f64(missing / rate as f64);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = rate_changes.changed() => {}
                }
            } else {
                // Stalled: wait for a new rate.
                if rate_changes.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A running proxy. Dropping it stops accepting; open connections end with their peers.
pub struct Proxy {
    addr: SocketAddr,
    limiter: Arc<Limiter>,
    stop: watch::Sender<bool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Proxy {
    /// Starts a proxy on `listen` to `upstream`, passing `bytes_per_second` downstream
    /// (`u64::MAX`: unlimited).
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        bytes_per_second: u64,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let limiter = Arc::new(Limiter {
            rate: watch::channel(bytes_per_second).0,
            bucket: Mutex::new((0.0, Instant::now())),
        });
        let (stop, mut stopped) = watch::channel(false);
        let accept_limiter = limiter.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stopped.wait_for(|s| *s) => return,
                };
                let Ok((client, _)) = accepted else { continue };
                let limiter = accept_limiter.clone();
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        () = pipe(client, server, limiter) => {}
                        _ = stopped.wait_for(|s| *s) => {}
                    }
                });
            }
        });
        Ok(Self {
            addr,
            limiter,
            stop,
        })
    }

    /// The proxy's address (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the rate; 0 stalls, `u64::MAX` removes the limit.
    pub fn set_rate(&self, bytes_per_second: u64) {
        let _ = self.limiter.rate.send(bytes_per_second);
    }
}

async fn pipe(client: TcpStream, server: TcpStream, limiter: Arc<Limiter>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    };
    let downstream = async {
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let read = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            limiter.acquire(read).await;
            if client_write.write_all(&buffer[..read]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}

/// Tells containerd (through the test environment's `certs.d`) to use plain HTTP for
/// `addr`, so a proxy in front of the plain registry can be pulled from.
pub fn trust_plain_http(certs_dir: &std::path::Path, addr: SocketAddr) -> std::io::Result<()> {
    let dir = certs_dir.join(addr.to_string());
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"http://{addr}\"\n[host.\"http://{addr}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server(payload: usize) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = stream.write_all(&vec![7u8; payload]).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn unlimited_proxy_passes_everything() {
        let upstream = echo_server(100_000).await;
        let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), upstream, u64::MAX)
            .await
            .unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await.unwrap();
        assert_eq!(received.len(), 100_000);
    }

    #[tokio::test]
    async fn zero_rate_stalls_until_raised() {
        let upstream = echo_server(50_000).await;
        let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), upstream, 0)
            .await
            .unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut buffer = [0u8; 1024];
        let stalled =
            tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buffer)).await;
        assert!(stalled.is_err(), "no byte passes at rate 0");
        proxy.set_rate(u64::MAX);
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await.unwrap();
        assert_eq!(received.len(), 50_000);
    }
}
