//! The bandwidth-limiting proxy between real containerd and the real registry: pulls
//! through it are slowed, a stalled one times out, and raising the rate lets it finish.

use std::net::SocketAddr;
use std::time::Duration;

use kruised::cri::{CriClient, RuntimeEndpoint};
use kruised::proto::runtime::v1 as cri;
use testbed::proxy::{Proxy, trust_plain_http};
use testbed::testenv::TestEnv;

async fn through_proxy(rate: u64) -> (Proxy, CriClient) {
    let env = TestEnv::get();
    let upstream: SocketAddr = env.registry().parse().unwrap();
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), upstream, rate)
        .await
        .unwrap();
    trust_plain_http(&env.dir().join("certs.d"), proxy.addr()).unwrap();
    let client = CriClient::connect(
        &RuntimeEndpoint::parse(env.runtime_endpoint()).unwrap(),
        None,
    )
    .await
    .unwrap();
    (proxy, client)
}

fn pull(image: &str) -> cri::PullImageRequest {
    cri::PullImageRequest {
        image: Some(kruised::cri::client::image_spec(image)),
        auth: None,
        sandbox_config: None,
    }
}

#[tokio::test]
async fn stalled_pull_times_out_and_completes_once_the_rate_is_raised() {
    let (proxy, client) = through_proxy(0).await;
    let image = format!("{}/test/busybox:2", proxy.addr());
    let error = client
        .pull_image(pull(&image), Some(Duration::from_secs(2)))
        .await
        .expect_err("no byte passes: the pull cannot finish");
    assert!(error.is_retryable(), "{error}");
    proxy.set_rate(u64::MAX);
    let image_ref = client
        .pull_image(pull(&image), Some(Duration::from_secs(60)))
        .await
        .expect("the same pull succeeds once bytes flow");
    assert!(image_ref.starts_with("sha256:"));
}

#[tokio::test]
async fn throttled_pull_of_a_multi_layer_image_succeeds() {
    // 50 MB at 40 MB/s: slow enough to be throttled, quick enough for CI.
    let (proxy, client) = through_proxy(40 * 1024 * 1024).await;
    let image = format!("{}/test/big:1", proxy.addr());
    let image_ref = client
        .pull_image(pull(&image), Some(Duration::from_secs(120)))
        .await
        .expect("throttled pull");
    let status = client
        .image_status(&image)
        .await
        .unwrap()
        .expect("image present");
    assert_eq!(status.id, image_ref);
    assert!(status.size >= 50_000_000, "size {}", status.size);
}
