//! Placeholder until the API types land.
/// The CRDs as YAML.
pub fn crds_yaml() -> String {
    String::new()
}
