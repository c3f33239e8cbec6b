#!/usr/bin/env bash
# Builds the strangler image with buildah, pulling nothing: the static
# binaries are built on this machine and copied onto an empty ("scratch")
# image, the same image the Dockerfile describes.
#
#   deploy/image.sh [VERSION]        (make image)
#
# VERSION (default: git describe, or dev) is stamped into the binaries and
# is the image's tag: localhost/strangler:VERSION. buildah (and podman, to
# run the image) are installed with apt when missing, as root
# (.ci/apt.sh). The storage driver is the store's own, or vfs where that
# does not work (overlay over overlay inside a container); set
# STORAGE_DRIVER to choose. Nothing is run inside a container, so no
# user namespaces are needed.
#
# The last line on stdout is "IMAGE storage-driver=DRIVER", for the test
# that runs it (deploy/image_test.go). Exit 3: buildah or podman missing and
# not installable; exit 4: buildah has no usable storage here.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=../.ci/apt.sh
source .ci/apt.sh

version=${1:-${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}}
image=localhost/strangler:$version
go=${GO:-go}

missing=()
for tool in buildah podman; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]} > 0)); then
  apt_install --no-start image "${missing[@]}" || exit 3
fi

# The driver: whatever the store is configured with, if buildah can open
# it; otherwise vfs, which works on any file system (it copies layers
# instead of overlaying them, and this image has one small layer).
driver=${STORAGE_DRIVER:-}
if [[ -z $driver ]]; then
  if driver=$(buildah info --format '{{.store.GraphDriverName}}' 2>/dev/null) && [[ -n $driver ]]; then
    :
  else
    driver=vfs
  fi
fi
bh=(buildah --storage-driver "$driver")
if ! "${bh[@]}" info >/dev/null 2>/tmp/strangler-image-info.$$; then
  echo "image: buildah cannot use storage driver $driver here:" >&2
  cat /tmp/strangler-image-info.$$ >&2
  rm -f /tmp/strangler-image-info.$$
  exit 4
fi
rm -f /tmp/strangler-image-info.$$

out=$(mktemp -d)
ctr=
cleanup() {
  [[ -n $ctr ]] && "${bh[@]}" rm "$ctr" >/dev/null 2>&1
  rm -rf "$out"
}
trap cleanup EXIT

echo "image: building the static binaries, version $version" >&2
CGO_ENABLED=0 "$go" build -trimpath -ldflags "-s -w -X main.version=$version" \
  -o "$out/" ./cmd/strangler ./cmd/neworders ./cmd/legacyorders

echo "image: assembling $image (storage driver $driver)" >&2
ctr=$("${bh[@]}" from --isolation chroot scratch)
# --chmod: the files must be readable and executable by 65532 whatever the
# build machine's umask; --chown makes no difference to a static binary.
"${bh[@]}" copy --chmod 0555 "$ctr" "$out/strangler" "$out/neworders" "$out/legacyorders" / >/dev/null
"${bh[@]}" config \
  --entrypoint '["/strangler"]' \
  --cmd '["serve", "--config", "/etc/strangler/strangler.yaml"]' \
  --user 65532:65532 \
  --port 8080/tcp --port 9090/tcp \
  --os linux --arch "$("$go" env GOARCH)" \
  --label org.opencontainers.image.title=strangler \
  --label "org.opencontainers.image.description=A strangler-fig reverse proxy for migrating a legacy backend one endpoint at a time" \
  --label org.opencontainers.image.source=https://github.com/strangler-proxy/strangler \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --label "org.opencontainers.image.version=$version" \
  "$ctr"
"${bh[@]}" commit --quiet --rm "$ctr" "$image" >/dev/null
ctr=
echo "image: committed $image" >&2
echo "$image storage-driver=$driver"
