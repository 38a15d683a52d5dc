//! `testbed`: the dev-only test bed's command line.
fn main() {}
