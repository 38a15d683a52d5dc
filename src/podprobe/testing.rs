//! A fake containerd with one kubelet-made pod, shared by the unit tests of `podprobe` and
//! `containermeta`.

use crate::cri::fake::{FakeCri, FakeCriHandle, FakePod, KubeletPod};
use crate::cri::{CriClient, RuntimeEndpoint};

/// The fake runtime serving `pod`, and a client validated as discovery validates one.
pub(crate) struct World {
    /// The running fake (derefs to [`FakeCri`]).
    pub(crate) handle: FakeCriHandle,
    /// The client.
    pub(crate) cri: CriClient,
    /// The pod as started.
    pub(crate) pod: FakePod,
    // Last, so that the socket's directory outlives the server.
    _directory: tempfile::TempDir,
}

impl World {
    pub(crate) async fn start(pod: KubeletPod) -> Self {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let fake = FakeCri::new();
        let pod = fake
            .add_pod_with_containers(pod)
            .expect("the fake starts the pod");
        let handle = fake
            .serve_unix(directory.path().join("containerd.sock"))
            .await
            .expect("the fake serves");
        let endpoint = RuntimeEndpoint::parse(handle.endpoint()).expect("a unix endpoint");
        let cri = CriClient::connect(&endpoint, None)
            .await
            .expect("the fake validates like containerd");
        Self {
            handle,
            cri,
            pod,
            _directory: directory,
        }
    }

    /// The runtime ID of the pod's container `name` as started.
    pub(crate) fn id(&self, name: &str) -> String {
        self.pod
            .container_id(name)
            .expect("the container exists")
            .to_owned()
    }
}
