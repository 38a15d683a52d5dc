//! Generated protocol code, kept apart from behaviour.
//!
//! The `.proto` files under `proto/` are subsets of the upstream definitions with the
//! same package, message and field names and numbers (see `build.rs`).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// CRI `runtime.v1`: the kubelet's gRPC API to container runtimes.
pub mod runtime {
    /// CRI `runtime.v1`.
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}

/// containerd's own services, reached on the same socket as CRI.
pub mod containerd {
    /// The content store (pull progress) and version services.
    pub mod services {
        /// `containerd.services.content.v1`.
        pub mod content {
            /// Version 1.
            pub mod v1 {
                tonic::include_proto!("containerd.services.content.v1");
            }
        }
        /// `containerd.services.version.v1`.
        pub mod version {
            /// Version 1.
            pub mod v1 {
                tonic::include_proto!("containerd.services.version.v1");
            }
        }
    }
}

/// gRPC's own services.
pub mod grpc {
    /// The standard health checking protocol, for gRPC probes.
    pub mod health {
        /// `grpc.health.v1`.
        pub mod v1 {
            tonic::include_proto!("grpc.health.v1");
        }
    }
}
