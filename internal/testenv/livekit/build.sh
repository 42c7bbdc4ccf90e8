#!/usr/bin/env bash
# build.sh builds the pinned LiveKit SFU (livekit-server) used by the
# MatrixRTC integration and end-to-end tests, caches it outside the
# repository, and prints the path of the binary.
#
# A second call is instant. Parallel callers (several test packages starting
# at once) serialise on a lock so the build runs once. The binary is built
# under a temporary name and renamed into place, so a killed build never
# leaves a half-written binary behind.
#
# Environment:
#   XDG_CACHE_HOME   cache root (default $HOME/.cache)
#   LIVEKIT_FORCE=1  rebuild even if the cached binary exists
set -euo pipefail

readonly module=github.com/livekit/livekit-server
readonly version=v1.13.5
readonly binary=livekit-server

cache="${XDG_CACHE_HOME:-$HOME/.cache}/intercom/livekit-server-${version}"

if [[ "${LIVEKIT_FORCE:-}" != 1 && -x "$cache/$binary" ]]; then
	echo "$cache/$binary"
	exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

# Another caller may have finished the build while we waited for the lock.
if [[ "${LIVEKIT_FORCE:-}" != 1 && -x "$cache/$binary" ]]; then
	echo "$cache/$binary"
	exit 0
fi

# Leftovers of builds that were killed; we hold the lock, so none is live.
rm -rf "$cache"/.tmp-*

work="$(mktemp -d "$cache/.tmp-XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Run the go commands outside any module or workspace so the caller's go.mod
# (and its replace directives) never leak into the server's build. The
# server is pure Go (LiveKit's own images build it with cgo off), so no C
# toolchain is needed.
export GOWORK=off GO111MODULE=on CGO_ENABLED=0
# The module cache is read-only by default; -modcacherw keeps directories that
# this build extracts removable by `go clean -modcache`.
export GOFLAGS="-modcacherw -buildvcs=false -mod=readonly"

echo "livekit: fetching ${module}@${version}" >&2
json="$(cd "$work" && go mod download -json "${module}@${version}")"
dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")"
if [[ -z "$dir" || ! -f "$dir/go.mod" ]]; then
	echo "livekit: go mod download gave no module directory:" >&2
	echo "$json" >&2
	exit 1
fi

start=$SECONDS
echo "livekit: building $binary (a cold build takes a few minutes)" >&2
(cd "$dir" && go build -trimpath -o "$work/$binary" ./cmd/server)
mv -f "$work/$binary" "$cache/$binary"
echo "livekit: built in $((SECONDS - start))s into $cache" >&2

echo "$cache/$binary"
