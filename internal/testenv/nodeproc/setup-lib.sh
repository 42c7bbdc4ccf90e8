# setup-lib.sh is sourced by the browser harnesses' setup.sh
# (../resident/setup.sh, ../elementcall/setup.sh), after they cd into their
# own directory: the prelude they share.

# npm_install NAME checks the tools, takes the harness's lock file (held
# until the script exits: concurrent runs from several test binaries
# serialise on it) and runs `npm ci` only when node_modules is missing or
# package-lock.json differs from the one last installed.
npm_install() {
	for tool in node npm sha256sum flock; do
		command -v "$tool" >/dev/null 2>&1 || { echo "setup.sh: $tool not found" >&2; exit 1; }
	done

	exec 9>"$PWD/.setup.lock"
	flock 9

	lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
	if [ ! -f "node_modules/.$1-lock-sum" ] || [ "$(cat "node_modules/.$1-lock-sum")" != "$lock_sum" ]; then
		echo "setup.sh: npm ci" >&2
		# npm's own progress and warnings (matrix-js-sdk declares node >= 22
		# but only runs in the browser here) go to stderr; stdout stays quiet.
		npm ci --no-audit --no-fund --loglevel=error >&2
		echo "$lock_sum" >"node_modules/.$1-lock-sum"
	fi
}

# src_sum prints a hash of what the bundle is built from: setup.sh, this
# file, the lockfile and every file under page/ and ../nodeproc/page/ (the
# page modules both harnesses bundle).
src_sum() {
	(cat setup.sh ../nodeproc/setup-lib.sh package-lock.json; find page ../nodeproc/page -type f | LC_ALL=C sort | xargs cat) | sha256sum | cut -d' ' -f1
}

# copy_crypto_wasm DIST copies matrix-sdk-crypto-wasm's wasm into DIST/pkg:
# the package's browser entry fetches it from
# new URL("./pkg/matrix_sdk_crypto_wasm_bg.wasm", import.meta.url), which in
# a bundle is pkg/ beside the bundle. Only pages with encryption fetch it. A
# second, nested copy of the package would mean the bundle may load another
# version than the one copied here.
copy_crypto_wasm() {
	if [ -d node_modules/matrix-js-sdk/node_modules/@matrix-org/matrix-sdk-crypto-wasm ]; then
		echo "setup.sh: matrix-js-sdk has its own matrix-sdk-crypto-wasm; copy that wasm instead" >&2
		exit 1
	fi
	mkdir -p "$1/pkg"
	cp node_modules/@matrix-org/matrix-sdk-crypto-wasm/pkg/matrix_sdk_crypto_wasm_bg.wasm "$1/pkg/"
}

# needs_bundle NAME FILE... sets src_sum and succeeds when dist/ is stale:
# its stamp (.NAME-src-sum) is missing or not src_sum, or one of the FILEs
# (relative to dist/) is missing.
needs_bundle() {
	name=$1
	shift
	src_sum=$(src_sum)
	if [ ! -f "dist/.$name-src-sum" ] || [ "$(cat "dist/.$name-src-sum")" != "$src_sum" ]; then
		return 0
	fi
	for f in "$@"; do
		[ -f "dist/$f" ] || return 0
	done
	return 1
}

# bundle ENTRY starts a fresh dist.tmp/ with page/ENTRY.js bundled by
# esbuild (ES modules for Chromium 120, with a source map).
bundle() {
	echo "setup.sh: bundle page/ into dist/" >&2
	rm -rf dist.tmp
	mkdir -p dist.tmp
	./node_modules/.bin/esbuild "page/$1.js" --bundle --format=esm --target=chrome120 \
		--sourcemap --log-level=warning --outfile="dist.tmp/$1.js" >&2
}

# publish NAME stamps dist.tmp/ with src_sum and puts it in dist/'s place,
# so that an interrupted build never leaves a dist/ that looks complete.
publish() {
	echo "$src_sum" >"dist.tmp/.$1-src-sum"
	rm -rf dist
	mv dist.tmp dist
}
