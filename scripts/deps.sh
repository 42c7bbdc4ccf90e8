#!/usr/bin/env bash
# deps.sh installs what building and testing the intercom needs on a fresh
# Debian 12 machine that has Go, gcc, Node and git: Debian packages (cgo
# libraries, Chromium for the browser resident), the resident's npm
# packages, and the pinned Dendrite homeserver, livekit-server SFU and go2rtc (built
# from the Go module proxy, cached under ~/.cache). Every step is skipped when already done, so
# `make test` and `make demo` can call it each time.
set -euo pipefail
cd "$(dirname "$0")/.."

# coturn: the TURN server of the relay-only call tests (cmd/intercom/e2e), which
# start their own `turnserver` on 127.0.0.1.
# libolm-dev: only for go commands run without -tags=goolm (go vet, gopls,
# a plain go test), which compile mautrix's crypto against libolm's
# headers; every build the Makefile, release.sh and Buildroot make uses
# the pure-Go goolm and needs no libolm (docs/ARCHITECTURE.md).
# libspeexdsp-dev, libwebrtc-audio-processing-dev: media/aec's echo
# cancellers (speexdsp is the door's; WebRTC's is built to compare).
# mosquitto: the MQTT broker of device/mqtt's tests (internal/testenv/mosquitto
# starts its own on 127.0.0.1).
packages=(pkg-config libvpx-dev libopus-dev libasound2-dev libspeexdsp-dev libwebrtc-audio-processing-dev libolm-dev chromium iproute2 util-linux systemd coturn mosquitto)
# `deps.sh release`: also the cross toolchains (make release, test-release).
[[ ${1:-} == release ]] && source scripts/deps-release.sh
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	sudo=""
	[[ $(id -u) == 0 ]] || sudo="sudo"
	echo "deps: installing ${missing[*]}" >&2
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
	# Debian enables coturn's system service on install; the tests need
	# only the binary, so a TURN server we just installed is not left
	# listening on the machine's addresses.
	if [[ " ${missing[*]} " == *" coturn "* ]] && [[ -d /run/systemd/system ]]; then
		$sudo systemctl disable --now coturn.service >&2 || true
	fi
	# Likewise mosquitto's broker service.
	if [[ " ${missing[*]} " == *" mosquitto "* ]] && [[ -d /run/systemd/system ]]; then
		$sudo systemctl disable --now mosquitto.service >&2 || true
	fi
fi

internal/testenv/resident/setup.sh
# The real Element Call (npm @element-hq/element-call-embedded) in its
# widget host: installed here, before the tests and their timeouts.
internal/testenv/elementcall/setup.sh
# Dendrite, livekit-server and go2rtc, built from the module proxy into
# ~/.cache/intercom (internal/testenv/gobuild).
go run ./internal/testenv/gobuild/prebuild
