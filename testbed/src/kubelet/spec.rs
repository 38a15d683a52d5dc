//! Pod spec → CRI configs: the sandbox and container configs, labels and annotations the
//! kubelet writes (spec/kruise-daemon.md §2.4 lists what kruise-daemon reads back).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, EnvVar, ObjectFieldSelector, Pod};
use kruised::cri::fake::{
    CONTAINER_HASH_ANNOTATION, CONTAINER_NAME_LABEL, CONTAINER_PORTS_ANNOTATION,
    CONTAINER_PRE_STOP_HANDLER_ANNOTATION, CONTAINER_RESTART_COUNT_ANNOTATION,
    POD_DELETION_GRACE_PERIOD_ANNOTATION, POD_NAME_LABEL, POD_NAMESPACE_LABEL,
    POD_TERMINATION_GRACE_PERIOD_ANNOTATION, POD_UID_LABEL, TERMINATION_MESSAGE_PATH_ANNOTATION,
    TERMINATION_MESSAGE_POLICY_ANNOTATION,
};
use kruised::proto::runtime::v1 as cri;

/// Sandbox label naming the node whose kubelet stand-in owns the sandbox. The real kubelet
/// has no such label: it owns every sandbox of its runtime. Several stand-ins may share one
/// containerd in tests, so each one only adopts and garbage-collects its own sandboxes.
pub const NODE_NAME_LABEL: &str = "testbed.kruised.io/node-name";

/// The address of every pod and of the node: pods run in the host network namespace, and
/// nothing here routes beyond loopback (spec/test-environment.md §1).
pub const NODE_IP: &str = "127.0.0.1";

/// Pod annotation: `"true"` runs the pod in its own network namespace (CRI `NamespaceMode`
/// POD) instead of the node's. The test environment's fake CNI plugin gives such a sandbox
/// the IP 127.0.0.2 and no route out of it (spec/test-environment.md §4.5), so the pod is
/// unreachable, but its IP in CRI `PodSandboxStatus` is distinct from the node's: tests of
/// code that looks the pod IP up in CRI (host-less HTTP hooks) opt in with this.
pub const POD_NETWORK_ANNOTATION: &str = "testbed.kruised.io/pod-network";

/// Whether `pod` asks for its own network namespace ([`POD_NETWORK_ANNOTATION`]).
pub fn has_pod_network(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(POD_NETWORK_ANNOTATION))
        .is_some_and(|value| value == "true")
}

/// The kubelet's default `terminationGracePeriodSeconds` when the spec has none.
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;

/// The pod's identity, as the kubelet labels its sandboxes and containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
}

impl PodIdentity {
    /// The identity of `pod`; empty strings where the API left fields out.
    pub fn of(pod: &Pod) -> Self {
        Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        }
    }

    /// The labels the kubelet puts on both sandboxes and containers.
    fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (POD_UID_LABEL.to_string(), self.uid.clone()),
            (POD_NAME_LABEL.to_string(), self.name.clone()),
            (POD_NAMESPACE_LABEL.to_string(), self.namespace.clone()),
        ])
    }
}

impl std::fmt::Display for PodIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The pod's log folder, `<pod_log_dir>/<namespace>_<name>_<uid>`, as the kubelet names it.
pub fn pod_log_directory(pod_log_dir: &Path, pod: &PodIdentity) -> PathBuf {
    pod_log_dir.join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid))
}

/// The container's log file relative to the sandbox's log folder: `<name>/<attempt>.log`.
pub fn container_log_path(name: &str, attempt: u32) -> String {
    format!("{name}/{attempt}.log")
}

/// The cgroupfs parent of the pod: `<prefix>/pod<uid>` (spec/test-environment.md §4.6).
pub fn cgroup_parent(prefix: &str, uid: &str) -> String {
    format!("{}/pod{uid}", prefix.trim_end_matches('/'))
}

/// The namespace modes: the node's network unless [`has_pod_network`]; the PID namespace
/// shared in the pod when `shareProcessNamespace` is set.
fn namespace_options(pod: &Pod) -> cri::NamespaceOption {
    let share_pid = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.share_process_namespace)
        .unwrap_or(false);
    cri::NamespaceOption {
        // The node's network unless asked: the only CNI here is the test environment's
        // fake one (spec/test-environment.md §4.5, §5.3).
        network: if has_pod_network(pod) {
            cri::NamespaceMode::Pod as i32
        } else {
            cri::NamespaceMode::Node as i32
        },
        pid: if share_pid {
            cri::NamespaceMode::Pod as i32
        } else {
            cri::NamespaceMode::Container as i32
        },
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn privileged(container: &Container) -> bool {
    container
        .security_context
        .as_ref()
        .and_then(|context| context.privileged)
        .unwrap_or(false)
}

/// The `PodSandboxConfig` the kubelet sends for `pod`'s sandbox number `attempt`.
pub fn sandbox_config(
    pod: &Pod,
    node_name: &str,
    pod_log_dir: &Path,
    cgroup_parent_prefix: &str,
    attempt: u32,
) -> cri::PodSandboxConfig {
    let identity = PodIdentity::of(pod);
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.extend(identity.labels());
    labels.insert(NODE_NAME_LABEL.to_string(), node_name.to_string());
    let annotations = pod
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let any_privileged = pod
        .spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .any(privileged);
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: identity.name.clone(),
            uid: identity.uid.clone(),
            namespace: identity.namespace.clone(),
            attempt,
        }),
        // containerd 1.6 cannot set a hostname in the host UTS namespace; the kubelet
        // sends none for host-network pods (spec/test-environment.md §5.1), and the pod's
        // name for the others.
        hostname: if has_pod_network(pod) {
            identity.name.clone()
        } else {
            String::new()
        },
        log_directory: pod_log_directory(pod_log_dir, &identity)
            .display()
            .to_string(),
        labels,
        annotations,
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent(cgroup_parent_prefix, &identity.uid),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                privileged: any_privileged,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The kubelet's `io.kubernetes.container.hash` of a container: FNV-1a 32 over the
/// go-spew `%#v` rendering of the JSON of `{"image", "name"}` (kubelet ≥ 1.31 hashes only
/// these two fields, so that resizes and other in-place changes do not restart containers).
pub fn container_hash(container: &Container) -> u64 {
    // Go's json.Marshal of a map sorts the keys.
    let json = format!(
        "{{\"image\":{},\"name\":{}}}",
        go_json_string(container.image.as_deref().unwrap_or("")),
        go_json_string(&container.name)
    );
    u64::from(fnv1a32(spew_bytes(json.as_bytes()).as_bytes()))
}

/// The annotation value of [`container_hash`]: lower-case hex without padding, as Go's
/// `strconv.FormatUint(hash, 16)`.
pub fn container_hash_hex(container: &Container) -> String {
    format!("{:x}", container_hash(container))
}

/// go-spew's `%#v` of a `[]byte`, the input `hashutil.DeepHashObject` feeds the hasher.
fn spew_bytes(bytes: &[u8]) -> String {
    let decimals: Vec<String> = bytes.iter().map(u8::to_string).collect();
    format!("([]uint8)[{}]", decimals.join(" "))
}

/// A JSON string as Go's `encoding/json` writes it: serde's escaping plus Go's HTML-safe
/// escapes of `<`, `>`, `&` and of U+2028/U+2029.
fn go_json_string(text: &str) -> String {
    let json = serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string());
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// The `ContainerConfig` the kubelet sends for `container` of `pod`, attempt `attempt`.
pub fn container_config(pod: &Pod, container: &Container, attempt: u32) -> cri::ContainerConfig {
    let identity = PodIdentity::of(pod);
    let spec = pod.spec.as_ref();
    let mut labels = identity.labels();
    labels.insert(CONTAINER_NAME_LABEL.to_string(), container.name.clone());

    let mut annotations = HashMap::from([
        (
            CONTAINER_HASH_ANNOTATION.to_string(),
            container_hash_hex(container),
        ),
        (
            CONTAINER_RESTART_COUNT_ANNOTATION.to_string(),
            attempt.to_string(),
        ),
        (
            TERMINATION_MESSAGE_PATH_ANNOTATION.to_string(),
            container
                .termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".to_string()),
        ),
        (
            TERMINATION_MESSAGE_POLICY_ANNOTATION.to_string(),
            container
                .termination_message_policy
                .clone()
                .unwrap_or_else(|| "File".to_string()),
        ),
        (
            POD_TERMINATION_GRACE_PERIOD_ANNOTATION.to_string(),
            spec.and_then(|spec| spec.termination_grace_period_seconds)
                .unwrap_or(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS)
                .to_string(),
        ),
    ]);
    if let Some(grace) = pod.metadata.deletion_grace_period_seconds {
        annotations.insert(
            POD_DELETION_GRACE_PERIOD_ANNOTATION.to_string(),
            grace.to_string(),
        );
    }
    if let Some(pre_stop) = container
        .lifecycle
        .as_ref()
        .and_then(|lifecycle| lifecycle.pre_stop.as_ref())
        && let Ok(json) = serde_json::to_string(pre_stop)
    {
        annotations.insert(CONTAINER_PRE_STOP_HANDLER_ANNOTATION.to_string(), json);
    }
    if let Some(ports) = container.ports.as_ref().filter(|ports| !ports.is_empty())
        && let Ok(json) = serde_json::to_string(ports)
    {
        annotations.insert(CONTAINER_PORTS_ANNOTATION.to_string(), json);
    }

    let env = container_env(pod, container);
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let expand_all = |items: &Option<Vec<String>>| -> Vec<String> {
        items
            .iter()
            .flatten()
            .map(|item| expand(item, &lookup))
            .collect()
    };
    let image = container.image.clone().unwrap_or_default();
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: container.name.clone(),
            attempt,
        }),
        image: Some(cri::ImageSpec {
            image: image.clone(),
            user_specified_image: image,
            ..Default::default()
        }),
        command: expand_all(&container.command),
        args: expand_all(&container.args),
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs: env
            .iter()
            .map(|(key, value)| cri::KeyValue {
                key: key.clone(),
                value: value.clone().into_bytes(),
            })
            .collect(),
        labels,
        annotations,
        log_path: container_log_path(&container.name, attempt),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                privileged: privileged(container),
                namespace_options: Some(namespace_options(pod)),
                run_as_user: container
                    .security_context
                    .as_ref()
                    .and_then(|context| context.run_as_user)
                    .map(|value| cri::Int64Value { value }),
                run_as_group: container
                    .security_context
                    .as_ref()
                    .and_then(|context| context.run_as_group)
                    .map(|value| cri::Int64Value { value }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The container's environment in spec order: literal values (with `$(VAR)` references to
/// earlier variables expanded) and `fieldRef`s. Secrets, config maps and resource fields
/// are not resolved; those variables are left out.
pub fn container_env(pod: &Pod, container: &Container) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for var in container.env.iter().flatten() {
        match resolve_env_var(pod, var, &env) {
            Some(value) => env.push((var.name.clone(), value)),
            None => tracing::debug!(
                container = %container.name,
                variable = %var.name,
                "environment variable source not supported by the test bed kubelet; left out"
            ),
        }
    }
    env
}

fn resolve_env_var(pod: &Pod, var: &EnvVar, earlier: &[(String, String)]) -> Option<String> {
    if let Some(source) = &var.value_from {
        return source
            .field_ref
            .as_ref()
            .and_then(|field| field_value(pod, field));
    }
    let lookup = |name: &str| {
        earlier
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    Some(expand(var.value.as_deref().unwrap_or(""), &lookup))
}

/// The downward API value of `field` for `pod`, as the kubelet resolves `fieldRef`.
fn field_value(pod: &Pod, field: &ObjectFieldSelector) -> Option<String> {
    let metadata = &pod.metadata;
    let path = field.field_path.as_str();
    let subscript = |prefix: &str| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(key.to_string())
    };
    if let Some(key) = subscript("metadata.labels['") {
        return Some(
            metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(&key).cloned())
                .unwrap_or_default(),
        );
    }
    if let Some(key) = subscript("metadata.annotations['") {
        return Some(
            metadata
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(&key).cloned())
                .unwrap_or_default(),
        );
    }
    let spec = pod.spec.as_ref();
    match path {
        "metadata.name" => metadata.name.clone(),
        "metadata.namespace" => metadata.namespace.clone(),
        "metadata.uid" => metadata.uid.clone(),
        "spec.nodeName" => spec.and_then(|spec| spec.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|spec| spec.service_account_name.clone()),
        "status.hostIP" | "status.podIP" => Some(NODE_IP.to_string()),
        "status.hostIPs" | "status.podIPs" => Some(NODE_IP.to_string()),
        _ => None,
    }
}

/// Kubernetes' `$(VAR)` expansion (`third_party/forked/golang/expansion`): `$$` is a
/// literal `$`, `$(NAME)` is replaced when `lookup` knows NAME and kept as-is otherwise.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut output = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(position) = rest.find('$') {
        output.push_str(&rest[..position]);
        let after = &rest[position + 1..];
        match after.chars().next() {
            // A trailing `$` is literal.
            None => {
                output.push('$');
                rest = after;
            }
            Some('$') => {
                output.push('$');
                rest = &after[1..];
            }
            Some('(') => match after.find(')') {
                Some(close) => {
                    let name = &after[1..close];
                    match lookup(name) {
                        Some(value) => output.push_str(&value),
                        None => {
                            output.push_str("$(");
                            output.push_str(name);
                            output.push(')');
                        }
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    output.push_str("$(");
                    rest = &after[1..];
                }
            },
            Some(other) => {
                output.push('$');
                output.push(other);
                rest = &after[other.len_utf8()..];
            }
        }
    }
    output.push_str(rest);
    output
}

/// The image pull policy in effect: the spec's, else the API server's default
/// (`Always` for `:latest` or untagged images, `IfNotPresent` otherwise).
pub fn pull_policy(container: &Container) -> String {
    if let Some(policy) = container
        .image_pull_policy
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        return policy.to_string();
    }
    let image = container.image.as_deref().unwrap_or("");
    if image.contains('@') {
        return "IfNotPresent".to_string();
    }
    let last_segment = image.rsplit('/').next().unwrap_or(image);
    match last_segment.split_once(':') {
        Some((_, "latest")) | None => "Always".to_string(),
        Some(_) => "IfNotPresent".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerPort, EnvVarSource, ExecAction, Lifecycle, LifecycleHandler, PodSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn container(name: &str, image: &str) -> Container {
        Container {
            name: name.to_string(),
            image: Some(image.to_string()),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                namespace: Some("apps".into()),
                uid: Some("1234-abcd".into()),
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                annotations: Some(BTreeMap::from([("note".into(), "x".into())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                containers,
                termination_grace_period_seconds: Some(7),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn container_hash_matches_the_kubelet_1_31_test_vector() {
        // k8s pkg/kubelet/container/helpers_test.go: sampleV131HashValue = 0x8e45cbd0 for a
        // container named test_container with image foo/image:v1 (other fields ignored).
        let mut sample = container("test_container", "foo/image:v1");
        sample.command = Some(vec!["/bin/testcmd".into()]);
        assert_eq!(container_hash(&sample), 0x8e45_cbd0);
        assert_eq!(container_hash_hex(&sample), "8e45cbd0");
    }

    #[test]
    fn container_hash_is_stable_and_changes_with_the_image() {
        let a = container("app", "busybox:1");
        assert_eq!(container_hash(&a), container_hash(&a.clone()));
        assert_ne!(
            container_hash(&a),
            container_hash(&container("app", "busybox:2"))
        );
        assert_ne!(
            container_hash(&a),
            container_hash(&container("sidecar", "busybox:1"))
        );
    }

    #[test]
    fn go_json_escapes_html_characters() {
        assert_eq!(go_json_string("a<b>&c"), r#""a\u003cb\u003e\u0026c""#);
    }

    #[test]
    fn the_pod_network_annotation_gives_the_sandbox_its_own_network_and_a_hostname() {
        let mut pod = pod(vec![container("app", "busybox:1")]);
        pod.metadata
            .annotations
            .get_or_insert_default()
            .insert(POD_NETWORK_ANNOTATION.into(), "true".into());
        let config = sandbox_config(&pod, "node-a", Path::new("/logs"), "/testbed/", 0);
        assert_eq!(config.hostname, "web-0");
        let namespaces = config
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(namespaces.network, cri::NamespaceMode::Pod as i32);
    }

    #[test]
    fn sandbox_config_is_host_network_with_empty_hostname_and_cgroupfs_parent() {
        let pod = pod(vec![container("app", "busybox:1")]);
        let config = sandbox_config(&pod, "node-a", Path::new("/logs"), "/testbed/", 2);
        assert_eq!(config.hostname, "");
        let metadata = config.metadata.unwrap();
        assert_eq!(
            (
                metadata.name.as_str(),
                metadata.namespace.as_str(),
                metadata.uid.as_str(),
                metadata.attempt
            ),
            ("web-0", "apps", "1234-abcd", 2)
        );
        assert_eq!(config.log_directory, "/logs/apps_web-0_1234-abcd");
        assert_eq!(config.labels["io.kubernetes.pod.uid"], "1234-abcd");
        assert_eq!(config.labels["io.kubernetes.pod.name"], "web-0");
        assert_eq!(config.labels["io.kubernetes.pod.namespace"], "apps");
        assert_eq!(config.labels["app"], "web");
        assert_eq!(config.labels[NODE_NAME_LABEL], "node-a");
        assert_eq!(config.annotations["note"], "x");
        let linux = config.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "/testbed/pod1234-abcd");
        let namespaces = linux.security_context.unwrap().namespace_options.unwrap();
        assert_eq!(namespaces.network, cri::NamespaceMode::Node as i32);
        assert_eq!(namespaces.pid, cri::NamespaceMode::Container as i32);
    }

    #[test]
    fn container_config_carries_the_kubelet_labels_and_annotations() {
        let mut app = container("app", "busybox:1");
        app.command = Some(vec!["/bin/sh".into(), "-c".into()]);
        app.args = Some(vec!["echo $(GREETING) $$HOME $(MISSING)".into()]);
        app.working_dir = Some("/tmp".into());
        app.env = Some(vec![
            EnvVar {
                name: "NAME".into(),
                value: Some("world".into()),
                ..Default::default()
            },
            EnvVar {
                name: "GREETING".into(),
                value: Some("hello $(NAME)".into()),
                ..Default::default()
            },
            EnvVar {
                name: "APP".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.labels['app']".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]);
        app.lifecycle = Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec!["sleep".into(), "1".into()]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        app.ports = Some(vec![ContainerPort {
            container_port: 8080,
            name: Some("http".into()),
            ..Default::default()
        }]);
        let mut pod = pod(vec![app.clone()]);
        pod.metadata.deletion_grace_period_seconds = Some(3);

        let config = container_config(&pod, &app, 4);
        let metadata = config.metadata.as_ref().unwrap();
        assert_eq!((metadata.name.as_str(), metadata.attempt), ("app", 4));
        assert_eq!(config.labels["io.kubernetes.pod.uid"], "1234-abcd");
        assert_eq!(config.labels["io.kubernetes.pod.name"], "web-0");
        assert_eq!(config.labels["io.kubernetes.pod.namespace"], "apps");
        assert_eq!(config.labels["io.kubernetes.container.name"], "app");
        assert_eq!(config.labels.len(), 4);
        let annotations = &config.annotations;
        assert_eq!(
            annotations["io.kubernetes.container.hash"],
            container_hash_hex(&app)
        );
        assert_eq!(annotations["io.kubernetes.container.restartCount"], "4");
        assert_eq!(
            annotations["io.kubernetes.container.terminationMessagePath"],
            "/dev/termination-log"
        );
        assert_eq!(
            annotations["io.kubernetes.container.terminationMessagePolicy"],
            "File"
        );
        assert_eq!(annotations["io.kubernetes.pod.terminationGracePeriod"], "7");
        assert_eq!(annotations["io.kubernetes.pod.deletionGracePeriod"], "3");
        assert_eq!(
            annotations["io.kubernetes.container.preStopHandler"],
            r#"{"exec":{"command":["sleep","1"]}}"#
        );
        let ports: serde_json::Value =
            serde_json::from_str(&annotations["io.kubernetes.container.ports"]).unwrap();
        assert_eq!(
            ports,
            serde_json::json!([{"containerPort": 8080, "name": "http"}])
        );
        assert_eq!(config.command, vec!["/bin/sh", "-c"]);
        assert_eq!(config.args, vec!["echo hello world $HOME $(MISSING)"]);
        assert_eq!(config.working_dir, "/tmp");
        let env: Vec<(String, String)> = config
            .envs
            .iter()
            .map(|kv| (kv.key.clone(), String::from_utf8(kv.value.clone()).unwrap()))
            .collect();
        assert_eq!(
            env,
            vec![
                ("NAME".to_string(), "world".to_string()),
                ("GREETING".to_string(), "hello world".to_string()),
                ("APP".to_string(), "web".to_string()),
            ]
        );
        assert_eq!(config.log_path, "app/4.log");
        assert_eq!(config.image.as_ref().unwrap().image, "busybox:1");
    }

    #[test]
    fn annotations_without_pre_stop_or_ports_leave_them_out() {
        let app = container("app", "busybox:1");
        let config = container_config(&pod(vec![app.clone()]), &app, 0);
        assert!(
            !config
                .annotations
                .contains_key(CONTAINER_PRE_STOP_HANDLER_ANNOTATION)
        );
        assert!(!config.annotations.contains_key(CONTAINER_PORTS_ANNOTATION));
        assert!(
            !config
                .annotations
                .contains_key(POD_DELETION_GRACE_PERIOD_ANNOTATION)
        );
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let lookup = |name: &str| (name == "A").then(|| "x".to_string());
        assert_eq!(expand("$(A)-$(B)", &lookup), "x-$(B)");
        assert_eq!(expand("$$(A)", &lookup), "$(A)");
        assert_eq!(expand("cost $5 $", &lookup), "cost $5 $");
        assert_eq!(expand("$(A", &lookup), "$(A");
        assert_eq!(expand("é$(A)é", &lookup), "éxé");
    }

    #[test]
    fn default_pull_policy_depends_on_the_tag() {
        assert_eq!(pull_policy(&container("a", "busybox")), "Always");
        assert_eq!(pull_policy(&container("a", "busybox:latest")), "Always");
        assert_eq!(
            pull_policy(&container("a", "127.0.0.1:5000/test/busybox")),
            "Always"
        );
        assert_eq!(
            pull_policy(&container("a", "127.0.0.1:5000/test/busybox:1")),
            "IfNotPresent"
        );
        assert_eq!(
            pull_policy(&container("a", "busybox@sha256:ab")),
            "IfNotPresent"
        );
        let mut never = container("a", "busybox");
        never.image_pull_policy = Some("Never".into());
        assert_eq!(pull_policy(&never), "Never");
    }
}
