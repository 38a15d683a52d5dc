# kruised container image: agent (default command) and `kruised manager`.
#
#   docker build -t kruised:v0.1.0 .
#
# Stage 1 builds a release binary. The musl target is not part of the offline toolchain
# this project is built with, so the binary is glibc-linked; stage 2 ships it on an empty
# base with only the libraries `ldd` lists (deploy/image/assemble-rootfs.sh, the same
# script tests/image_containerd.rs uses to build and run the image on real containerd).
FROM rust:1.89-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin kruised \
    && sh deploy/image/assemble-rootfs.sh target/release/kruised /rootfs

FROM scratch
COPY --from=build /rootfs/ /
# Non-root by default. The DaemonSet overrides this to uid 0 with every capability
# dropped only when the runtime socket's group does not allow otherwise (--socket-group).
USER 65532:65532
EXPOSE 10221
ENTRYPOINT ["/usr/local/bin/kruised"]
