#!/bin/sh
# assemble-rootfs.sh BINARY ROOTFS: the image's whole file tree, distroless style: the
# binary, exactly the shared libraries `ldd` says it loads, an /etc/passwd and /etc/group
# with the unprivileged user 65532 ("nonroot"), CA certificates, and an empty /tmp.
# Nothing else: no shell, no package manager. Used by the Dockerfile and by
# tests/image_containerd.rs, so the tested tree is the shipped tree.
set -eu
bin=$1
root=$2
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp"
chmod 1777 "$root/tmp"
cp "$bin" "$root/usr/local/bin/kruised"
chmod 0755 "$root/usr/local/bin/kruised"
# Every absolute path ldd prints (libraries and the dynamic loader), at the same path.
# A static binary has none ("not a dynamic executable" / "statically linked").
for lib in $(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*' || true); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
# kube-rs uses the cluster CA in-cluster; a kubeconfig may rely on public roots.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi
