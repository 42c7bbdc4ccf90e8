# The two commands of the README:
#   make demo   run the intercom in simulation against a local homeserver,
#               with a resident page in the browser
#   make test   every test, with real parts (Dendrite, Chromium, alsa-lib)
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# mautrix's crypto in pure Go (goolm), not libolm: every build and test,
# including those the tests start themselves, inherits the tag.
export GOFLAGS := -tags=goolm $(GOFLAGS)

.PHONY: all build deps test test-unit vet fmt demo bench fuzz clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/intercom ./cmd/intercom

deps:
	scripts/deps.sh

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

# Unit tests only: no homeserver, no browser.
test-unit:
	$(GO) test -race -short ./...

test: deps vet
	$(GO) test -race -count=1 -timeout 20m ./...

# Short fuzz runs of every untrusted-input decoder and of the button's edges (names anchored: -fuzz
# must match exactly one target per package).
fuzz:
	$(GO) test -run=^$$ -fuzz=^FuzzDecode$$ -fuzztime=30s ./callengine
	$(GO) test -run=^$$ -fuzz=^FuzzMachine$$ -fuzztime=30s ./callengine
	$(GO) test -run=^$$ -fuzz=^FuzzButton$$ -fuzztime=30s ./gpio
	$(GO) test -run=^$$ -fuzz=^FuzzParse$$ -fuzztime=30s ./provisioning
	$(GO) test -run=^$$ -fuzz=^FuzzParseRelay$$ -fuzztime=30s ./provisioning
	$(GO) test -run=^$$ -fuzz=^FuzzDoorPolicy$$ -fuzztime=30s ./device
	$(GO) test -run=^$$ -fuzz=^FuzzHistoryEntry$$ -fuzztime=30s ./device
	$(GO) test -run=^$$ -fuzz=^FuzzParseMessage$$ -fuzztime=30s ./matrix
	$(GO) test -run=^$$ -fuzz=^FuzzCryptoSync$$ -fuzztime=30s ./matrix
	$(GO) test -run=^$$ -fuzz=^FuzzRTCTransports$$ -fuzztime=30s ./matrix
	$(GO) test -run=^$$ -fuzz=^FuzzDecodeToDevice$$ -fuzztime=30s ./callengine/group
	$(GO) test -run=^$$ -fuzz=^FuzzMachine$$ -fuzztime=30s ./callengine/group
	$(GO) test -run=^$$ -fuzz=^FuzzMachine$$ -fuzztime=30s ./callengine/rtc
	$(GO) test -run=^$$ -fuzz=^FuzzDecodeEncryptionKeys$$ -fuzztime=30s ./callengine/rtc
	$(GO) test -run=^$$ -fuzz=^FuzzRoomNotifyPower$$ -fuzztime=30s ./callengine/rtc
	$(GO) test -run=^$$ -fuzz=^FuzzPrimaryFromRED$$ -fuzztime=30s ./media
	$(GO) test -run=^$$ -fuzz=^FuzzVoices$$ -fuzztime=30s ./media
	$(GO) test -run=^$$ -fuzz=^FuzzOpusReceiver$$ -fuzztime=30s ./media
	$(GO) test -run=^$$ -fuzz=^FuzzReadGlassCode$$ -fuzztime=30s ./media
	$(GO) test -run=^$$ -fuzz=^FuzzGlassCodeNoise$$ -fuzztime=30s ./media
	$(GO) test -run=^$$ -fuzz=^FuzzBurstDetector$$ -fuzztime=30s ./media
	$(GO) test -run=^$$ -fuzz=^FuzzDecrypt$$ -fuzztime=30s ./media/framecrypt
	$(GO) test -run=^$$ -fuzz=^FuzzRBSPRoundTrip$$ -fuzztime=30s ./media/h264nal
	$(GO) test -run=^$$ -fuzz=^FuzzParseEvent$$ -fuzztime=30s ./internal/testenv/nodeproc
	$(GO) test -run=^$$ -fuzz=^FuzzCheckOffer$$ -fuzztime=30s ./device/whep

# Benchmarks whose medians the issues ask for.
bench: deps
	$(GO) test -run=^$$ -bench=. -benchtime=1x -count=1 ./media/...
	$(GO) test -run=^$$ -bench=BenchmarkWHEPViewers -benchtime=10x -timeout 20m ./device/whep
	$(GO) test -run=^$$ -bench=BenchmarkWebPageFirstFrame -benchtime=20x -timeout 10m ./daemon
	$(GO) test -run=^$$ -bench=BenchmarkPressToMQTT -benchtime=30x -timeout 5m ./daemon
	$(GO) test -run=^$$ -bench=EndToEnd -benchtime=10x -timeout 20m ./cmd/intercom/e2e
	$(GO) test -run=^$$ -bench='^BenchmarkGlassToGlass$$' -benchtime=1x -count=3 -timeout 30m ./cmd/intercom/e2e
	$(GO) test -run=^$$ -bench='^BenchmarkMouthToEar$$' -benchtime=1x -count=3 -timeout 30m ./cmd/intercom/e2e
	$(GO) test -run=^$$ -bench='^BenchmarkBadNetwork$$' -benchtime=1x -timeout 20m ./cmd/intercom/e2e
	INTERCOM_BENCH_ROUNDS=20 $(GO) test -run=^$$ -bench=DoorCommand -benchtime=1x -timeout 10m ./cmd/intercom/e2e
	INTERCOM_BENCH_ROUNDS=20 $(GO) test -run=^$$ -bench=RingEncryption -benchtime=1x -timeout 20m ./cmd/intercom/e2e
	$(GO) test -run=^$$ -bench=BenchmarkMembershipThenRing -benchtime=30x -timeout 5m ./matrix
	$(GO) test -run=^$$ -bench='^BenchmarkMatrixRTC(Paths)?$$' -benchtime=15x -timeout 10m ./cmd/intercom/e2e
	INTERCOM_BENCH_ROUNDS=5 $(GO) test -run=^$$ -bench=MatrixRTCEncryptionCPU -benchtime=1x -timeout 20m ./cmd/intercom/e2e
	INTERCOM_BENCH_ROUNDS=5 $(GO) test -run=^$$ -bench='^BenchmarkElementCall$$' -benchtime=1x -timeout 10m ./cmd/intercom/e2e
	INTERCOM_BENCH_ROUNDS=5 $(GO) test -run=^$$ -bench='^BenchmarkElementCallSFUs$$' -benchtime=1x -timeout 15m ./cmd/intercom/e2e
	INTERCOM_BENCH_ROUNDS=5 $(GO) test -run=^$$ -bench='^BenchmarkNetworkBlip$$' -benchtime=1x -timeout 20m ./cmd/intercom/e2e
	INTERCOM_BENCH_ROUNDS=7 $(GO) test -run=^$$ -bench=HomeserverOutage -benchtime=1x -timeout 10m ./cmd/intercom/e2e
	INTERCOM_BENCH_ROUNDS=500 $(GO) test -run=^$$ -bench='^BenchmarkSoak$$' -benchtime=1x -timeout 90m ./cmd/intercom/e2e

# The demo is built and run as its own process rather than with `go run`:
# `go run` dies on SIGTERM without passing it on, which would leave the demo,
# the intercom and Dendrite running; make passes SIGTERM to its child.
demo: deps build
	$(GO) build -o bin/demo ./cmd/demo
	bin/demo -intercom bin/intercom

clean:
	rm -rf bin demo-state dist

# Cross-builds for the boards (linux/arm64, linux/arm GOARM=7, cgo, version
# injected, stripped) into dist/, with their sizes. The cross toolchains
# are installed by `scripts/deps.sh release`, not by `make test`: they add
# foreign dpkg architectures to the machine.
.PHONY: release test-release
release:
	scripts/deps.sh release
	VERSION=$(VERSION) scripts/release.sh

# The release tests: the arm64 binary under qemu-aarch64-static, and its
# size against the 30 MiB budget (cmd/intercom/release_test.go).
test-release:
	scripts/deps.sh release
	$(GO) test -count=1 -run 'TestRelease' -v ./cmd/intercom
