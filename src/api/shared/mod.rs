//! Types whose schema is identical in `v1alpha1` and `v1beta1`.
//!
//! Each version module re-exports the shared types it uses, so `v1alpha1::ImageTagSpec` and
//! `v1beta1::ImageTagSpec` are the same type. A type gets a version-specific copy only where the
//! upstream schemas differ (for example `pullSecrets[].mode` exists only in `v1beta1`).

pub mod containerrecreaterequest;
pub mod imagelistpulljob;
pub mod imagepulljob;
pub mod nodeimage;

use serde::{Deserialize, Deserializer};

/// Deserializes a spec for which an absent (or `null`) `spec` means the empty spec.
///
/// The upstream schemas do not require `spec`, but kube-derive's root struct does. For kinds
/// whose spec has no required field, `Fields` (a mirror of the spec's fields) is read through an
/// `Option`, which serde also calls for a missing field, so such objects still deserialize.
pub(crate) fn spec_or_default<'de, D, Fields, Spec>(deserializer: D) -> Result<Spec, D::Error>
where
    D: Deserializer<'de>,
    Fields: Deserialize<'de> + Into<Spec>,
    Spec: Default,
{
    Ok(Option::<Fields>::deserialize(deserializer)?
        .map(Into::into)
        .unwrap_or_default())
}

/// Implements the conversions of a version's spec newtype around a shared spec.
///
/// kube-derive generates the root object from the struct it is derived on, so every version of
/// a kind needs its own spec type even when the schemas are identical. The newtype is
/// `#[serde(transparent)]`, so it has the wire format and schema of the shared spec, and it
/// dereferences to it.
macro_rules! versioned_spec {
    ($spec:ident => $shared:ty) => {
        impl ::std::ops::Deref for $spec {
            type Target = $shared;

            fn deref(&self) -> &$shared {
                &self.0
            }
        }

        impl ::std::ops::DerefMut for $spec {
            fn deref_mut(&mut self) -> &mut $shared {
                &mut self.0
            }
        }

        impl From<$shared> for $spec {
            fn from(spec: $shared) -> Self {
                Self(spec)
            }
        }

        impl From<$spec> for $shared {
            fn from(spec: $spec) -> Self {
                spec.0
            }
        }
    };
}

pub(crate) use versioned_spec;
