//! Helpers shared by the integration test suites (`tests/*.rs` declare `mod support;`).

// Every suite compiles this module as its own crate and uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod agent_process;
pub mod recreate_harness;
