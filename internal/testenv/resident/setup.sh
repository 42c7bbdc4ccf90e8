#!/bin/sh
# setup.sh installs the resident's npm packages and bundles its page into
# dist/. It is idempotent and cheap when nothing changed:
#   - `npm ci` runs only when node_modules is missing or package-lock.json
#     differs from the one last installed;
#   - esbuild runs only when page/, the lockfile or this script differ from
#     the last build.
# Concurrent runs (several test binaries at once) serialise on a lock file.
set -eu

dir=$(cd "$(dirname "$0")" && pwd)
cd "$dir"

. "$dir/../nodeproc/setup-lib.sh"
npm_install resident

src_sum=$(src_sum)
if [ ! -f dist/.resident-src-sum ] || [ "$(cat dist/.resident-src-sum)" != "$src_sum" ] || [ ! -f dist/resident.js ] ||
	[ ! -f dist/pkg/matrix_sdk_crypto_wasm_bg.wasm ] || [ ! -f dist/lk-e2ee-worker.mjs ]; then
	echo "setup.sh: bundle page/ into dist/" >&2
	rm -rf dist.tmp
	mkdir -p dist.tmp
	./node_modules/.bin/esbuild page/resident.js --bundle --format=esm --target=chrome120 \
		--sourcemap --log-level=warning --outfile=dist.tmp/resident.js >&2
	cp page/index.html dist.tmp/index.html
	copy_crypto_wasm dist.tmp
	# livekit-client's frame encryption runs in a worker the page starts
	# from new URL("./lk-e2ee-worker.mjs", import.meta.url) (encrypted
	# MatrixRTC rooms only); the package ships it built.
	cp node_modules/livekit-client/dist/livekit-client.e2ee.worker.mjs dist.tmp/lk-e2ee-worker.mjs
	echo "$src_sum" >dist.tmp/.resident-src-sum
	rm -rf dist
	mv dist.tmp dist
fi
