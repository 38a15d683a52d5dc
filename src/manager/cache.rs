//! One watch per kind, shared: a reflector keeps a [`Store`] for lookups and fans every
//! touched object out to any number of controllers as their trigger streams.

use std::fmt::Debug;
use std::hash::Hash;

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::warn;

/// A watched kind: its store, and the subscriptions handed out before [`Cache::run`].
pub struct Cache<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    api: Api<K>,
    config: watcher::Config,
    dyntype: K::DynamicType,
    store: Store<K>,
    writer: Option<reflector::store::Writer<K>>,
    subscribers: Vec<mpsc::UnboundedSender<K>>,
    name: &'static str,
}

impl<K> Cache<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default + Send + Sync,
{
    /// A cache of `api`'s objects matching `config`.
    pub fn new(name: &'static str, api: Api<K>, config: watcher::Config) -> Self {
        Self::new_with(name, api, config, Default::default())
    }
}

impl<K> Cache<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    /// A cache of a dynamic kind.
    pub fn new_with(
        name: &'static str,
        api: Api<K>,
        config: watcher::Config,
        dyntype: K::DynamicType,
    ) -> Self {
        let writer = reflector::store::Writer::new(dyntype.clone());
        Self {
            store: writer.as_reader(),
            writer: Some(writer),
            api,
            config,
            dyntype,
            subscribers: Vec::new(),
            name,
        }
    }

    /// The store (filled once [`Cache::run`] is polled).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// The kind's dynamic type.
    pub fn dyntype(&self) -> K::DynamicType {
        self.dyntype.clone()
    }

    /// A stream of every object applied or deleted from now on, for a controller.
    pub fn subscribe(&mut self) -> futures::stream::BoxStream<'static, Result<K, watcher::Error>> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.subscribers.push(sender);
        tokio_stream::wrappers::UnboundedReceiverStream::new(receiver)
            .map(Ok)
            .boxed()
    }

    /// Watches until the task is dropped. Watch errors are retried with back-off by
    /// kube's watcher; they are logged here.
    pub fn run(mut self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let writer = self.writer.take().expect("run is called once");
        let subscribers = std::mem::take(&mut self.subscribers);
        let name = self.name;
        let stream = reflector::reflector(writer, watcher(self.api.clone(), self.config.clone()))
            .default_backoff()
            .touched_objects();
        async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(object) => {
                        for subscriber in &subscribers {
                            let _ = subscriber.send(object.clone());
                        }
                    }
                    Err(error) => warn!(cache = name, %error, "watch failed; retrying"),
                }
            }
        }
    }
}
