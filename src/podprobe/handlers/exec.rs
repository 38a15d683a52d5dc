//! Exec probes: CRI `ExecSync` with the probe timeout (kruise's `execInContainer` under the
//! kubelet's exec prober, §5.3). Exit 0 succeeds with stdout; another exit code fails with
//! stderr; a timeout fails with the kubelet's `command "…" timed out`.

use std::time::Duration;

use tonic::Code;

use super::{Outcome, ProbeError};
use crate::cri::CriClient;

/// The most output the kubelet's exec prober reads (`maxReadLength`, 10 KiB).
const MAX_OUTPUT_BYTES: usize = 10 * 1024;

/// Runs `command` in the container.
pub async fn probe(
    cri: &CriClient,
    container_id: &str,
    command: Vec<String>,
    timeout: Duration,
) -> Result<Outcome, ProbeError> {
    match cri.exec_sync(container_id, command.clone(), timeout).await {
        Ok(response) if response.exit_code == 0 => Ok(Outcome::Success(output(&response.stdout))),
        Ok(response) => Ok(Outcome::Failure(output(&response.stderr))),
        Err(error) if error.code() == Some(Code::DeadlineExceeded) => Ok(Outcome::Failure(
            format!("command {} timed out", super::go_quote(&command.join(" "))),
        )),
        Err(error) => Err(ProbeError::Exec(error)),
    }
}

fn output(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_OUTPUT_BYTES)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::fake::{ExecScript, KubeletContainer, KubeletPod};
    use crate::podprobe::testing::World;

    async fn world() -> (World, String) {
        let world = World::start(
            KubeletPod::new("ns", "pod").container(KubeletContainer::new("app", "busybox:1")),
        )
        .await;
        let id = world.id("app");
        (world, id)
    }

    fn command(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|part| (*part).to_owned()).collect()
    }

    #[tokio::test]
    async fn exit_zero_succeeds_with_stdout_and_nonzero_fails_with_stderr() {
        let (world, id) = world().await;
        let (handle, cri) = (&world.handle, &world.cri);
        handle.script_exec(&id, ["check"], ExecScript::exit(0).with_stdout("fine\n"));
        handle.script_exec(
            &id,
            ["broken"],
            ExecScript::exit(3)
                .with_stdout("ignored")
                .with_stderr("it broke"),
        );
        let second = Duration::from_secs(1);
        assert_eq!(
            probe(cri, &id, command(&["check"]), second).await.unwrap(),
            Outcome::Success("fine\n".into())
        );
        assert_eq!(
            probe(cri, &id, command(&["broken"]), second).await.unwrap(),
            Outcome::Failure("it broke".into())
        );
    }

    #[tokio::test]
    async fn the_probe_timeout_is_sent_and_a_runtime_timeout_fails_the_probe() {
        let (world, id) = world().await;
        let (handle, cri) = (&world.handle, &world.cri);
        handle.fail_next("ExecSync", 1, Code::DeadlineExceeded, "timeout 2s exceeded");
        let outcome = probe(
            cri,
            &id,
            command(&["sh", "-c", "sleep 9"]),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        assert_eq!(
            outcome,
            Outcome::Failure("command \"sh -c sleep 9\" timed out".into())
        );
        let timeouts: Vec<i64> = handle
            .calls_of("ExecSync")
            .into_iter()
            .map(|call| match call {
                crate::cri::fake::Call::ExecSync(request) => request.timeout,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(timeouts, [2]);
    }

    #[tokio::test]
    async fn an_exec_the_runtime_refuses_is_an_error_not_a_failure() {
        let (world, _id) = world().await;
        let cri = &world.cri;
        let error = probe(
            cri,
            "no-such-container",
            command(&["true"]),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(matches!(error, ProbeError::Exec(_)), "{error}");
    }
}
