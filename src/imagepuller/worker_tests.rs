//! The per-tag state machine against the in-process fake CRI: phases and times, attempts
//! and back-off, per-attempt timeout, active deadline, `IfNotPresent`, credentials and
//! cancellation.
//!
//! Real time, with scripted durations orders of magnitude apart (a 1 h pull against a
//! 200 ms timeout), so every outcome is fixed whatever the machine's load; the crate does
//! not build tokio's `test-util`, which paused time needs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::Code;

use super::*;
use crate::cri::fake::{Call, FakeCri, FakeCriHandle, PullScript};
use crate::cri::{CriClient, RuntimeEndpoint};
use crate::metrics::Metrics;

/// How long any wait in these tests may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);
const HOUR: Duration = Duration::from_secs(3600);

struct Bed {
    fake: FakeCri,
    pulls: Arc<Pulls>,
    _handle: FakeCriHandle,
    // Last, so the socket's directory outlives the server.
    _dir: tempfile::TempDir,
}

impl Bed {
    /// A fake runtime and the node's pulls on it, at most `cap` at once.
    async fn start(cap: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeCri::new();
        let handle = fake.serve_unix(dir.path().join("cri.sock")).await.unwrap();
        let endpoint = RuntimeEndpoint::parse(handle.endpoint()).unwrap();
        let cri = CriClient::connect(&endpoint, None).await.unwrap();
        fake.clear_calls();
        let metrics = Metrics::new().image_pull.clone();
        Self {
            pulls: Arc::new(Pulls::new(cri, cap, metrics, None)),
            fake,
            _handle: handle,
            _dir: dir,
        }
    }

    /// Runs `work` to its final status, collecting what it reports on the way.
    fn spawn(&self, work: TagWork) -> (tokio::task::JoinHandle<ImageTagStatus>, Reports) {
        let reports = Reports::default();
        let sink = reports.clone();
        let pulls = self.pulls.clone();
        let task = tokio::spawn(async move { run(work, pulls, move |s| sink.push(s)).await });
        (task, reports)
    }

    async fn run(&self, work: TagWork) -> (ImageTagStatus, Vec<ImageTagStatus>) {
        let (task, reports) = self.spawn(work);
        let status = tokio::time::timeout(DEADLINE, task)
            .await
            .expect("the worker finishes")
            .unwrap();
        (status, reports.all())
    }

    fn pull_auths(&self) -> Vec<Option<String>> {
        self.fake
            .calls_of("PullImage")
            .into_iter()
            .map(|call| match call {
                Call::PullImage(request) => request.auth.map(|auth| auth.username),
                other => panic!("not a pull: {other:?}"),
            })
            .collect()
    }
}

/// The intermediate statuses a worker reported, in order.
#[derive(Clone, Default)]
struct Reports(Arc<Mutex<Vec<ImageTagStatus>>>);

impl Reports {
    fn push(&self, status: ImageTagStatus) {
        self.0.lock().unwrap().push(status);
    }

    fn all(&self) -> Vec<ImageTagStatus> {
        self.0.lock().unwrap().clone()
    }
}

async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

type Answer = BoxFuture<'static, Result<Vec<AuthConfig>, String>>;

fn credentials(result: Result<Vec<AuthConfig>, String>) -> CredentialResolver {
    Arc::new(move |_: String| -> Answer {
        let result = result.clone();
        Box::pin(async move { result })
    })
}

/// kruise's defaults, except a 1 ms back-off so that retries do not slow the tests.
fn work(image: &str, tag: &str) -> TagWork {
    TagWork {
        image: image.to_string(),
        tag: tag.to_string(),
        version: 1,
        reference: crate::imageref::pull_reference(image, tag).map_err(|e| e.to_string()),
        timeout: DEFAULT_TIMEOUT,
        attempts: DEFAULT_BACKOFF_LIMIT + 1,
        active_deadline: None,
        if_not_present: false,
        sandbox: cri::PodSandboxConfig::default(),
        credentials: credentials(Ok(Vec::new())),
        backoff_initial: Duration::from_millis(1),
    }
}

fn phases(reports: &[ImageTagStatus]) -> Vec<&str> {
    reports.iter().map(|s| s.phase.as_str()).collect()
}

#[tokio::test]
async fn a_pull_reports_pulling_with_a_start_time_then_succeeds_with_completion_time_and_image_id()
{
    let bed = Bed::start(2).await;
    bed.fake.hold_pulls();
    let (task, reports) = bed.spawn(work("quay.io/org/app", "1"));
    eventually("the pull is in flight and reported", || {
        bed.fake.in_flight_pulls() == 1 && !reports.all().is_empty()
    })
    .await;
    let pulling = reports.all()[0].clone();
    assert_eq!(pulling.phase, "Pulling");
    assert_eq!(pulling.version, Some(1));
    assert_eq!(pulling.progress, Some(0));
    assert!(pulling.start_time.is_some() && pulling.completion_time.is_none());

    bed.fake.release_pulls();
    let done = tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
    assert_eq!(done.phase, "Succeeded");
    assert_eq!(done.progress, Some(100));
    assert_eq!(
        done.start_time, pulling.start_time,
        "startTime is when the pull started"
    );
    let (start, end) = (done.start_time.unwrap(), done.completion_time.unwrap());
    assert!(start.0 <= end.0);
    let id = bed.fake.images()[0].id.clone();
    assert_eq!(
        done.image_id.as_deref(),
        Some(format!("quay.io/org/app@{id}").as_str())
    );
    assert_eq!(phases(&reports.all()), ["Pulling"]);
}

#[tokio::test]
async fn a_tag_stays_waiting_without_a_start_time_while_the_node_wide_cap_is_full() {
    let bed = Bed::start(1).await;
    bed.fake.hold_pulls();
    let (first, _) = bed.spawn(work("quay.io/org/first", "1"));
    eventually("the first pull holds the only slot", || {
        bed.fake.in_flight_pulls() == 1
    })
    .await;
    // The second worker signals from its credential lookup; on this single-threaded
    // runtime it then runs on, without yielding, to waiting for a slot.
    let (reached_tx, mut reached) = mpsc::unbounded_channel();
    let mut second_work = work("quay.io/org/second", "1");
    second_work.credentials = Arc::new(move |_: String| -> Answer {
        let _ = reached_tx.send(());
        Box::pin(async { Ok(Vec::new()) })
    });
    let (second, second_reports) = bed.spawn(second_work);
    reached.recv().await.unwrap();
    tokio::task::yield_now().await;
    assert!(
        second_reports.all().is_empty(),
        "no Pulling while waiting for a slot"
    );
    assert_eq!(bed.fake.count("PullImage"), 1);

    bed.fake.release_pulls();
    assert_eq!(first.await.unwrap().phase, "Succeeded");
    let done = tokio::time::timeout(DEADLINE, second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.phase, "Succeeded");
    let reports = second_reports.all();
    assert_eq!(phases(&reports), ["Pulling"]);
    assert!(reports[0].start_time.is_some());
    assert_eq!(bed.fake.max_concurrent_pulls(), 1);
}

#[tokio::test]
async fn retryable_failures_use_backoff_limit_plus_one_attempts_then_fail_with_the_error() {
    let bed = Bed::start(2).await;
    bed.fake
        .fail_always("PullImage", Code::Unknown, "connection reset by peer");
    let mut work = work("quay.io/org/app", "1");
    work.attempts = 3;
    let (done, reports) = bed.run(work).await;
    assert_eq!(done.phase, "Failed");
    assert_eq!(bed.fake.count("PullImage"), 3);
    let message = done.message.unwrap();
    assert!(
        message.contains("Failed to pull image reference \"quay.io/org/app:1\"")
            && message.contains("connection reset by peer"),
        "{message}"
    );
    assert!(done.start_time.is_some() && done.completion_time.is_some());
    assert_eq!(done.version, Some(1));
    assert!(phases(&reports).iter().all(|p| *p == "Pulling"));
}

#[tokio::test]
async fn a_failed_attempt_is_retried_and_the_next_success_counts() {
    let bed = Bed::start(2).await;
    bed.fake
        .fail_next("PullImage", 1, Code::Unknown, "connection reset by peer");
    let (done, _) = bed.run(work("quay.io/org/app", "1")).await;
    assert_eq!(done.phase, "Succeeded");
    assert_eq!(bed.fake.count("PullImage"), 2);
}

#[tokio::test]
async fn a_missing_tag_fails_after_one_attempt() {
    let bed = Bed::start(2).await;
    bed.fake
        .script_pull("quay.io/org/app:gone", PullScript::not_found());
    let (done, _) = bed.run(work("quay.io/org/app", "gone")).await;
    assert_eq!(done.phase, "Failed");
    assert_eq!(bed.fake.count("PullImage"), 1, "retrying cannot help");
    assert!(done.message.unwrap().contains("not found"));
}

#[tokio::test]
async fn each_attempt_is_cut_at_its_timeout_and_the_tag_fails_after_the_last_one() {
    let bed = Bed::start(2).await;
    bed.fake
        .script_pull("quay.io/org/slow:1", PullScript::succeed_after(HOUR));
    let mut work = work("quay.io/org/slow", "1");
    work.timeout = Duration::from_millis(200);
    work.attempts = 2;
    let (done, _) = bed.run(work).await;
    assert_eq!(done.phase, "Failed");
    assert_eq!(bed.fake.count("PullImage"), 2);
    assert_eq!(
        done.message.as_deref(),
        Some("pulling image quay.io/org/slow:1 timed out after 200ms (attempt 2 of 2)")
    );
    eventually("both timed-out CRI calls are cancelled", || {
        bed.fake.pull_stats().cancelled == 2
    })
    .await;
}

#[tokio::test]
async fn the_active_deadline_ends_a_running_attempt_with_kruises_message() {
    let bed = Bed::start(2).await;
    bed.fake
        .script_pull("quay.io/org/slow:1", PullScript::succeed_after(HOUR));
    let mut work = work("quay.io/org/slow", "1");
    work.timeout = HOUR;
    work.active_deadline = Some(Duration::from_millis(200));
    let (done, _) = bed.run(work).await;
    assert_eq!(done.phase, "Failed");
    assert_eq!(
        done.message.as_deref(),
        Some("pulling exceeds the activeDeadlineSeconds")
    );
    assert!(done.start_time.is_some() && done.completion_time.is_some());
    assert_eq!(bed.fake.count("PullImage"), 1);
    eventually("the CRI call is cancelled", || {
        bed.fake.pull_stats().cancelled == 1
    })
    .await;
}

#[tokio::test]
async fn the_active_deadline_clamps_the_back_off_before_the_next_attempt() {
    let bed = Bed::start(2).await;
    bed.fake
        .fail_always("PullImage", Code::Unknown, "connection reset by peer");
    let mut work = work("quay.io/org/app", "1");
    // Unclamped, the first back-off would outlast the test's deadline.
    work.backoff_initial = HOUR;
    work.active_deadline = Some(Duration::from_millis(300));
    work.attempts = 5;
    let (done, _) = bed.run(work).await;
    assert_eq!(
        done.message.as_deref(),
        Some("pulling exceeds the activeDeadlineSeconds")
    );
    assert_eq!(bed.fake.count("PullImage"), 1);
}

#[tokio::test]
async fn if_not_present_skips_the_pull_when_the_runtime_has_the_normalised_tag() {
    let bed = Bed::start(2).await;
    let id = bed.fake.add_image("docker.io/library/nginx:1.25").unwrap();
    let mut skip = work("nginx", "1.25");
    skip.if_not_present = true;
    let (done, reports) = bed.run(skip).await;
    assert_eq!(done.phase, "Succeeded");
    assert_eq!(done.image_id, Some(format!("nginx@{id}")));
    assert!(done.completion_time.is_some());
    assert!(reports.is_empty(), "never Pulling");
    assert_eq!(bed.fake.count("PullImage"), 0);
    assert_eq!(bed.fake.count("ListImages"), 1);

    let (done, _) = bed.run(work("nginx", "1.25")).await;
    assert_eq!(done.phase, "Succeeded");
    assert_eq!(bed.fake.count("PullImage"), 1, "Always pulls even so");
}

#[tokio::test]
async fn if_not_present_pulls_an_absent_image() {
    let bed = Bed::start(2).await;
    let mut work = work("nginx", "1.25");
    work.if_not_present = true;
    let (done, _) = bed.run(work).await;
    assert_eq!(done.phase, "Succeeded");
    assert_eq!(bed.fake.count("PullImage"), 1);
}

#[tokio::test]
async fn dropping_the_worker_on_a_version_bump_cancels_its_cri_pull() {
    let bed = Bed::start(2).await;
    bed.fake.hold_pulls();
    let (task, _) = bed.spawn(work("quay.io/org/app", "1"));
    eventually("the pull is in flight", || bed.fake.in_flight_pulls() == 1).await;
    // What the controller does when the version changes or the tag goes.
    task.abort();
    eventually("the CRI call is cancelled", || {
        let stats = bed.fake.pull_stats();
        stats.cancelled == 1 && stats.in_flight == 0
    })
    .await;
    assert!(!bed.fake.has_image("quay.io/org/app:1"));
}

#[tokio::test]
async fn an_unusable_reference_fails_at_once_without_calling_the_runtime() {
    let bed = Bed::start(2).await;
    let mut work = work("quay.io/org/app", "1");
    work.reference = Err("invalid image reference \"UPPER/Case:1\"".into());
    let (done, reports) = bed.run(work).await;
    assert_eq!(done.phase, "Failed");
    assert_eq!(
        done.message.as_deref(),
        Some("invalid image reference \"UPPER/Case:1\"")
    );
    assert!(done.start_time.is_none() && done.completion_time.is_some());
    assert!(reports.is_empty());
    assert!(bed.fake.calls().is_empty());
}

#[tokio::test]
async fn matching_credentials_are_tried_in_order_and_never_anonymously() {
    let bed = Bed::start(2).await;
    bed.fake.fail_always(
        "PullImage",
        Code::Unknown,
        "unexpected status: 401 Unauthorized",
    );
    let mut work = work("quay.io/org/private", "1");
    work.credentials = credentials(Ok(vec![
        AuthConfig::new("alice", "a"),
        AuthConfig::new("bob", "b"),
    ]));
    let (done, _) = bed.run(work.clone()).await;
    assert_eq!(done.phase, "Failed");
    assert!(done.message.unwrap().contains("401 Unauthorized"));
    assert_eq!(
        bed.pull_auths(),
        [Some("alice".to_string()), Some("bob".to_string())],
        "rejected credentials are not retried and anonymous is not tried"
    );

    bed.fake.clear_failures();
    bed.fake.clear_calls();
    bed.fake.fail_next(
        "PullImage",
        1,
        Code::Unknown,
        "unexpected status: 401 Unauthorized",
    );
    let (done, _) = bed.run(work).await;
    assert_eq!(done.phase, "Succeeded", "the second credential works");
    assert_eq!(
        bed.pull_auths(),
        [Some("alice".to_string()), Some("bob".to_string())]
    );
}

#[tokio::test]
async fn a_credential_error_fails_the_tag_without_pulling() {
    let bed = Bed::start(2).await;
    let mut work = work("quay.io/org/private", "1");
    work.credentials = credentials(Err("pull secret ns/absent not found".into()));
    let (done, _) = bed.run(work).await;
    assert_eq!(done.phase, "Failed");
    assert_eq!(
        done.message.as_deref(),
        Some("pull secret ns/absent not found")
    );
    assert_eq!(bed.fake.count("PullImage"), 0);
}

#[tokio::test]
async fn two_tags_of_one_reference_share_a_pull_and_both_report_pulling() {
    let bed = Bed::start(2).await;
    bed.fake.hold_pulls();
    let (first, first_reports) = bed.spawn(work("nginx", "1"));
    eventually("the pull is in flight", || bed.fake.in_flight_pulls() == 1).await;
    let (second, second_reports) = bed.spawn(work("docker.io/library/nginx", "1"));
    eventually("the joining tag is Pulling too", || {
        !second_reports.all().is_empty()
    })
    .await;
    bed.fake.release_pulls();
    assert_eq!(first.await.unwrap().phase, "Succeeded");
    assert_eq!(second.await.unwrap().phase, "Succeeded");
    assert_eq!(bed.fake.count("PullImage"), 1);
    assert_eq!(phases(&first_reports.all()), ["Pulling"]);
    assert_eq!(phases(&second_reports.all()), ["Pulling"]);
}
