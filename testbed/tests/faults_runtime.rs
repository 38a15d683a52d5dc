//! Fault injection on the runtime side (issue 8 §1): the real `kruised` binary, real
//! containerd and registries, the test bed's API server and kubelet stand-in, and faults
//! injected from outside: containerd restarted under pulls and under a CRR, its socket
//! removed, kruised SIGKILLed at random points, the registry down and back, a registry that
//! stalls.
//!
//! Every case ends with the same checks: each tag Succeeded or Failed with the right
//! message, each CRR Completed, each container restarted exactly once, no panic in
//! kruised's log, and `/readyz` answering 200.
//!
//! These cases stop containerd and the registry, so they run on their own environment
//! (`target/testenv-faults`, brought up fresh by the first case and torn down by the last),
//! one case at a time. After running only some of them (a name filter), tear it down with
//! `scripts/testenv down target/testenv-faults`; the next run also starts from scratch.
//! The kill points of the SIGKILL case come from a seeded RNG: the seed is printed, and
//! `FAULTS_SEED=<seed>` replays it.

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kruised::apiversions::KruiseVersion;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use serde_json::{Value, json};
use support::recreate_harness::{
    Answer, Bed, BedOptions, Controller, HookServer, Kruised, ManagerVersion, is_killed,
    kruised_binary, message, phase, running, runtime_id, script_container, states, status_of,
    unique,
};
use testbed::env::Daemon;
use testbed::proxy::Proxy;
use testbed::testenv::TestEnv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The number of `#[tokio::test]` cases below: the last one to finish tears the
/// environment down.
const CASES: usize = 9;
/// Deadline for an end state that takes retries and restarts to reach.
const SLOW: Duration = Duration::from_secs(90);
/// The CRI state of an exited container.
const CONTAINER_EXITED: i32 = 2;

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static REMAINING: AtomicUsize = AtomicUsize::new(CASES);

/// This suite's environment folder.
fn env_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/testenv-faults");
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

/// The suite's own environment, brought up fresh (containerd's state from an earlier
/// run that was interrupted is torn down first).
fn env() -> &'static TestEnv {
    static ENV: OnceLock<&'static TestEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = env_dir();
        testbed::env::runtime_down(&dir).expect("tear down a leftover environment");
        TestEnv::use_dir(&dir)
    })
}

/// One case's hold on the environment: cases run one at a time, and the last one to
/// finish (passed or not) tears the environment down and checks nothing is left.
struct Case {
    _lock: tokio::sync::MutexGuard<'static, ()>,
}

impl Case {
    async fn begin() -> Self {
        let lock = LOCK.lock().await;
        env();
        Self { _lock: lock }
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        if REMAINING.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let dir = env_dir();
        let down = testbed::env::runtime_down(&dir);
        if std::thread::panicking() {
            return;
        }
        down.expect("scripts/testenv down");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let prefix = format!("{}/", dir.display());
        let left: Vec<&str> = mounts
            .lines()
            .filter(|line| {
                line.split(' ')
                    .nth(4)
                    .is_some_and(|m| m.starts_with(&prefix))
            })
            .collect();
        assert!(left.is_empty(), "mounts left after down: {left:#?}");
        let shims = processes_naming(&dir);
        assert!(shims.is_empty(), "processes left after down: {shims:?}");
        // The images (~800 MB) go too; the logs stay for a look. `up` makes both afresh.
        for data in ["containerd", "registry"] {
            std::fs::remove_dir_all(dir.join(data)).expect("remove the environment's data");
        }
    }
}

/// Live processes whose command line names a file under `dir` (containerd, its shims,
/// the registries).
fn processes_naming(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(") ")
                    .map(|(_, rest)| rest.starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie && cmdline.contains(&needle) {
            found.push(cmdline);
        }
    }
    found
}

/// Stops or starts one daemon of the environment, panicking if the script fails.
fn stop(daemon: Daemon) {
    testbed::env::stop_daemon(&env_dir(), daemon).expect("stop");
}

fn start(daemon: Daemon) {
    testbed::env::start_daemon(&env_dir(), daemon).expect("start");
}

/// SIGTERM containerd and start it again on the same socket.
fn restart_containerd() {
    stop(Daemon::Containerd);
    start(Daemon::Containerd);
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `deadline`, the
/// message saying what was awaited and showing `context` at that moment.
async fn until<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}; last seen: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET path` on kruised's HTTP port: `(status code, body)`.
async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Some((code, body.to_string()))
}

/// The sum of the metric samples whose line starts with `prefix`.
async fn metric_sum(port: u16, prefix: &str) -> f64 {
    let (_, text) = http_get(port, "/metrics").await.unwrap_or_default();
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// PullImage calls that did not return OK, from kruised's metrics.
async fn failed_pulls(port: u16) -> f64 {
    const CALLS: &str = "kruised_cri_call_duration_seconds_count{method=\"PullImage\"";
    metric_sum(port, CALLS).await - metric_sum(port, &format!("{CALLS},code=\"OK\"")).await
}

/// The real `kruised` binary on the bed's node, started as often as a case needs, each
/// run's log appended to one file that the case checks for panics.
struct Agent {
    binary: PathBuf,
    kubeconfig: tempfile::NamedTempFile,
    node: String,
    log: PathBuf,
}

impl Agent {
    fn new(bed: &Bed, case: &str) -> Self {
        let kubeconfig = tempfile::NamedTempFile::new().unwrap();
        bed.server().write_kubeconfig(kubeconfig.path()).unwrap();
        let log = env_dir().join(format!("logs/kruised-{case}.log"));
        let _ = std::fs::remove_file(&log);
        Self {
            binary: kruised_binary(),
            kubeconfig,
            node: bed.node.clone(),
            log,
        }
    }

    /// Starts kruised with room for 4 concurrent pulls (the default is 2).
    fn start(&self) -> Kruised {
        Kruised::start_with(
            &self.binary,
            self.kubeconfig.path(),
            &self.node,
            &["--max-workers-for-pull-image", "4"],
            Some(&self.log),
        )
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200.
    async fn ready(&self, kruised: &Kruised) {
        until(SLOW, "kruised /readyz 200", || async {
            match http_get(kruised.port(), "/readyz").await {
                Some((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }

    /// The end-of-case checks on the agent: still ready, and no panic in any run's log.
    async fn check_healthy(&self, kruised: &Kruised) {
        self.ready(kruised).await;
        let log = self.log_text();
        assert!(
            !log.contains("panicked at"),
            "kruised panicked; log {}:\n{log}",
            self.log.display()
        );
    }
}

/// The bed's NodeImage (v1beta1, as kruise master stores it).
struct NodeImage {
    api: Api<DynamicObject>,
    node: String,
}

impl NodeImage {
    fn of(bed: &Bed) -> Self {
        Self {
            api: Api::all_with(
                bed.client.clone(),
                &KruiseVersion::V1beta1.resource("NodeImage", "nodeimages"),
            ),
            node: bed.node.clone(),
        }
    }

    /// Creates it with `images` (`name → {tags: [...]}`), as the manager writes it (§3.3).
    async fn create(&self, images: Value) {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage",
            "metadata": {"name": self.node, "labels": {"kubernetes.io/hostname": self.node}},
            "spec": {"images": images},
        }))
        .unwrap();
        self.api
            .create(&PostParams::default(), &object)
            .await
            .expect("create NodeImage");
    }

    /// Adds images to the spec (merge patch).
    async fn add(&self, images: Value) {
        self.api
            .patch(
                &self.node,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"images": images}})),
            )
            .await
            .expect("patch NodeImage");
    }

    async fn status(&self) -> Value {
        self.api
            .get(&self.node)
            .await
            .map(|object| object.data["status"].clone())
            .unwrap_or(Value::Null)
    }

    /// The status of `image:tag`, `Null` without one.
    async fn tag(&self, image: &str, tag: &str) -> Value {
        self.status().await["imageStatuses"][image]["tags"]
            .as_array()
            .and_then(|tags| tags.iter().find(|t| t["tag"] == tag).cloned())
            .unwrap_or(Value::Null)
    }

    /// Waits until the tag's status satisfies `done`.
    async fn wait(
        &self,
        image: &str,
        tag: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        until(SLOW, &format!("{image}:{tag} {what}"), || async {
            let status = self.tag(image, tag).await;
            if done(&status) {
                Ok(status)
            } else {
                Err(status.to_string())
            }
        })
        .await
    }

    /// Waits until the tag is Succeeded, and checks it carries the image's ID.
    async fn succeeded(&self, bed: &Bed, image: &str, tag: &str) -> Value {
        let done = self
            .wait(image, tag, "Succeeded", |t| t["phase"] == "Succeeded")
            .await;
        let reference = format!("{image}:{tag}");
        let stored = bed
            .cri
            .image_status(&reference)
            .await
            .expect("ImageStatus")
            .unwrap_or_else(|| panic!("{reference} is in containerd"));
        assert_eq!(done["imageID"], format!("{image}@{}", stored.id));
        assert_eq!(done["progress"], 100);
        done
    }
}

/// A tag as the manager writes it, with this pull policy.
fn tag_spec(tag: &str, pull_policy: Value) -> Value {
    json!({
        "tag": tag, "version": 1, "createdAt": "2026-11-25T10:00:00Z",
        "imagePullPolicy": "Always", "pullPolicy": pull_policy,
    })
}

/// A bandwidth-limited proxy in front of the plain registry that containerd trusts.
async fn proxy(rate: u64) -> Proxy {
    let env = env();
    let proxy = Proxy::start(
        "127.0.0.1:0".parse().unwrap(),
        env.registry().parse().unwrap(),
        rate,
    )
    .await
    .unwrap();
    testbed::proxy::trust_plain_http(&env.dir().join("certs.d"), proxy.addr()).unwrap();
    proxy
}

/// Removes every image of repository `path` (or `path:tag`, under any registry address)
/// from containerd,
/// so that the next pull of it downloads every byte: blobs are shared by digest.
async fn forget_repository(bed: &Bed, path: &str) {
    for image in bed.cri.list_images(None).await.unwrap() {
        if image
            .repo_tags
            .iter()
            .chain(image.repo_digests.iter())
            .any(|r| r.contains(&format!("/{path}")))
        {
            bed.cri.remove_image(&image.id).await.unwrap();
        }
    }
}

/// A bed whose CRR controller is the `kruised` binary (started by the case).
async fn bed() -> Bed {
    Bed::start_opts(BedOptions {
        controller: Controller::External,
        manager: ManagerVersion::Master,
    })
    .await
}

/// Asserts the pod's container `name` restarted exactly once, stopped by one kill.
async fn restarted_once(bed: &Bed, pod_name: &str, name: &str) {
    let pod = bed
        .pod_until(pod_name, &format!("{name} running again"), |pod| {
            let status = status_of(pod, name);
            running(status) && status.restart_count >= 1
        })
        .await;
    let uid = pod.metadata.uid.clone().unwrap();
    assert_eq!(
        status_of(&pod, name).restart_count,
        1,
        "{pod_name}/{name} restarted exactly once"
    );
    assert_eq!(
        bed.kills(&uid, name).await,
        1,
        "{pod_name}/{name}: one Killing event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containerd_restarted_under_four_concurrent_pulls_every_tag_succeeds_after_retries() {
    let _case = Case::begin().await;
    let bed = bed().await;
    let agent = Agent::new(&bed, "containerd-restart-pulls");
    let images = NodeImage::of(&bed);
    // Stalled: no byte reaches containerd, so all four pulls are in flight when it stops.
    let proxy = proxy(0).await;
    for repository in ["test/big", "test/huge", "test/busybox"] {
        forget_repository(&bed, repository).await;
    }
    let refs: Vec<(String, &str)> = [
        ("test/big", "1"),
        ("test/huge", "1"),
        ("test/busybox", "1"),
        ("test/busybox", "2"),
    ]
    .into_iter()
    .map(|(repository, tag)| (format!("{}/{repository}", proxy.addr()), tag))
    .collect();
    // backoffLimit 6: seven attempts over more than a minute of back-off, while containerd
    // is away for about a second, so the outcome is Succeeded by design.
    let policy = json!({"timeoutSeconds": 120, "backoffLimit": 6});
    let mut spec = json!({});
    for (image, tag) in &refs {
        let tags = spec[image.as_str()]["tags"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut tags = tags;
        tags.push(tag_spec(tag, policy.clone()));
        spec[image.as_str()] = json!({"tags": tags});
    }
    let kruised = agent.start();
    agent.ready(&kruised).await;
    images.create(spec).await;
    for (image, tag) in &refs {
        images
            .wait(image, tag, "Pulling", |t| t["phase"] == "Pulling")
            .await;
    }
    until(SLOW, "4 PullImage calls in flight", || async {
        let in_flight = metric_sum(kruised.port(), "kruised_image_pulls_in_flight").await;
        if in_flight == 4.0 {
            Ok(())
        } else {
            Err(in_flight.to_string())
        }
    })
    .await;

    restart_containerd();
    proxy.set_rate(u64::MAX);

    for (image, tag) in &refs {
        let done = images.succeeded(&bed, image, tag).await;
        assert!(done["message"].is_null(), "{done}");
    }
    let failed = failed_pulls(kruised.port()).await;
    assert!(
        failed >= 4.0,
        "the 4 pulls cut by the restart failed and were retried: {failed}"
    );
    agent.check_healthy(&kruised).await;
    drop(kruised);
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containerd_restarted_between_a_crr_kill_and_the_restart_completes_with_one_restart() {
    let _case = Case::begin().await;
    let mut bed = bed().await;
    let agent = Agent::new(&bed, "containerd-restart-crr");
    let kruised = agent.start();
    agent.ready(&kruised).await;
    let pod = bed.running_pod(&unique("restart-crr"), &["app"]).await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let pod_uid = pod.metadata.uid.clone().unwrap();
    let old = status_of(&pod, "app").container_id.clone().unwrap();
    // Held between the kill and the restart: without the kubelet nothing starts app again.
    bed.stop_kubelet().await;
    let crr = bed.create_crr(&pod, &["app"], json!({}), &[]).await;
    let crr_name = crr.metadata.name.clone().unwrap();
    bed.crr_until(&crr_name, "app killed", |crr| is_killed(crr, "app"))
        .await;
    until(SLOW, "app exited in the runtime", || async {
        let containers = bed.runtime_containers(&pod_uid, "app").await;
        if containers == vec![(runtime_id(&old).to_string(), CONTAINER_EXITED)] {
            Ok(())
        } else {
            Err(format!("{containers:?}"))
        }
    })
    .await;

    restart_containerd();
    bed.start_kubelet().await;

    let crr = bed.completed(&crr_name).await;
    assert_eq!(
        states(&crr),
        vec![json!({"name": "app", "phase": "Succeeded", "isKilled": true})]
    );
    assert_eq!(message(&crr), "");
    restarted_once(&bed, &pod_name, "app").await;
    agent.check_healthy(&kruised).await;
    drop(kruised);
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cri_socket_removed_work_waits_and_finishes_once_the_socket_is_back() {
    let _case = Case::begin().await;
    let bed = bed().await;
    let agent = Agent::new(&bed, "socket-removed");
    let images = NodeImage::of(&bed);
    let image = env().image("test/busybox");
    forget_repository(&bed, "test/busybox:").await;
    let pod = bed.running_pod(&unique("socket"), &["app"]).await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let kruised = agent.start();
    agent.ready(&kruised).await;

    // The socket goes while containerd keeps running: the agent's open connection still
    // serves it.
    let socket = PathBuf::from(env().var("CONTAINERD_SOCKET"));
    std::fs::remove_file(&socket).expect("remove the CRI socket");
    images
        .create(json!({image.clone(): {"tags": [tag_spec("1", json!({"timeoutSeconds": 60, "backoffLimit": 3}))]}}))
        .await;
    images.succeeded(&bed, &image, "1").await;

    // The agent restarts meanwhile: it cannot reach the runtime at all.
    kruised.sigkill();
    let kruised = agent.start();
    let attempts = |log: &str| log.matches("no usable container runtime yet").count();
    until(SLOW, "kruised reporting the missing socket", || async {
        match http_get(kruised.port(), "/readyz").await {
            Some((503, body))
                if body.contains("[-]cri not ready") && attempts(&agent.log_text()) > 0 =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        agent.log_text().contains("No such file or directory"),
        "the log names the cause"
    );

    // Work submitted meanwhile waits: kruised keeps retrying, and touches none of it.
    images
        .add(json!({image.clone(): {"tags": [
            tag_spec("1", json!({"timeoutSeconds": 60, "backoffLimit": 3})),
            tag_spec("2", json!({"timeoutSeconds": 60, "backoffLimit": 3})),
        ]}}))
        .await;
    let crr = bed.create_crr(&pod, &["app"], json!({}), &[]).await;
    let crr_name = crr.metadata.name.clone().unwrap();
    let before = attempts(&agent.log_text());
    until(SLOW, "another connection attempt", || async {
        let now = attempts(&agent.log_text());
        if now > before {
            Ok(())
        } else {
            Err(format!("{now} attempts"))
        }
    })
    .await;
    assert_eq!(images.tag(&image, "2").await, Value::Null, "no pull yet");
    assert_eq!(
        phase(&bed.crrs.get(&crr_name).await.unwrap()),
        "",
        "no CRR work yet"
    );

    // containerd restarted: the socket exists again.
    restart_containerd();
    agent.ready(&kruised).await;
    images.succeeded(&bed, &image, "2").await;
    let crr = bed.completed(&crr_name).await;
    assert_eq!(
        states(&crr),
        vec![json!({"name": "app", "phase": "Succeeded", "isKilled": true})]
    );
    restarted_once(&bed, &pod_name, "app").await;
    agent.check_healthy(&kruised).await;
    drop(kruised);
    bed.finish().await;
}

/// splitmix64: the suite's seeded RNG (printed, and set with `FAULTS_SEED`), so a failing
/// sequence of kill points can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)` milliseconds.
    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low))
    }
}

/// A container that takes a second to stop after SIGTERM, so kills of kruised land in
/// the middle of `StopContainer` too.
const SLOW_STOP: &str = "trap 'sleep 1; exit 0' TERM; while true; do sleep 0.2; done";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kruised_sigkilled_at_ten_random_points_of_pulls_and_crrs_finishes_all_work_exactly_once() {
    let _case = Case::begin().await;
    let seed = std::env::var("FAULTS_SEED")
        .ok()
        .map(|seed| seed.parse::<u64>().expect("FAULTS_SEED is a u64"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("kill points seeded with FAULTS_SEED={seed}");
    let mut rng = Rng(seed);
    let bed = bed().await;
    let agent = Agent::new(&bed, "sigkill-random");
    let images = NodeImage::of(&bed);
    // 10 MiB/s: the pulls last through several kills, each resumed by the next agent.
    let proxy = proxy(10 * 1024 * 1024).await;
    for repository in ["test/big", "test/busybox"] {
        forget_repository(&bed, repository).await;
    }
    let image = |repository: &str| format!("{}/{repository}", proxy.addr());
    let policy = json!({"timeoutSeconds": 120, "backoffLimit": 6});
    let pulls = [
        ("test/big", "1"),
        ("test/busybox", "1"),
        ("test/busybox", "2"),
    ];
    let mut spec = json!({});
    for (repository, tag) in pulls {
        let mut tags = spec[image(repository)]["tags"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        tags.push(tag_spec(tag, policy.clone()));
        spec[image(repository)] = json!({"tags": tags});
    }
    images.create(spec).await;

    // Four pods of one container and one of two, recreated in order.
    let mut pods = Vec::new();
    for i in 0..5 {
        let mut containers = vec![script_container("app", SLOW_STOP)];
        if i == 4 {
            containers.push(script_container("side", SLOW_STOP));
        }
        let pod = bed
            .running_pod_of(&unique(&format!("sigkill-{i}")), containers)
            .await;
        pods.push(pod);
    }
    let names = |pod: &k8s_openapi::api::core::v1::Pod| -> Vec<String> {
        pod.spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .map(|c| c.name.clone())
            .collect()
    };
    // One CRR at each of the first five kill cycles, so CRRs are at every stage when
    // the kills land.
    let mut crrs = Vec::new();
    for cycle in 0..10 {
        let kruised = agent.start();
        if let Some(pod) = pods.get(cycle) {
            let containers = names(pod);
            let containers: Vec<&str> = containers.iter().map(String::as_str).collect();
            let crr = bed
                .create_crr(pod, &containers, json!({"orderedRecreate": true}), &[])
                .await;
            crrs.push(crr.metadata.name.clone().unwrap());
        }
        let delay = rng.millis(200, 2500);
        eprintln!("cycle {cycle}: SIGKILL after {delay:?}");
        tokio::time::sleep(delay).await;
        kruised.sigkill();
    }
    let kruised = agent.start();

    for (repository, tag) in pulls {
        images.succeeded(&bed, &image(repository), tag).await;
    }
    for (crr_name, pod) in crrs.iter().zip(&pods) {
        let crr = bed.completed(crr_name).await;
        let containers = names(pod);
        let expected: Vec<Value> = containers
            .iter()
            .map(|name| json!({"name": name, "phase": "Succeeded", "isKilled": true}))
            .collect();
        assert_eq!(states(&crr), expected, "{crr_name} (seed {seed})");
        let pod_name = pod.metadata.name.clone().unwrap();
        let uid = pod.metadata.uid.clone().unwrap();
        let now = bed
            .pod_until(&pod_name, "all running", |pod| {
                containers.iter().all(|name| running(status_of(pod, name)))
            })
            .await;
        for name in &containers {
            assert_eq!(
                status_of(&now, name).restart_count,
                1,
                "{pod_name}/{name} restarted exactly once (seed {seed})"
            );
            // An agent SIGKILLed after StopContainer but before it recorded the event
            // leaves none; a second kill would leave two.
            let kills = bed.kills(&uid, name).await;
            assert!(
                kills <= 1,
                "{pod_name}/{name}: {kills} Killing events (seed {seed})"
            );
            assert_eq!(
                bed.runtime_containers(&uid, name).await.len(),
                2,
                "{pod_name}/{name}: the old container and one replacement (seed {seed})"
            );
        }
    }
    agent.check_healthy(&kruised).await;
    drop(kruised);
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_down_then_back_within_the_backoff_the_tag_succeeds_after_a_failed_attempt() {
    let _case = Case::begin().await;
    let bed = bed().await;
    let agent = Agent::new(&bed, "registry-down");
    let images = NodeImage::of(&bed);
    let image = env().image("test/busybox");
    forget_repository(&bed, "test/busybox:2").await;
    let kruised = agent.start();
    agent.ready(&kruised).await;

    stop(Daemon::Registry);
    // kruise's defaults: 4 attempts, 1 s, 2 s and 4 s apart.
    images
        .create(json!({image.clone(): {"tags": [tag_spec("2", json!({"timeoutSeconds": 600, "backoffLimit": 3}))]}}))
        .await;
    let interim = until(
        SLOW,
        "a failed attempt while the tag is Pulling",
        || async {
            let failed = failed_pulls(kruised.port()).await;
            let tag = images.tag(&image, "2").await;
            if failed >= 1.0 && tag["phase"] == "Pulling" {
                Ok(tag)
            } else {
                Err(format!("{failed} failed attempts, tag {tag}"))
            }
        },
    )
    .await;
    // Between attempts the tag stays Pulling, with no message, as kruise keeps it.
    assert!(interim["startTime"].is_string(), "{interim}");
    assert!(interim["completionTime"].is_null(), "{interim}");
    assert!(interim["message"].is_null(), "{interim}");

    start(Daemon::Registry);
    let done = images.succeeded(&bed, &image, "2").await;
    assert!(done["message"].is_null(), "{done}");
    assert_eq!(done["startTime"], interim["startTime"], "one pull, retried");
    assert!(failed_pulls(kruised.port()).await >= 1.0);
    agent.check_healthy(&kruised).await;
    drop(kruised);
    bed.finish().await;
}

/// Established TCP connections to `port` on 127.0.0.1 from a client (containerd's
/// downloads through the proxy).
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"01")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_registry_fails_the_tag_on_timeout_leaves_no_pull_behind_and_blocks_nothing() {
    let _case = Case::begin().await;
    let bed = bed().await;
    let agent = Agent::new(&bed, "stalled-registry");
    let images = NodeImage::of(&bed);
    let proxy = proxy(0).await;
    forget_repository(&bed, "test/big").await;
    let stalled = format!("{}/test/big", proxy.addr());
    let kruised = agent.start();
    agent.ready(&kruised).await;

    images
        .create(json!({stalled.clone(): {"tags": [tag_spec("1", json!({"timeoutSeconds": 2, "backoffLimit": 1}))]}}))
        .await;
    until(
        SLOW,
        "containerd downloading through the stalled proxy",
        || async {
            let open = connections_to(proxy.addr().port());
            if open > 0 {
                Ok(())
            } else {
                Err("no connection".into())
            }
        },
    )
    .await;
    let failed = images
        .wait(&stalled, "1", "Failed", |t| t["phase"] == "Failed")
        .await;
    assert_eq!(
        failed["message"],
        format!("pulling image {stalled}:1 timed out after 2s (attempt 2 of 2)")
    );
    assert!(failed["completionTime"].is_string(), "{failed}");

    // Nothing of the pull is left: not in kruised, not in containerd's downloads.
    until(SLOW, "no pull in flight in kruised", || async {
        let in_flight = metric_sum(kruised.port(), "kruised_image_pulls_in_flight").await;
        if in_flight == 0.0 {
            Ok(())
        } else {
            Err(in_flight.to_string())
        }
    })
    .await;
    until(
        SLOW,
        "containerd's downloads through the proxy closed",
        || async {
            match connections_to(proxy.addr().port()) {
                0 => Ok(()),
                open => Err(format!("{open} connections")),
            }
        },
    )
    .await;
    assert!(
        bed.cri
            .image_status(&format!("{stalled}:1"))
            .await
            .unwrap()
            .is_none(),
        "the stalled image was not stored"
    );

    // Another image on the same node still pulls.
    let other = env().image("test/busybox");
    forget_repository(&bed, "test/busybox:2").await;
    images
        .add(json!({other.clone(): {"tags": [tag_spec("2", json!({"timeoutSeconds": 60, "backoffLimit": 3}))]}}))
        .await;
    images.succeeded(&bed, &other, "2").await;
    assert_eq!(images.tag(&stalled, "1").await["phase"], "Failed");
    agent.check_healthy(&kruised).await;
    drop(kruised);
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containerd_restarted_while_a_crr_stops_the_container_fails_the_kill_and_restarts_once() {
    let _case = Case::begin().await;
    let bed = bed().await;
    let agent = Agent::new(&bed, "containerd-restart-stopping");
    // app reports SIGTERM and takes 3 s to exit: StopContainer is in flight meanwhile.
    let term = HookServer::start("127.0.0.1", Answer::Close).await;
    let script = format!(
        "trap 'echo term | nc {} {}; sleep 3; exit 0' TERM; while true; do sleep 0.2; done",
        term.addr.ip(),
        term.addr.port()
    );
    let pod = bed
        .running_pod_of(&unique("stopping"), vec![script_container("app", &script)])
        .await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let kruised = agent.start();
    agent.ready(&kruised).await;
    let crr = bed.create_crr(&pod, &["app"], json!({}), &[]).await;
    let crr_name = crr.metadata.name.clone().unwrap();
    term.wait_for_hits(1).await;

    restart_containerd();

    // kruise's outcome when StopContainer fails (§4.4 step 5.6): the container's state is
    // Failed with the kill error and, with failurePolicy Fail, the CRR completes. The
    // container got its SIGTERM all the same and is restarted once, by the kubelet.
    let crr = bed.completed(&crr_name).await;
    let state = states(&crr);
    assert_eq!(state.len(), 1, "{state:?}");
    assert_eq!(state[0]["phase"], "Failed", "{state:?}");
    let text = state[0]["message"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("kill container error: rpc error: code = "),
        "{text}"
    );
    // The broken connection's cause, not tonic's bare "transport error".
    assert!(!text.ends_with("desc = transport error"), "{text}");
    assert_eq!(message(&crr), "");
    restarted_once(&bed, &pod_name, "app").await;
    assert_eq!(
        term.hits().len(),
        1,
        "one SIGTERM: the container was not stopped twice"
    );
    agent.check_healthy(&kruised).await;
    drop(kruised);
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containerd_crashed_past_a_health_check_readyz_drops_and_work_resumes_or_fails_by_budget() {
    let _case = Case::begin().await;
    let bed = bed().await;
    let agent = Agent::new(&bed, "containerd-crash");
    let images = NodeImage::of(&bed);
    let image = env().image("test/busybox");
    forget_repository(&bed, "test/busybox:").await;
    let pod = bed.running_pod(&unique("crash"), &["app"]).await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let kruised = agent.start();
    agent.ready(&kruised).await;

    // A crash: the socket file stays behind, and connecting to it is refused.
    testbed::env::kill_containerd(&env_dir()).expect("kill containerd");
    assert!(Path::new(env().var("CONTAINERD_SOCKET")).exists());
    until(SLOW, "/readyz 503 naming the CRI", || async {
        match http_get(kruised.port(), "/readyz").await {
            Some((503, body)) if body.contains("[-]cri not ready") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Work submitted during the outage. Two attempts 1 s apart cannot outlast it: Failed
    // with the last attempt's error. Seven attempts over a minute do: Succeeded.
    images
        .create(json!({image.clone(): {"tags": [
            tag_spec("1", json!({"timeoutSeconds": 60, "backoffLimit": 1})),
            tag_spec("2", json!({"timeoutSeconds": 60, "backoffLimit": 6})),
        ]}}))
        .await;
    let crr = bed.create_crr(&pod, &["app"], json!({}), &[]).await;
    let crr_name = crr.metadata.name.clone().unwrap();
    let failed = images
        .wait(&image, "1", "Failed", |t| t["phase"] == "Failed")
        .await;
    let text = failed["message"].as_str().unwrap_or_default();
    assert!(
        text.starts_with(&format!("Failed to pull image reference \"{image}:1\": ")),
        "{text}"
    );
    assert_eq!(images.tag(&image, "2").await["phase"], "Pulling");

    start(Daemon::Containerd);
    agent.ready(&kruised).await;
    images.succeeded(&bed, &image, "2").await;
    let crr = bed.completed(&crr_name).await;
    assert_eq!(
        states(&crr),
        vec![json!({"name": "app", "phase": "Succeeded", "isKilled": true})]
    );
    restarted_once(&bed, &pod_name, "app").await;
    assert_eq!(images.tag(&image, "1").await["phase"], "Failed");
    agent.check_healthy(&kruised).await;
    drop(kruised);
    bed.finish().await;
}

/// Thaws containerd when dropped, so a failing assertion leaves it running.
struct Frozen;

impl Frozen {
    fn freeze() -> Self {
        testbed::env::freeze_containerd(&env_dir(), true).expect("freeze containerd");
        Self
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let thawed = testbed::env::freeze_containerd(&env_dir(), false);
        if !std::thread::panicking() {
            thawed.expect("thaw containerd");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containerd_hung_readyz_drops_and_the_work_waiting_on_it_finishes_once_it_answers() {
    let _case = Case::begin().await;
    let bed = bed().await;
    let agent = Agent::new(&bed, "containerd-hung");
    let images = NodeImage::of(&bed);
    let image = env().image("test/busybox");
    forget_repository(&bed, "test/busybox:2").await;
    let pod = bed.running_pod(&unique("hung"), &["app"]).await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let kruised = agent.start();
    agent.ready(&kruised).await;

    // Every CRI call now hangs: the socket accepts, nothing answers.
    let frozen = Frozen::freeze();
    images
        .create(json!({image.clone(): {"tags": [tag_spec("2", json!({"timeoutSeconds": 120, "backoffLimit": 3}))]}}))
        .await;
    let crr = bed.create_crr(&pod, &["app"], json!({}), &[]).await;
    let crr_name = crr.metadata.name.clone().unwrap();
    until(SLOW, "/readyz 503 naming the CRI", || async {
        match http_get(kruised.port(), "/readyz").await {
            Some((503, body)) if body.contains("[-]cri not ready") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let pulling = images.tag(&image, "2").await;
    assert!(pulling["completionTime"].is_null(), "{pulling}");

    drop(frozen);
    agent.ready(&kruised).await;
    images.succeeded(&bed, &image, "2").await;
    let crr = bed.completed(&crr_name).await;
    assert_eq!(
        states(&crr),
        vec![json!({"name": "app", "phase": "Succeeded", "isKilled": true})]
    );
    restarted_once(&bed, &pod_name, "app").await;
    agent.check_healthy(&kruised).await;
    drop(kruised);
    bed.finish().await;
}
