//! Listening: the API listener (which can go away for an outage) and the admin listener.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::http::{ApiState, Body, handle};

/// Serves `handler` on `listener` until `shutdown` fires, with each connection dropped
/// when `kill` changes.
async fn serve_connections<H, F>(
    listener: TcpListener,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    kill: watch::Receiver<u64>,
) where
    H: Fn(hyper::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = hyper::Response<Body>> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let handler = handler.clone();
        let mut kill = kill.clone();
        // Only a kill after this connection was accepted ends it.
        kill.borrow_and_update();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = kill.changed() => {}
                _ = shutdown.wait_for(|stop| *stop) => {}
            }
        });
    }
}

/// Runs the API listener on `addr`, honouring outages: during one the socket is closed
/// (clients get "connection refused") and every open connection is cut; afterwards the
/// same address is bound again.
pub async fn run_api(listener: TcpListener, state: Arc<ApiState>, shutdown: watch::Receiver<bool>) {
    let addr: SocketAddr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(_) => return,
    };
    let mut outages = state.faults.outages();
    // An outage requested before this task subscribed must still happen.
    outages.mark_changed();
    let (kill, kill_receiver) = watch::channel(0u64);
    let mut listener = Some(listener);
    loop {
        let current = match listener.take() {
            Some(listener) => listener,
            None => match TcpListener::bind(addr).await {
                Ok(listener) => listener,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let handler = {
            let state = state.clone();
            move |request| handle(state.clone(), request)
        };
        let serving = serve_connections(current, handler, shutdown.clone(), kill_receiver.clone());
        tokio::select! {
            () = serving => return,
            _ = outages.changed() => {
                let until = *outages.borrow_and_update();
                if let Some(until) = until.filter(|u| *u > Instant::now()) {
                    // `serving` (and the listener) is dropped here: the port refuses.
                    kill.send_modify(|epoch| *epoch += 1);
                    tokio::time::sleep_until(until.into()).await;
                }
            }
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Runs the admin listener.
pub async fn run_admin<H, F>(listener: TcpListener, handler: H, shutdown: watch::Receiver<bool>)
where
    H: Fn(hyper::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = hyper::Response<Body>> + Send + 'static,
{
    let (_kill, kill_receiver) = watch::channel(0u64);
    serve_connections(listener, handler, shutdown, kill_receiver).await;
}
