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

for tool in node npm sha256sum flock; do
	command -v "$tool" >/dev/null 2>&1 || { echo "setup.sh: $tool not found" >&2; exit 1; }
done

exec 9>"$dir/.setup.lock"
flock 9

lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f node_modules/.resident-lock-sum ] || [ "$(cat node_modules/.resident-lock-sum)" != "$lock_sum" ]; then
	echo "setup.sh: npm ci" >&2
	# npm's own progress and warnings (matrix-js-sdk declares node >= 22 but
	# only runs in the browser here) go to stderr; stdout stays quiet.
	npm ci --no-audit --no-fund --loglevel=error >&2
	echo "$lock_sum" >node_modules/.resident-lock-sum
fi

src_sum=$( (cat setup.sh package-lock.json; find page -type f | LC_ALL=C sort | xargs cat) | sha256sum | cut -d' ' -f1)
if [ ! -f dist/.resident-src-sum ] || [ "$(cat dist/.resident-src-sum)" != "$src_sum" ] || [ ! -f dist/resident.js ] ||
	[ ! -f dist/pkg/matrix_sdk_crypto_wasm_bg.wasm ] || [ ! -f dist/lk-e2ee-worker.mjs ]; then
	echo "setup.sh: bundle page/ into dist/" >&2
	rm -rf dist.tmp
	mkdir -p dist.tmp
	./node_modules/.bin/esbuild page/resident.js --bundle --format=esm --target=chrome120 \
		--sourcemap --log-level=warning --outfile=dist.tmp/resident.js >&2
	cp page/index.html dist.tmp/index.html
	# matrix-sdk-crypto-wasm's browser entry fetches its wasm from
	# new URL("./pkg/matrix_sdk_crypto_wasm_bg.wasm", import.meta.url): in the
	# bundle that is pkg/ beside resident.js. Only pages with encryption fetch
	# it. A second, nested copy of the package would mean the bundle may load
	# another version than the one copied here.
	wasm_pkg=node_modules/@matrix-org/matrix-sdk-crypto-wasm
	if [ -d node_modules/matrix-js-sdk/node_modules/@matrix-org/matrix-sdk-crypto-wasm ]; then
		echo "setup.sh: matrix-js-sdk has its own matrix-sdk-crypto-wasm; copy that wasm instead" >&2
		exit 1
	fi
	mkdir -p dist.tmp/pkg
	cp "$wasm_pkg/pkg/matrix_sdk_crypto_wasm_bg.wasm" dist.tmp/pkg/
	# livekit-client's frame encryption runs in a worker the page starts
	# from new URL("./lk-e2ee-worker.mjs", import.meta.url) (encrypted
	# MatrixRTC rooms only); the package ships it built.
	cp node_modules/livekit-client/dist/livekit-client.e2ee.worker.mjs dist.tmp/lk-e2ee-worker.mjs
	echo "$src_sum" >dist.tmp/.resident-src-sum
	rm -rf dist
	mv dist.tmp dist
fi
