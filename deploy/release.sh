#!/usr/bin/env bash
# Release archives: strangler, neworders and legacyorders, static
# (CGO_ENABLED=0) and stamped with the version, for each Linux
# architecture, with LICENSE and README.md, and their SHA256SUMS.
#
#   deploy/release.sh [VERSION]            (make release)
#
# VERSION defaults to git describe (or dev). Writes
# $DIST/strangler_VERSION_linux_ARCH.tar.gz and $DIST/SHA256SUMS; DIST
# defaults to dist, ARCHES to "amd64 arm64". The archives are
# reproducible: sorted, owned by 0:0, dated to the last commit.
set -euo pipefail

cd "$(dirname "$0")/.."

version=${1:-${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}}
dist=${DIST:-dist}
arches=${ARCHES:-amd64 arm64}
go=${GO:-go}
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dist"

archives=()
for arch in $arches; do
  name=strangler_${version}_linux_${arch}
  dir=$work/$name
  mkdir -p "$dir"
  echo "release: $name" >&2
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$go" build -trimpath \
    -ldflags "-s -w -X main.version=$version" \
    -o "$dir/" ./cmd/strangler ./cmd/neworders ./cmd/legacyorders
  cp LICENSE README.md "$dir/"
  tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
    -cf - "$name" | gzip -9n >"$dist/$name.tar.gz"
  archives+=("$name.tar.gz")
done

(cd "$dist" && sha256sum "${archives[@]}" >SHA256SUMS)
echo "release: wrote ${archives[*]} and SHA256SUMS in $dist" >&2
