#!/bin/sh
# setup.sh installs the resident's npm packages and bundles its page into
# dist/. It is idempotent and cheap when nothing changed:
#   - `npm ci` runs only when node_modules is missing or package-lock.json
#     differs from the one last installed;
#   - esbuild runs only when page/ (or ../nodeproc/page/), the lockfile, this
#     script or ../nodeproc/setup-lib.sh differ from the last build.
# Concurrent runs (several test binaries at once) serialise on a lock file.
set -eu

dir=$(cd "$(dirname "$0")" && pwd)
cd "$dir"

. "$dir/../nodeproc/setup-lib.sh"
npm_install resident

if needs_bundle resident resident.js pkg/matrix_sdk_crypto_wasm_bg.wasm lk-e2ee-worker.mjs; then
	bundle resident
	cp page/index.html dist.tmp/index.html
	copy_crypto_wasm dist.tmp
	# livekit-client's frame encryption runs in a worker the page starts
	# from new URL("./lk-e2ee-worker.mjs", import.meta.url) (encrypted
	# MatrixRTC rooms only); the package ships it built.
	cp node_modules/livekit-client/dist/livekit-client.e2ee.worker.mjs dist.tmp/lk-e2ee-worker.mjs
	publish resident
fi
