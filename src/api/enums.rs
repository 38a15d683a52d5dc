//! String vocabularies of the `apps.kruise.io` API (phases, policies, states).
//!
//! Each vocabulary is a Rust enum with the exact wire spelling. Where the upstream schema
//! declares an `enum`, the field itself uses the Rust enum; where it does not, the field stays a
//! `String` (so we accept everything kruise-manager accepts) and the enum is used to compare or
//! write values via `as_str()` and `FromStr`.

/// A string that is not one of the values of a vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {vocabulary} {value:?}, expected one of {expected:?}")]
pub struct UnknownValue {
    /// Name of the vocabulary, e.g. `ImagePullPhase`.
    pub vocabulary: &'static str,
    /// The value that was not recognised.
    pub value: String,
    /// The values the vocabulary accepts.
    pub expected: &'static [&'static str],
}

/// Declares a string vocabulary: a fieldless enum whose variant names are the wire values.
///
/// The generated `JsonSchema` is `{type: string, enum: [...]}` written by hand rather than derived,
/// because schemars renders documented variants as `oneOf`/`const`, which is not a structural
/// schema.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(::serde::Serialize, ::serde::Deserialize)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$variant_meta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The wire spelling of this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => stringify!($variant),)+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::api::UnknownValue;

            fn from_str(value: &str) -> Result<Self, Self::Err> {
                match value {
                    $(stringify!($variant) => Ok(Self::$variant),)+
                    _ => Err($crate::api::UnknownValue {
                        vocabulary: stringify!($name),
                        value: value.to_owned(),
                        expected: &[$(stringify!($variant)),+],
                    }),
                }
            }
        }

        impl ::schemars::JsonSchema for $name {
            fn schema_name() -> ::std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut ::schemars::SchemaGenerator) -> ::schemars::Schema {
                ::schemars::json_schema!({
                    "type": "string",
                    "enum": [$(stringify!($variant)),+],
                })
            }
        }
    };
}

pub(crate) use string_enum;

#[cfg(test)]
mod tests {
    use crate::api::{ContainerRecreateRequestPhase, ImagePullPhase, UnknownValue};

    #[test]
    fn every_value_parses_from_its_wire_spelling() {
        for phase in ImagePullPhase::ALL {
            assert_eq!(phase.as_str().parse(), Ok(*phase));
            assert_eq!(serde_json::to_value(phase).unwrap(), phase.as_str());
        }
    }

    #[test]
    fn an_unknown_value_names_the_vocabulary_and_the_expected_values() {
        let error = "Done".parse::<ContainerRecreateRequestPhase>().unwrap_err();
        assert_eq!(
            error,
            UnknownValue {
                vocabulary: "ContainerRecreateRequestPhase",
                value: "Done".into(),
                expected: &["Pending", "Recreating", "Succeeded", "Failed", "Completed"],
            }
        );
        assert_eq!(
            error.to_string(),
            r#"unknown ContainerRecreateRequestPhase "Done", expected one of ["Pending", "Recreating", "Succeeded", "Failed", "Completed"]"#
        );
    }

    #[test]
    fn the_schema_is_a_plain_string_enum() {
        let schema = schemars::schema_for!(ImagePullPhase);
        assert_eq!(schema.get("type"), Some(&serde_json::json!("string")));
        assert_eq!(
            schema.get("enum"),
            Some(&serde_json::json!([
                "Waiting",
                "Pulling",
                "Succeeded",
                "Failed"
            ]))
        );
    }
}
