#!/bin/sh
# setup.sh installs the widget host's npm packages (among them the Element
# Call build, @element-hq/element-call-embedded) and bundles the host page
# into dist/. It is idempotent and cheap when nothing changed:
#   - `npm ci` runs only when node_modules is missing or package-lock.json
#     differs from the one last installed;
#   - esbuild runs only when page/ (or ../nodeproc/page/), the lockfile, this
#     script or ../nodeproc/setup-lib.sh differ from the last build.
# Concurrent runs (several test binaries at once) serialise on a lock file.
# Element Call's own files are served from node_modules as npm installed
# them: nothing of theirs is rebuilt or copied.
set -eu

dir=$(cd "$(dirname "$0")" && pwd)
cd "$dir"

. "$dir/../nodeproc/setup-lib.sh"
npm_install elementcall

ec=node_modules/@element-hq/element-call-embedded/dist
if [ ! -f "$ec/index.html" ]; then
	echo "setup.sh: $ec/index.html missing after npm ci" >&2
	exit 1
fi

if needs_bundle elementcall host.js pkg/matrix_sdk_crypto_wasm_bg.wasm; then
	bundle host
	# The init script runs in every frame (Element Call's iframe too) before
	# any of the frame's own scripts: a classic script, no imports.
	cp page/host.html dist.tmp/index.html
	cp page/framestats.js dist.tmp/framestats.js
	copy_crypto_wasm dist.tmp
	publish elementcall
fi
