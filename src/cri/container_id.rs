//! Container IDs as Kubernetes writes them in pod status: `<runtime>://<id>`.

use std::fmt;

/// A container ID split into the runtime name (`containerd`, `cri-o`, `docker`) and the
/// runtime's own ID. The runtime name selects which CRI endpoint owns the container (§2.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerId {
    /// The runtime name, as the runtime reports it in CRI `Version.runtime_name`.
    pub runtime: String,
    /// The runtime's ID of the container.
    pub id: String,
}

/// Why a string is not a `<runtime>://<id>` container ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerIdError {
    /// There is no `://` separator.
    #[error("invalid container ID {0:?}: expected <runtime>://<id>")]
    MissingSeparator(String),
    /// The runtime or the ID part is empty.
    #[error("invalid container ID {0:?}: empty runtime or ID")]
    EmptyPart(String),
}

impl ContainerId {
    /// Parses `containerd://abc`. Surrounding whitespace is rejected rather than trimmed:
    /// the kubelet never writes it, so its presence means the input is not a kubelet ID.
    pub fn parse(value: &str) -> Result<Self, ContainerIdError> {
        let (runtime, id) = value
            .split_once("://")
            .ok_or_else(|| ContainerIdError::MissingSeparator(value.to_string()))?;
        if runtime.is_empty() || id.is_empty() {
            return Err(ContainerIdError::EmptyPart(value.to_string()));
        }
        Ok(Self {
            runtime: runtime.to_string(),
            id: id.to_string(),
        })
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.runtime, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_runtime_prefix_and_id() {
        let id = ContainerId::parse("containerd://0123abc").unwrap();
        assert_eq!(id.runtime, "containerd");
        assert_eq!(id.id, "0123abc");
        assert_eq!(id.to_string(), "containerd://0123abc");
    }

    #[test]
    fn rejects_ids_without_runtime_or_separator() {
        assert_eq!(
            ContainerId::parse("0123abc"),
            Err(ContainerIdError::MissingSeparator("0123abc".into()))
        );
        assert!(matches!(
            ContainerId::parse("://abc"),
            Err(ContainerIdError::EmptyPart(_))
        ));
        assert!(matches!(
            ContainerId::parse("containerd://"),
            Err(ContainerIdError::EmptyPart(_))
        ));
    }

    #[test]
    fn keeps_everything_after_the_first_separator() {
        let id = ContainerId::parse("cri-o://a://b").unwrap();
        assert_eq!(id.runtime, "cri-o");
        assert_eq!(id.id, "a://b");
    }
}
