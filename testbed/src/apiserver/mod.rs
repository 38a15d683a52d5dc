//! The Kubernetes API test server: real list/watch semantics over HTTP on loopback, with
//! fault injection and request accounting on a separate admin listener.

// ApiError carries a whole kube Status (message, details, causes); it is built once per
// failed request, so its size on the Err path does not matter.
#![allow(clippy::result_large_err)]

pub mod accounting;
pub mod admin;
pub mod conversion;
pub mod events;
pub mod faults;
pub mod http;
pub mod patch;
pub mod resources;
pub mod schema;
pub mod selectors;
pub mod server;
pub mod status;
pub mod store;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use accounting::{Accounting, Usage};
pub use faults::Faults;
pub use store::Store;

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    /// API address (port 0 for any).
    pub listen: SocketAddr,
    /// Admin address (port 0 for any).
    pub admin_listen: SocketAddr,
    /// Changes of history kept for watches; older resourceVersions get 410 Gone.
    pub history_window: usize,
    /// Bookmark period for watches that allow bookmarks.
    pub bookmark_interval: Duration,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            history_window: 10_000,
            bookmark_interval: Duration::from_secs(60),
        }
    }
}

/// Why the server could not start or load CRDs.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A CRD file could not be read or applied.
    #[error("cannot apply CRD from {path}: {reason}")]
    Crd {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The kubeconfig could not be written.
    #[error("cannot write kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running test API server. Dropping it stops it.
pub struct ApiServer {
    state: Arc<http::ApiState>,
    addr: SocketAddr,
    admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

impl ApiServer {
    /// Starts the server (needs a tokio runtime).
    pub async fn start(config: ApiServerConfig) -> Result<Self, ApiServerError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ApiServerError::Listen { addr, source })
        };
        let listener = bind(config.listen).await?;
        let admin_listener = bind(config.admin_listen).await?;
        let addr = listener
            .local_addr()
            .map_err(|source| ApiServerError::Listen {
                addr: config.listen,
                source,
            })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| ApiServerError::Listen {
                addr: config.admin_listen,
                source,
            })?;
        let state = Arc::new(http::ApiState {
            store: Arc::new(Store::new(config.history_window)),
            faults: Arc::new(Faults::new()),
            accounting: Arc::new(Accounting::default()),
            bookmark_interval: config.bookmark_interval,
        });
        let (shutdown, shutdown_receiver) = watch::channel(false);
        tokio::spawn(server::run_api(
            listener,
            state.clone(),
            shutdown_receiver.clone(),
        ));
        let admin_state = state.clone();
        tokio::spawn(server::run_admin(
            admin_listener,
            move |request| admin::handle(admin_state.clone(), request),
            shutdown_receiver,
        ));
        Ok(Self {
            state,
            addr,
            admin_addr,
            shutdown,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The admin endpoint's URL.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    /// The object store, for direct inspection in tests.
    pub fn store(&self) -> &Arc<Store> {
        &self.state.store
    }

    /// Fault injection.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.state.faults
    }

    /// Request accounting.
    pub fn accounting(&self) -> &Arc<Accounting> {
        &self.state.accounting
    }

    /// A kubeconfig document for this server.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: testbed\n  cluster:\n    server: {}\ncontexts:\n- name: testbed\n  context:\n    cluster: testbed\n    user: testbed\n    namespace: default\ncurrent-context: testbed\nusers:\n- name: testbed\n  user:\n    token: testbed\n",
            self.url()
        )
    }

    /// Writes [`Self::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), ApiServerError> {
        std::fs::write(path, self.kubeconfig()).map_err(|source| ApiServerError::Kubeconfig {
            path: path.display().to_string(),
            source,
        })
    }

    /// A kube-rs client for this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("the server URL is valid"));
        kube::Client::try_from(config).expect("a plain-HTTP client always builds")
    }

    /// Applies every CRD in the YAML files of `dir` (multi-document files allowed).
    /// Returns how many were applied.
    pub fn apply_crds_from_dir(&self, dir: &Path) -> Result<usize, ApiServerError> {
        let error = |path: &Path, reason: String| ApiServerError::Crd {
            path: path.display().to_string(),
            reason,
        };
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| error(dir, e.to_string()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        entries.sort();
        let info = self
            .store()
            .resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .expect("the CRD resource is built in");
        let mut applied = 0;
        for path in entries {
            let text = std::fs::read_to_string(&path).map_err(|e| error(&path, e.to_string()))?;
            for document in serde_yaml::Deserializer::from_str(&text) {
                let value = serde_json::Value::deserialize(document)
                    .map_err(|e| error(&path, e.to_string()))?;
                if value.is_null() {
                    continue;
                }
                self.store()
                    .create(&info, value)
                    .map_err(|e| error(&path, e.message.clone()))?;
                applied += 1;
            }
        }
        Ok(applied)
    }

    /// Stops serving.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}
