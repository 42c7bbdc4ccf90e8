#!/usr/bin/env bash
# build.sh builds the pinned Dendrite homeserver used by the integration and
# end-to-end tests and by `make demo`, caches it outside the repository, and
# prints the directory holding the binaries (dendrite, generate-keys).
#
# A second call is instant. Parallel callers (several test packages starting
# at once) serialise on a lock so the build runs once. Binaries are built
# under temporary names and renamed into place, so a killed build never
# leaves a half-written binary behind.
#
# Environment:
#   XDG_CACHE_HOME   cache root (default $HOME/.cache)
#   DENDRITE_FORCE=1 rebuild even if the cached binaries exist
set -euo pipefail

readonly module=github.com/element-hq/dendrite
readonly version=v0.15.2
readonly binaries=(generate-keys dendrite) # dendrite last: its presence marks a complete build

cache="${XDG_CACHE_HOME:-$HOME/.cache}/intercom/dendrite-${version}"

complete() {
	local b
	for b in "${binaries[@]}"; do
		[[ -x "$cache/$b" ]] || return 1
	done
}

if [[ "${DENDRITE_FORCE:-}" != 1 ]] && complete; then
	echo "$cache"
	exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

# Another caller may have finished the build while we waited for the lock.
if [[ "${DENDRITE_FORCE:-}" != 1 ]] && complete; then
	echo "$cache"
	exit 0
fi

# Leftovers of builds that were killed; we hold the lock, so none is live.
rm -rf "$cache"/.tmp-*

work="$(mktemp -d "$cache/.tmp-XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Run the go commands outside any module or workspace so the caller's go.mod
# (and its replace directives) never leak into Dendrite's build.
export GOWORK=off GO111MODULE=on CGO_ENABLED=1
# The module cache is read-only by default; -modcacherw keeps directories that
# this build extracts removable by `go clean -modcache`.
export GOFLAGS="-modcacherw -buildvcs=false -mod=readonly"

echo "dendrite: fetching ${module}@${version}" >&2
json="$(cd "$work" && go mod download -json "${module}@${version}")"
dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")"
if [[ -z "$dir" || ! -f "$dir/go.mod" ]]; then
	echo "dendrite: go mod download gave no module directory:" >&2
	echo "$json" >&2
	exit 1
fi

start=$SECONDS
for b in "${binaries[@]}"; do
	echo "dendrite: building $b (cold builds take a few minutes)" >&2
	(cd "$dir" && go build -trimpath -o "$work/$b" "./cmd/$b")
done
for b in "${binaries[@]}"; do
	mv -f "$work/$b" "$cache/$b"
done
echo "dendrite: built in $((SECONDS - start))s into $cache" >&2

echo "$cache"
