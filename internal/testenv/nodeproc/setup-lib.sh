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
