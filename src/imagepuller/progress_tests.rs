//! Progress against the fake runtime's containerd content service, for a multi-platform
//! image: the tag resolves to an index, and only the platform manifest's blobs count.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::cri::fake::{FakeCri, PullScript};
use crate::cri::{CriClient, RuntimeEndpoint};
use crate::proto::runtime::v1 as cri;

const REFERENCE: &str = "127.0.0.1:5000/test/multi:1";

/// Three layers at 4 MB/s (about 1.6 s of download), then a 1 s unpack: several polls see
/// partial bytes, and at least one sees every byte while the call has not returned yet.
fn script() -> PullScript {
    PullScript::default()
        .image_index()
        .layers([2_500_000, 3_000_000, 1_000_000])
        .bytes_per_second(4_000_000)
        .unpack_taking(Duration::from_secs(1))
}

async fn connect(fake: &FakeCri, dir: &tempfile::TempDir) -> (CriClient, impl Drop) {
    let handle = fake.serve_unix(dir.path().join("cri.sock")).await.unwrap();
    let endpoint = RuntimeEndpoint::parse(handle.endpoint()).unwrap();
    (CriClient::connect(&endpoint, None).await.unwrap(), handle)
}

fn pull(cri: &CriClient) -> impl Future<Output = Result<String, CriError>> {
    let cri = cri.clone();
    async move {
        cri.pull_image(
            cri::PullImageRequest {
                image: Some(crate::cri::client::image_spec(REFERENCE)),
                ..Default::default()
            },
            Some(Duration::from_secs(60)),
        )
        .await
    }
}

#[tokio::test]
async fn the_blobs_counted_are_the_platform_manifests_config_and_layers() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCri::new();
    fake.script_pull(
        REFERENCE,
        script().bytes_per_second(0).unpack_taking(Duration::ZERO),
    );
    let expected = fake.scripted_image(REFERENCE).unwrap();
    assert!(expected.index.is_some(), "the tag resolves to an index");
    let (cri, _handle) = connect(&fake, &dir).await;
    let started = SystemTime::now();
    pull(&cri).await.unwrap();

    let source = ProgressSource::new(cri.channel());
    let blobs = source
        .find_blobs(&source_of(REFERENCE).unwrap(), started)
        .await
        .expect("the manifest is found through the content store");
    let mut want: BTreeMap<String, i64> = expected
        .layers
        .iter()
        .map(|layer| (layer.digest.clone(), layer.size as i64))
        .collect();
    want.insert(expected.config.digest.clone(), expected.config.size as i64);
    assert_eq!(blobs.sizes, want);
    assert_eq!(blobs.total() as u64, expected.total_bytes());
}

#[tokio::test]
async fn progress_of_an_index_pull_is_monotonic_partial_and_below_100_until_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCri::new();
    fake.script_pull(REFERENCE, script());
    let (cri, _handle) = connect(&fake, &dir).await;
    let source = ProgressSource::new(cri.channel());
    let (sender, mut receiver) = watch::channel(0u8);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while receiver.changed().await.is_ok() {
                let value = *receiver.borrow_and_update();
                seen.lock().unwrap().push(value);
            }
        })
    };

    let result = source.track(REFERENCE, pull(&cri), sender).await;
    // Everything published before the call returned; `track` dropped the sender.
    recorder.await.unwrap();
    result.unwrap();
    let seen = seen.lock().unwrap().clone();

    assert!(
        seen.windows(2).all(|pair| pair[0] < pair[1]),
        "monotonic: {seen:?}"
    );
    assert!(
        seen.iter().all(|value| *value < 100),
        "never 100 before success: {seen:?}"
    );
    let partial = seen.iter().filter(|v| (1..99).contains(*v)).count();
    assert!(
        partial >= 2,
        "partial progress seen at least twice: {seen:?}"
    );
    // Had the index or both platforms' layers been counted, the total would be wrong and
    // the unpack would not show every byte done.
    assert_eq!(
        seen.last(),
        Some(&99),
        "every byte of the platform manifest done during the unpack: {seen:?}"
    );
}
