//! Where the Kubernetes client configuration comes from.
//!
//! The order is controller-runtime's `GetConfigOrDie` (§1.2 step 4): `--kubeconfig`,
//! `$KUBECONFIG`, in-cluster, `~/.kube/config`. kube-rs's own `Config::infer` tries the
//! kubeconfig before in-cluster, which would let a stray `~/.kube/config` on a node
//! override the pod's service account.

use std::path::{Path, PathBuf};

use kube::config::{Config, KubeConfigOptions, Kubeconfig};

/// Why no client configuration could be built.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// A kubeconfig file was named but could not be used.
    #[error("cannot use kubeconfig {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// Nothing to use: no flag, no `$KUBECONFIG`, not in a cluster, no `~/.kube/config`.
    #[error(
        "no Kubernetes configuration: pass --kubeconfig, set KUBECONFIG, run in a cluster, or create ~/.kube/config"
    )]
    NotFound,
}

/// Where a configuration came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// `--kubeconfig`.
    Flag(PathBuf),
    /// `$KUBECONFIG`.
    Env(String),
    /// The pod's service account.
    InCluster,
    /// `~/.kube/config`.
    Home(PathBuf),
}

/// Resolves the client configuration in controller-runtime's order.
pub async fn resolve(
    flag: Option<&Path>,
    env: Option<String>,
    home: Option<PathBuf>,
) -> Result<(Config, ConfigSource), KubeconfigError> {
    if let Some(path) = flag {
        return Ok((
            from_file(path).await?,
            ConfigSource::Flag(path.to_path_buf()),
        ));
    }
    if let Some(value) = env.filter(|v| !v.is_empty()) {
        // $KUBECONFIG may list several files; kube merges them like kubectl does.
        let config = Kubeconfig::from_env()
            .map_err(|e| file_error(Path::new(&value), e))?
            .ok_or(KubeconfigError::NotFound)?;
        let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
            .await
            .map_err(|e| file_error(Path::new(&value), e))?;
        return Ok((config, ConfigSource::Env(value)));
    }
    if let Ok(config) = Config::incluster() {
        return Ok((config, ConfigSource::InCluster));
    }
    if let Some(path) = home.map(|h| h.join(".kube/config")).filter(|p| p.exists()) {
        return Ok((from_file(&path).await?, ConfigSource::Home(path)));
    }
    Err(KubeconfigError::NotFound)
}

async fn from_file(path: &Path) -> Result<Config, KubeconfigError> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| file_error(path, e))?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| file_error(path, e))
}

fn file_error(path: &Path, error: impl std::fmt::Display) -> KubeconfigError {
    KubeconfigError::File {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_kubeconfig(dir: &Path, name: &str, server: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: {server}}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{token: t}}\n"
            ),
        )
        .unwrap();
        path
    }

    #[tokio::test]
    async fn flag_wins_over_home() {
        let dir = tempfile::tempdir().unwrap();
        let flag = write_kubeconfig(dir.path(), "flag", "http://127.0.0.1:1");
        std::fs::create_dir_all(dir.path().join(".kube")).unwrap();
        write_kubeconfig(&dir.path().join(".kube"), "config", "http://127.0.0.1:2");
        let (config, source) = resolve(Some(&flag), None, Some(dir.path().to_path_buf()))
            .await
            .unwrap();
        assert_eq!(source, ConfigSource::Flag(flag));
        assert_eq!(config.cluster_url.to_string(), "http://127.0.0.1:1/");
    }

    #[tokio::test]
    async fn home_config_is_the_last_resort() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".kube")).unwrap();
        let home = write_kubeconfig(&dir.path().join(".kube"), "config", "http://127.0.0.1:2");
        // Not in a cluster here: no service-account token is mounted on test machines.
        let (config, source) = resolve(None, None, Some(dir.path().to_path_buf()))
            .await
            .unwrap();
        assert_eq!(source, ConfigSource::Home(home));
        assert_eq!(config.cluster_url.to_string(), "http://127.0.0.1:2/");
    }

    #[tokio::test]
    async fn nothing_found_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = resolve(None, None, Some(dir.path().to_path_buf()))
            .await
            .unwrap_err();
        assert!(matches!(error, KubeconfigError::NotFound));
    }

    #[tokio::test]
    async fn unreadable_flag_file_names_the_file() {
        let error = resolve(Some(Path::new("/nonexistent/kubeconfig")), None, None)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/kubeconfig"),
            "{error}"
        );
    }
}
