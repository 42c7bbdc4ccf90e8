package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/dendrite"
	"github.com/doorbell/intercom/internal/testenv/resident"
)

// systemOptions vary what startSystemWith starts. The zero value is
// startSystem's system.
type systemOptions struct {
	// Homeserver configures Dendrite, e.g. its TURN section.
	Homeserver dendrite.Options
	// Config is YAML appended to the intercom's configuration, e.g.
	// "turn:\n  relay_only: true\n".
	Config string
	// Resident is the template of every resident's options (ForceTURN,
	// NoICERestart); the homeserver, the credentials and AutoJoin are set
	// by startSystemWith.
	Resident resident.Options
	// RingTimeout is ring.timeout; default 30 s.
	RingTimeout time.Duration
	// ConfigFor, if set, returns more YAML once the homeserver runs (for
	// parts that need its URL, such as a LiveKit JWT service).
	ConfigFor func(hs *dendrite.Server, dir string) string
	// Encrypted turns on matrix.encryption, and the residents' crypto.
	Encrypted bool
	// ResidentPaths writes these residents (by name) with their paths,
	// a YAML list such as "[matrixrtc]"; the others are plain user IDs.
	ResidentPaths map[string]string
	// Env is added to the intercom's environment (and no other
	// process's), e.g. "GOGC=50".
	Env []string
}

// startSystemWith is startSystem with options: Dendrite, the residents
// (listening before any invite), the intercom, and every resident joined
// to their direct room.
func startSystemWith(t testing.TB, opts systemOptions, residents ...string) *e2e {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: needs Dendrite and Chromium")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	e := newE2E(ctx, t, dendrite.StartTWith(t, opts.Homeserver))
	e.encrypted = opts.Encrypted
	e.env = opts.Env
	var ids []string
	for _, name := range residents {
		pw := name + "-password"
		u, err := e.hs.Register(ctx, name, pw)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, u.UserID)
		if p, ok := opts.ResidentPaths[name]; ok {
			if e.paths == nil {
				e.paths = map[string]string{}
			}
			e.paths[u.UserID] = p
		}
		ro := opts.Resident
		ro.Homeserver, ro.UserID, ro.Password, ro.AutoJoin = e.hs.BaseURL, u.UserID, pw, true
		ro.Encryption = ro.Encryption || opts.Encrypted
		e.residents = append(e.residents, resident.StartT(t, ro))
	}
	extra := opts.Config
	if opts.ConfigFor != nil {
		extra += opts.ConfigFor(e.hs, e.dir)
	}
	e.writeConfig(ids, opts.RingTimeout, extra)
	e.launch(ctx)
	if opts.Encrypted {
		e.waitKeysSharedAhead(ctx)
	}
	for _, r := range e.residents {
		if _, err := r.WaitFor(ctx, "joined"); err != nil {
			t.Fatalf("%s never joined the direct room: %v", r.UserID(), err)
		}
	}
	return e
}

// newE2E builds the intercom binary (once per test binary), registers the
// intercom's account on hs and writes its password file; the intercom is
// stopped, and its log shown on failure, when the test ends.
func newE2E(ctx context.Context, t testing.TB, hs *dendrite.Server) *e2e {
	t.Helper()
	bin, err := buildIntercom()
	if err != nil {
		t.Fatal(err)
	}
	const password = "intercom-password"
	bot, err := hs.Register(ctx, "intercom", password)
	if err != nil {
		t.Fatal(err)
	}
	e := &e2e{t: t, hs: hs, bot: bot, bin: bin, dir: t.TempDir(), api: freeAddr(t), log: &lockedBuffer{}}
	if err := os.WriteFile(filepath.Join(e.dir, "password"), []byte(password), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.stop()
		if t.Failed() || os.Getenv("INTERCOM_E2E_LOG") != "" {
			t.Logf("intercom log:\n%s", e.log.String())
		}
		// A benchmark's log is truncated by the testing package: keep
		// the whole intercom log in a file when asked.
		if f := os.Getenv("INTERCOM_E2E_LOG_FILE"); f != "" {
			_ = os.WriteFile(f, []byte(e.log.String()), 0o600)
		}
	})
	return e
}

// writeConfig writes the intercom's configuration: the residents, the ring
// timeout (default 30 s) and extra YAML appended.
func (e *e2e) writeConfig(residents []string, ring time.Duration, extra string) {
	e.t.Helper()
	if ring == 0 {
		ring = 30 * time.Second
	}
	ids := make([]string, len(residents))
	for i, r := range residents {
		ids[i] = strconv.Quote(r)
		if p, ok := e.paths[r]; ok {
			ids[i] = fmt.Sprintf("{user_id: %q, paths: %s}", r, p)
		}
	}
	cfg := fmt.Sprintf(`matrix:
  homeserver: %s
  user_id: %q
  password_file: ./password
  device_name: Front door
  encryption: %v
state_dir: ./state
residents: [%s]
ring:
  timeout: %s
api:
  listen: %s
log:
  level: debug
%s`, e.hs.BaseURL, e.bot.UserID, e.encrypted, strings.Join(ids, ", "), ring, e.api, extra)
	e.cfgPath = filepath.Join(e.dir, "intercom.yaml")
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// launch starts the intercom binary on its configuration (ICE kept on
// loopback unless iceOnVeth) and waits until its Matrix sync is healthy. After stop it
// starts it again on the same configuration and state.
func (e *e2e) launch(ctx context.Context) {
	e.t.Helper()
	e.start()
	e.waitStatus(ctx, "healthy", func(s status) bool { return s.Healthy })
}

// start starts the intercom binary on its configuration (ICE kept on
// loopback) and returns at once.
func (e *e2e) start() {
	e.t.Helper()
	e.cmd = exec.Command(e.bin, "run", "--config", e.cfgPath)
	e.cmd.Env = append(os.Environ(), e.env...)
	if !e.iceOnVeth {
		e.cmd.Env = append(e.cmd.Env, "INTERCOM_ICE_LOOPBACK=1")
	}
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	if err := e.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	// One waiter per process: the waits below notice an intercom that
	// exited (a configuration it refused) at once, not at their deadline.
	exited := make(chan struct{})
	e.exited = exited
	go func(cmd *exec.Cmd) { _ = cmd.Wait(); close(exited) }(e.cmd)
}

// answerCall presses the button, has r answer and waits for its first
// decoded frame. It returns the press → first frame and answer → first
// frame times.
func (e *e2e) answerCall(ctx context.Context, r *resident.Resident) (fromPress, fromAnswer time.Duration) {
	e.t.Helper()
	pressed := e.press()
	if _, err := r.WaitFor(ctx, resident.EventIncoming); err != nil {
		e.t.Fatal(err)
	}
	if err := r.Answer(); err != nil {
		e.t.Fatal(err)
	}
	answered, err := r.WaitFor(ctx, resident.EventAnswered)
	if err != nil {
		e.t.Fatal(err)
	}
	ff, err := r.WaitFor(ctx, resident.EventFirstFrame)
	if err != nil {
		e.t.Fatal(err)
	}
	return ff.TS.Sub(pressed), ff.TS.Sub(answered.TS)
}

// waitFrames waits until r has decoded more than n frames in all, and
// returns its stats then.
func waitFrames(ctx context.Context, t testing.TB, r *resident.Resident, n int) resident.Stats {
	t.Helper()
	for {
		st := r.LastStats()
		if st.FramesDecoded > n {
			return st
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: frames stuck at %d, want more than %d: %+v", r.UserID(), st.FramesDecoded, n, st)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// candidateType is the ICE candidate type of a resident.Stats address
// ("addr:port/proto/type").
func candidateType(addr string) string {
	if i := strings.LastIndexByte(addr, '/'); i >= 0 {
		return addr[i+1:]
	}
	return ""
}

// waitKeysSharedAhead waits until the intercom has shared its rooms' keys
// ahead (daemon/encryption.go), then a second for the residents' syncs to
// take them. A press right after start would otherwise race its own room
// key to the resident, and matrix-js-sdk drops an m.call.invite that it
// could decrypt only once the key came (its call handler saw a decryption
// failure, not a call): real intercoms share the keys long before a
// visitor comes.
func (e *e2e) waitKeysSharedAhead(ctx context.Context) {
	e.t.Helper()
	for !strings.Contains(e.log.String(), "room keys shared ahead") {
		if e.hasExited() {
			e.t.Fatalf("intercom exited before sharing its room keys:\n%s", lastLines(e.log.String(), 30))
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("the intercom never shared its room keys ahead: %v", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	time.Sleep(time.Second)
}
