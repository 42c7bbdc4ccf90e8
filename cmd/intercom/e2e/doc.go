// Package e2e holds the end-to-end tests and benchmarks of the intercom
// binary; it has no code of its own. The tests build cmd/intercom once
// with go build and run it as a process (run, also under a fake
// NOTIFY_SOCKET, and provision) against a real Dendrite, livekit-server
// and coturn, with matrix-js-sdk residents in headless Chromium; they
// check what the residents see, what the local API reports and what the
// binary prints.
//
// They live apart from cmd/intercom so that the CLI's unit tests run
// directly: this package's TestMain re-runs the test binary inside
// `unshare --net` with only lo up, plus a veth pair for pion-based
// clients, when the machine allows it (see docs/ARCHITECTURE.md, "Tests
// and their real parts").
//
// Run them, after scripts/deps.sh (make deps), with
//
//	go test -race -count=1 -timeout 20m ./cmd/intercom/e2e/
//
// which takes several minutes; -short skips every one of them. The
// benchmarks (BenchmarkEndToEnd, BenchmarkDoorCommand, BenchmarkMatrixRTC,
// …) run with make bench.
package e2e
