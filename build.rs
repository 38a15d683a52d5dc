//! Compiles the CRI, containerd and gRPC health protocol subsets in `proto/` with protox (pure Rust),
//! so a fresh machine needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/runtime/v1/api.proto",
        "proto/containerd/services/content/v1/content.proto",
        "proto/containerd/services/version/v1/version.proto",
        "proto/grpc/health/v1/health.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
