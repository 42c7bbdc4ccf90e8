#!/usr/bin/env bash
# build.sh builds the pinned go2rtc (a WHEP client that is not ours, for
# device/whep's and the daemon's tests) from the Go module proxy, caches it
# outside the repository and prints the binary's path. A second call is
# instant; parallel callers serialise on a lock; the binary is renamed into
# place only once complete.
#
# Environment:
#   XDG_CACHE_HOME   cache root (default $HOME/.cache)
set -euo pipefail

readonly module=github.com/AlexxIT/go2rtc
readonly version=v1.9.9

cache="${XDG_CACHE_HOME:-$HOME/.cache}/intercom/go2rtc-${version}"
bin="$cache/go2rtc"
if [[ -x "$bin" ]]; then
	echo "$bin"
	exit 0
fi
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [[ -x "$bin" ]]; then
	echo "$bin"
	exit 0
fi
rm -rf "$cache"/.tmp-*
work="$(mktemp -d "$cache/.tmp-XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Outside any module of ours, so our go.mod (and its replaces) stay out.
export GOWORK=off GO111MODULE=on CGO_ENABLED=0
export GOFLAGS="-modcacherw -buildvcs=false -mod=readonly"
echo "go2rtc: fetching ${module}@${version}" >&2
json="$(cd "$work" && go mod download -json "${module}@${version}")"
dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")"
if [[ -z "$dir" || ! -f "$dir/go.mod" ]]; then
	echo "go2rtc: go mod download gave no module directory:" >&2
	echo "$json" >&2
	exit 1
fi
echo "go2rtc: building (a cold build takes a minute or two)" >&2
(cd "$dir" && go build -trimpath -o "$work/go2rtc" .)
mv -f "$work/go2rtc" "$bin"
echo "$bin"
