// Package lkcrypt runs livekit-client's own frame encryption (the E2EE
// worker Element Call runs, from the npm package the resident harness
// installs) in node, so that media/framecrypt can prove itself
// byte-compatible with it: frames encrypted by livekit-client are
// decrypted in Go and frames encrypted in Go by livekit-client, and Go's
// H.264 parsing is compared with livekit-client's on arbitrary bytes.
// crypt.mjs says exactly what livekit code runs.
//
// It needs node and the resident's npm packages (resident.Setup installs
// them); a run takes about 0.2 s.
package lkcrypt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/doorbell/intercom/internal/testenv/resident"
)

// ErrNoSource is returned when crypt.mjs cannot be found beside this file.
var ErrNoSource = errors.New("lkcrypt: crypt.mjs not found")

// Key is one key set on the participant of an operation.
type Key struct {
	Index uint8  `json:"index"`
	Raw   []byte `json:"raw"` // raw key material, as sent in io.element.call.encryption_keys
}

// Op is one operation for livekit-client.
type Op struct {
	// Op is "encrypt" or "decrypt" (through the E2EE worker), or "nalu",
	// "normalize", "writeRbsp", "parseRbsp", "needsRbspUnescaping" (the
	// helpers of livekit-client's src/e2ee, on Frame).
	Op string `json:"op"`
	// Codec is "opus", "vp8" or "h264" (the frame's MIME type).
	Codec string `json:"codec,omitempty"`
	// Type is a video frame's type, "key" or "delta", as a WebRTC encoder
	// (encrypt) or depacketizer (decrypt) would set it.
	Type string `json:"type,omitempty"`
	// Keys are set in order; the last one is the sending key.
	Keys  []Key  `json:"keys,omitempty"`
	Frame []byte `json:"frame"`
	// SIF is the server-injected-frame trailer, if any.
	SIF []byte `json:"sif,omitempty"`
	// SSRC and Timestamp go into the frame's metadata; livekit-client
	// builds its IV from them.
	SSRC      uint32 `json:"ssrc,omitempty"`
	Timestamp uint32 `json:"timestamp,omitempty"`
}

// Result is one operation's outcome.
type Result struct {
	// Frame is the output frame (encrypt, decrypt, and the byte helpers).
	Frame []byte `json:"frame"`
	// Dropped: the worker emitted no frame (decryption failed).
	Dropped bool `json:"dropped"`
	// Errors are the worker's error events and warnings during the op.
	Errors []string `json:"errors"`
	// Clear and NALU are processNALUsForEncryption's result; Threw is set
	// instead when it threw.
	Clear int    `json:"clear"`
	NALU  bool   `json:"nalu"`
	Threw string `json:"threw"`
	// Bool is needsRbspUnescaping's result.
	Bool bool `json:"bool"`
}

// Harness runs operations; make one with New.
type Harness struct {
	script string // crypt.mjs
	worker string // livekit-client's dist/livekit-client.e2ee.worker.mjs
	nalu   string // esbuild bundle of nalu.mjs
}

// New makes sure the npm packages are installed, bundles livekit-client's
// H.264 helpers into dir (a temporary directory the caller owns) and
// returns a Harness.
func New(ctx context.Context, dir string) (*Harness, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return nil, ErrNoSource
	}
	here := filepath.Dir(file)
	script := filepath.Join(here, "crypt.mjs")
	if _, err := os.Stat(script); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoSource, err)
	}
	resDir, err := resident.Setup(ctx)
	if err != nil {
		return nil, fmt.Errorf("install livekit-client: %w", err)
	}
	modules := filepath.Join(resDir, "node_modules")
	h := &Harness{
		script: script,
		worker: filepath.Join(modules, "livekit-client", "dist", "livekit-client.e2ee.worker.mjs"),
		nalu:   filepath.Join(dir, "lkc-nalu.mjs"),
	}
	cmd := exec.CommandContext(ctx, filepath.Join(modules, ".bin", "esbuild"),
		filepath.Join(here, "nalu.mjs"), "--bundle", "--platform=node", "--format=esm",
		"--log-level=warning", "--alias:lkc="+filepath.Join(modules, "livekit-client", "src"),
		"--outfile="+h.nalu)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("bundle livekit-client's H.264 helpers: %w\n%s", err, out)
	}
	return h, nil
}

// NewT is New for a test: skipped with -short, failed on error.
func NewT(t testing.TB) *Harness {
	t.Helper()
	if testing.Short() {
		t.Skip("livekit-client in node: skipped with -short")
	}
	h, err := New(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// Run runs ops in one node process and returns one result per op.
func (h *Harness) Run(ctx context.Context, ops []Op) ([]Result, error) {
	in, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("encode operations: %w", err)
	}
	cmd := exec.CommandContext(ctx, "node", h.script, h.worker, h.nalu)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("run %s: %w\n%s", h.script, err, tail(stderr.String(), 4000))
	}
	var results []Result
	if err := json.Unmarshal(stdout.Bytes(), &results); err != nil {
		return nil, fmt.Errorf("decode results of %s: %w", h.script, err)
	}
	if len(results) != len(ops) {
		return nil, fmt.Errorf("%s: %d results for %d operations", h.script, len(results), len(ops))
	}
	return results, nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
