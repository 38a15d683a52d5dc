//! The kruised test bed: a Kubernetes API test server with real list/watch semantics,
//! a kubelet stand-in on real containerd, and fault injection. Dev-only.
#![forbid(unsafe_code)]
pub mod apiserver;
pub mod bench;
pub mod bench_manager;
pub mod bench_process;
pub mod bench_recreate;
pub mod bench_report;
pub mod bench_scale;
pub mod bench_suite;
pub mod env;
pub mod fakecri;
pub mod kubelet;
pub mod proxy;
pub mod testenv;
