#!/usr/bin/env bash
# release.sh cross-builds the intercom for the boards with Debian's cross
# toolchains and multiarch -dev packages (`scripts/deps.sh release`
# installs them): linux/arm64 (Pi 3/4/5, Zero 2 W on a 64-bit OS) and
# linux/arm with GOARM=7 (32-bit OS). cgo is on: libvpx and libopus come
# from the multiarch packages, openh264 is linked from mediadevices'
# bundled static library. The version is injected at link time and the
# binaries are stripped (-s -w). It prints each binary's size.
#
#   VERSION   version string (default: git describe)
#   ARCHES    which to build (default: "arm64 arm")
#   DIST      output directory (default: dist)
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${VERSION:-$(git describe --always --dirty 2>/dev/null || echo dev)}
ARCHES=${ARCHES:-arm64 arm}
DIST=${DIST:-dist}
GO=${GO:-go}
mkdir -p "$DIST"

for arch in $ARCHES; do
	case $arch in
	arm64) triplet=aarch64-linux-gnu; extra=() ;;
	arm) triplet=arm-linux-gnueabihf; extra=(GOARM=7) ;;
	*) echo "release: unknown arch $arch" >&2; exit 2 ;;
	esac
	if ! command -v "$triplet-gcc" >/dev/null; then
		echo "release: $triplet-gcc missing; run scripts/deps.sh release" >&2
		exit 1
	fi
	out="$DIST/intercom-linux-$arch"
	start=$(date +%s)
	env CGO_ENABLED=1 GOOS=linux GOARCH="$arch" "${extra[@]}" \
		CC="$triplet-gcc" CXX="$triplet-g++" \
		PKG_CONFIG_LIBDIR="/usr/lib/$triplet/pkgconfig:/usr/share/pkgconfig" \
		"$GO" build -tags goolm,noaecwebrtc -trimpath -ldflags "-s -w -X main.version=$VERSION" -o "$out" ./cmd/intercom
	size=$(stat -c %s "$out")
	awk -v o="$out" -v s="$size" -v t=$(($(date +%s) - start)) -v v="$VERSION" 'BEGIN { printf "release: %-28s %6.1f MB (%d bytes, %ds) %s\n", o, s/1048576, s, t, v }'
done
