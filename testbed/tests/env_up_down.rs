//! `testbed up` / `testbed down` end to end, as a developer uses them: a Pod applied with
//! kubectl runs in containerd, a container stopped through CRI is restarted as attempt 1,
//! and `down` leaves nothing running.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use kruised::cri::{CriClient, RuntimeEndpoint};

fn testbed(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "testbed {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn kubectl(env: &HashMap<String, String>, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", &env["KUBECONFIG"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn eventually(what: &str, mut check: impl FnMut() -> Option<String>) -> String {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn up_runs_a_kubectl_pod_in_containerd_and_down_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_str().unwrap().to_string();
    let printed = testbed(&["up", "--dir", &dir_path]);
    let env: HashMap<String, String> = printed
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for key in [
        "KUBECONFIG",
        "RUNTIME_ENDPOINT",
        "NODE_NAME",
        "REGISTRY",
        "REGISTRY_AUTH",
        "REGISTRY_USER",
        "REGISTRY_PASSWORD",
        "APISERVER_ADMIN",
    ] {
        assert!(env.contains_key(key), "{key} missing from:\n{printed}");
    }
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: demo}}\nspec:\n  nodeName: {}\n  containers:\n  - name: main\n    image: {}/test/busybox:1\n    command: [/bin/sh, -c, \"trap 'exit 0' TERM; while true; do sleep 0.2; done\"]\n",
        env["NODE_NAME"], env["REGISTRY"]
    );
    kubectl(&env, &["apply", "-f", "-"], Some(&pod));
    let first = eventually("the pod to run", || {
        let id = kubectl(
            &env,
            &[
                "get",
                "pod",
                "demo",
                "-o",
                "jsonpath={.status.containerStatuses[0].containerID}",
            ],
            None,
        );
        id.starts_with("containerd://").then_some(id)
    });
    let yaml = kubectl(&env, &["get", "pod", "demo", "-o", "yaml"], None);
    assert!(yaml.contains("phase: Running"), "{yaml}");

    let cri = CriClient::connect(
        &RuntimeEndpoint::parse(&env["RUNTIME_ENDPOINT"]).unwrap(),
        None,
    )
    .await
    .unwrap();
    cri.stop_container(
        first.trim_start_matches("containerd://"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let second = eventually("restartCount 1 with a new container", || {
        let out = kubectl(
            &env,
            &[
                "get",
                "pod",
                "demo",
                "-o",
                "jsonpath={.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].containerID}",
            ],
            None,
        );
        let (count, id) = out.split_once(' ')?;
        (count == "1" && id != first && id.starts_with("containerd://")).then(|| id.to_string())
    });
    assert_ne!(second, first);

    testbed(&["down", "--dir", &dir_path]);
    let leftovers: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&dir_path))
        .collect();
    assert!(leftovers.is_empty(), "processes left: {leftovers:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&dir_path), "mounts left under {dir_path}");
}
