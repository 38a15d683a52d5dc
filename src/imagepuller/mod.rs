//! Image pre-pull: the NodeImage agent (§3.5, §3.6, §11.1 items 3–5).
//!
//! - [`view`] decodes this node's NodeImage in either served version.
//! - [`worker`] runs one tag's pull with kruise's policy.
//! - [`pulls`] caps concurrent CRI pulls and de-duplicates identical ones.
//! - [`progress`] computes real byte progress from containerd's content store.
//! - [`status`] computes the whole status from what the workers know.
//! - [`writer`] decides when a status is written and writes it.
//! - [`controller`] watches the NodeImage, starts and stops workers, and hands the
//!   computed status to the writer.

pub mod controller;
pub mod credentials;
pub mod progress;
pub mod pulls;
pub mod status;
pub mod view;
pub mod worker;
pub mod writer;

use std::sync::Arc;

use crate::apiversions::KruiseVersion;
use crate::cri::RuntimeSet;
use crate::events::Recorder;
use crate::metrics::Metrics;

/// Wires a puller for this node on the primary runtime (§2.2: pulls use the first
/// runtime found). Progress comes from the content store when the runtime is containerd.
pub fn build(
    client: kube::Client,
    node_name: &str,
    version: KruiseVersion,
    runtimes: &RuntimeSet,
    max_concurrent_pulls: usize,
    metrics: Arc<Metrics>,
    plugins: crate::credentials::plugin::CredentialPlugins,
) -> controller::Puller {
    let runtime = runtimes.primary().clone();
    let progress = (runtime.info().name == "containerd")
        .then(|| progress::ProgressSource::new(runtime.channel()));
    let pulls = Arc::new(pulls::Pulls::new(
        runtime,
        max_concurrent_pulls,
        metrics.image_pull.clone(),
        progress,
    ));
    let recorder = Arc::new(Recorder::new(
        client.clone(),
        "kruise-daemon-imagepuller",
        node_name,
    ));
    let credentials = credentials::resolver_factory(
        Arc::new(credentials::SecretSource::new(client.clone())),
        crate::credentials::Credentials::new(plugins),
    );
    controller::Puller::new(
        client,
        controller::PullerConfig::new(node_name, version),
        pulls,
        credentials,
        recorder,
        metrics.image_pull.clone(),
    )
}
