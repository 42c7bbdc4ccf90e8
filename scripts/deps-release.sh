# deps-release.sh is sourced by `deps.sh release` (make release, make
# test-release): Debian's cross toolchains for arm64 and armhf, the cgo
# libraries for those architectures (multiarch -dev packages), and
# qemu-user-static for running the arm64 binary in a test. It adds the
# two foreign architectures to dpkg, which is why plain `make test` does
# not do it (see docs/ARCHITECTURE.md, "Cross-builds").
for arch in arm64 armhf; do
	if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
		echo "deps: adding dpkg architecture $arch" >&2
		if [[ $(id -u) == 0 ]]; then dpkg --add-architecture "$arch"; else sudo dpkg --add-architecture "$arch"; fi
	fi
done
packages+=(
	gcc-aarch64-linux-gnu g++-aarch64-linux-gnu
	gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf
	libvpx-dev:arm64 libopus-dev:arm64 libasound2-dev:arm64 libspeexdsp-dev:arm64 libstdc++6:arm64
	libvpx-dev:armhf libopus-dev:armhf libasound2-dev:armhf libspeexdsp-dev:armhf libstdc++6:armhf
	qemu-user-static
)
