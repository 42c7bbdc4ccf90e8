// Package elementcall runs the real Element Call web app (npm
// @element-hq/element-call-embedded 0.26.1, the build Element X embeds) in
// headless Chromium inside a small widget host of this project's, for the
// intercom's end-to-end tests. The host (page/host.js) plays Element X's
// part: it logs in as a resident with matrix-js-sdk, sees the intercom's
// MatrixRTC ring (org.matrix.msc4075.rtc.notification) and, when told to,
// opens Element Call as a widget for that room, with matrix-widget-api's
// ClientWidgetApi and a driver over the js-sdk client (page/driver.js)
// that does what Element Web's widget driver does for its call widget.
// An init script in every frame (page/framestats.js) reports what Element
// Call's peer connections decode and send, without any change to Element
// Call.
//
// With Options.Encryption the host runs matrix-js-sdk's rust crypto:
// Element Call then gets its to-device messages decrypted, and its
// encrypted to-device messages (media keys) leave Olm-encrypted, as in
// Element Web; Element Call is opened with perParticipantE2EE when the
// room is encrypted.
//
// It needs node, npm and Chromium (/usr/bin/chromium, or $CHROMIUM). Setup
// installs the pinned npm packages and bundles the host on first use.
package elementcall

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options configure one host.
type Options struct {
	Homeserver string // base URL, e.g. "http://127.0.0.1:8008"
	UserID     string // "@carol:localhost" or "carol"; each start logs in as a new device
	Password   string
	// ServiceURL is the livekit_service_url written into Element Call's
	// config.json: the LiveKit JWT service Element Call publishes through
	// when the homeserver advertises no transport (Dendrite advertises
	// none, and without one Element Call says "Call is not supported").
	ServiceURL string
	AutoJoin   bool // join every room the user is invited to
	// Encryption initialises matrix-js-sdk's rust crypto before the first
	// sync (a new Olm device each start); "ready" then waits until the
	// homeserver lists the device's keys.
	Encryption bool
	// Log receives the driver's diagnostics, every frame's console and
	// every event but stats. Nil discards them.
	Log io.Writer
}

// IntentJoinExistingDM is the Element Call intent Element Web and Element
// X use to answer a call someone else started in a DM: no lobby, leave
// when the others have left.
const IntentJoinExistingDM = "join_existing_dm"

const (
	startTimeout   = 2 * time.Minute
	commandTimeout = 30 * time.Second
	closeGrace     = 10 * time.Second
)

// Host is one running host: a node process (driver.mjs) with its Chromium.
// Its methods are safe for concurrent use.
type Host struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	log    io.Writer
	stderr *tailBuffer

	writeMu sync.Mutex // serialises commands on stdin

	mu      sync.Mutex
	events  []Event        // every event but stats and replies, in arrival order
	cursor  map[string]int // per wait key: where the next wait looks from
	changed chan struct{}  // closed and replaced whenever events or exited change
	replies map[int]chan Event
	nextID  int
	stats   Stats // the last stats of Element Call's frame
	ecOrig  string
	ready   Event

	exited  chan struct{}
	exitErr error

	closeOnce sync.Once
	closeErr  error
}

// Start sets the package up (see Setup), spawns `node driver.mjs` and
// returns once the host has logged in and finished its first sync (event
// "ready"). ctx bounds only the start.
func Start(ctx context.Context, opts Options) (*Host, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	if opts.Homeserver == "" || opts.UserID == "" || opts.Password == "" {
		return nil, errors.New("elementcall: need Homeserver, UserID and Password")
	}
	dir, err := Setup(ctx)
	if err != nil {
		return nil, err
	}
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("start element call host: %w", err)
	}
	args := []string{filepath.Join(dir, "driver.mjs")}
	if opts.AutoJoin {
		args = append(args, "--autojoin")
	}
	if opts.Encryption {
		args = append(args, "--encryption")
	}
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	h := &Host{
		log:     &syncWriter{w: log},
		stderr:  &tailBuffer{max: 8 << 10},
		cursor:  make(map[string]int),
		changed: make(chan struct{}),
		replies: make(map[int]chan Event),
		exited:  make(chan struct{}),
	}
	h.cmd = exec.Command(node, args...)
	h.cmd.Dir = dir
	// Credentials through the environment, never argv (a process list
	// shows argv).
	h.cmd.Env = append(os.Environ(),
		"ELEMENTCALL_HOMESERVER="+opts.Homeserver,
		"ELEMENTCALL_USER="+opts.UserID,
		"ELEMENTCALL_PASSWORD="+opts.Password,
		"ELEMENTCALL_SERVICE_URL="+opts.ServiceURL,
	)
	h.cmd.Stderr = io.MultiWriter(h.log, h.stderr)
	// Its own process group: a terminal's Ctrl-C reaches the test binary,
	// which closes the driver's stdin; the driver closes Chromium.
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("start element call host: %w", err)
	}
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start element call host: %w", err)
	}
	if err := h.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start element call host: %w", err)
	}
	go h.read(stdout)

	if err := h.waitReady(ctx); err != nil {
		_ = h.Close()
		return nil, fmt.Errorf("start element call host %s: %w\n%s", opts.UserID, err, h.stderr.String())
	}
	return h, nil
}

// StartT starts a host for a test and closes it in t.Cleanup. Without
// opts.Log, the host logs to t.Log.
func StartT(t testing.TB, opts Options) *Host {
	t.Helper()
	if opts.Log == nil {
		opts.Log = &testWriter{t: t}
	}
	ctx, cancel := context.WithTimeout(t.Context(), startTimeout)
	defer cancel()
	h, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("close element call host: %v", err)
		}
	})
	return h
}

// UserID is the logged-in user.
func (h *Host) UserID() string { return h.readyEvent().Str("userId") }

// DeviceID is the host's device, which Element Call uses too.
func (h *Host) DeviceID() string { return h.readyEvent().Str("deviceId") }

func (h *Host) readyEvent() Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ready
}

func (h *Host) waitReady(ctx context.Context) error {
	ev, err := h.wait(ctx, "", func(ev Event) bool { return ev.Name == EventReady || ev.Name == EventError })
	if err != nil {
		return fmt.Errorf("wait for ready: %w", err)
	}
	if ev.Name == EventError {
		return errors.New(ev.Str("message"))
	}
	h.mu.Lock()
	h.ready = ev
	h.mu.Unlock()
	return nil
}

// read owns the driver's stdout: it records events, hands replies to the
// commands waiting for them, and reaps the process at EOF.
func (h *Host) read(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		ev, err := parseEvent(sc.Bytes())
		if err != nil {
			fmt.Fprintf(h.log, "elementcall: %v\n", err)
			continue
		}
		if ev.Name != EventStats && ev.Name != "reply" {
			fmt.Fprintf(h.log, "elementcall event: %s\n", ev.Raw)
		}
		h.mu.Lock()
		switch ev.Name {
		case "reply":
			if ch, ok := h.replies[int(ev.Num("id"))]; ok {
				ch <- ev // buffered, one reply per id
				delete(h.replies, int(ev.Num("id")))
			}
			h.mu.Unlock()
			continue
		case EventServing:
			h.ecOrig = trimSlash(ev.Str("elementCall"))
		case EventStats:
			// Only Element Call's frame: the host page makes no peer
			// connections of its own.
			var s Stats
			if err := ev.Decode(&s); err == nil && s.Origin == h.ecOrig {
				s.TS = ev.TS
				h.stats = s
			}
			h.broadcastLocked()
			h.mu.Unlock()
			continue
		}
		h.events = append(h.events, ev)
		h.broadcastLocked()
		h.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, stdout)
	err := h.cmd.Wait()
	h.mu.Lock()
	h.exitErr = err
	close(h.exited)
	h.broadcastLocked()
	h.mu.Unlock()
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

func (h *Host) broadcastLocked() {
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *Host) isExited() bool {
	select {
	case <-h.exited:
		return true
	default:
		return false
	}
}

func (h *Host) exitError() error {
	<-h.exited
	if h.exitErr != nil {
		return fmt.Errorf("%w: %v", ErrExited, h.exitErr)
	}
	return ErrExited
}

// wait returns the first event that match accepts. With a key it looks
// from after the event it returned last for that key (so successive waits
// with one key see successive events); without, from the start.
func (h *Host) wait(ctx context.Context, key string, match func(Event) bool) (Event, error) {
	for {
		h.mu.Lock()
		start := 0
		if key != "" {
			start = h.cursor[key]
		}
		for i := start; i < len(h.events); i++ {
			if match(h.events[i]) {
				if key != "" {
					h.cursor[key] = i + 1
				}
				ev := h.events[i]
				h.mu.Unlock()
				return ev, nil
			}
		}
		if key != "" {
			h.cursor[key] = len(h.events)
		}
		changed := h.changed
		h.mu.Unlock()
		if h.isExited() {
			return Event{}, h.exitError()
		}
		select {
		case <-ctx.Done():
			return Event{}, context.Cause(ctx)
		case <-changed:
		}
	}
}

// WaitFor returns the next event called name: the first one after the event
// of that name WaitFor returned last, whether it already came or is still
// to come.
func (h *Host) WaitFor(ctx context.Context, name string) (Event, error) {
	ev, err := h.wait(ctx, "name:"+name, func(ev Event) bool { return ev.Name == name })
	if err != nil {
		return Event{}, fmt.Errorf("wait for %s: %w", name, err)
	}
	return ev, nil
}

// WaitMatch returns the first event called name emitted at or after since
// that match accepts (nil accepts any), whatever the other waits returned.
func (h *Host) WaitMatch(ctx context.Context, name string, since time.Time, match func(Event) bool) (Event, error) {
	ev, err := h.wait(ctx, "", func(ev Event) bool {
		return ev.Name == name && !ev.TS.Before(since) && (match == nil || match(ev))
	})
	if err != nil {
		return Event{}, fmt.Errorf("wait for %s: %w", name, err)
	}
	return ev, nil
}

// WaitRing returns the next live ring (MSC4075 rtc.notification) in roomID
// that WaitRing has not returned before: the host page's clock in TS, the
// homeserver's in "serverTs".
func (h *Host) WaitRing(ctx context.Context, roomID string) (Event, error) {
	ev, err := h.wait(ctx, "ring:"+roomID, func(ev Event) bool {
		return ev.Name == EventRing && ev.Str("roomId") == roomID && ev.Bool("live")
	})
	if err != nil {
		return Event{}, fmt.Errorf("wait for a ring in %s: %w", roomID, err)
	}
	return ev, nil
}

// Join opens Element Call for roomID with intent ("" is
// IntentJoinExistingDM), as Element X does when the resident answers a
// ring. It returns the "widgetOpened" event (when the iframe was made);
// Element Call then joins by itself (skipLobby): wait for EventECJoin and
// WaitFirstFrame.
func (h *Host) Join(ctx context.Context, roomID, intent string) (Event, error) {
	if intent == "" {
		intent = IntentJoinExistingDM
	}
	reply, err := h.Do(ctx, "join", map[string]any{"roomId": roomID, "intent": intent})
	if err != nil {
		return Event{}, err
	}
	id := widgetID(reply)
	return h.WaitMatch(ctx, EventWidgetOpened, time.Time{}, func(ev Event) bool { return ev.Str("widgetId") == id })
}

// WaitFirstFrame returns the next first-decoded-frame event from Element
// Call's frame (one per opened widget).
func (h *Host) WaitFirstFrame(ctx context.Context) (Event, error) {
	h.mu.Lock()
	ec := h.ecOrig // set by "serving", before "ready"
	h.mu.Unlock()
	ev, err := h.wait(ctx, "firstFrame", func(ev Event) bool {
		return ev.Name == EventFirstFrame && ev.Str("origin") == ec
	})
	if err != nil {
		return Event{}, fmt.Errorf("wait for Element Call's first frame: %w", err)
	}
	return ev, nil
}

// Stats returns the last stats of Element Call's frame.
func (h *Host) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stats
}

// WaitStats waits until Element Call's frame reports stats that cond
// accepts, and returns them.
func (h *Host) WaitStats(ctx context.Context, cond func(Stats) bool) (Stats, error) {
	for {
		h.mu.Lock()
		s, changed := h.stats, h.changed
		h.mu.Unlock()
		if cond(s) {
			return s, nil
		}
		if h.isExited() {
			return s, h.exitError()
		}
		select {
		case <-ctx.Done():
			return s, fmt.Errorf("wait for Element Call's stats (last %+v): %w", s, context.Cause(ctx))
		case <-changed:
		}
	}
}

// Hangup asks Element Call to leave (im.vector.hangup to the widget, as
// Element Web's hang-up button does) and waits until it has asked to be
// closed and its iframe is gone.
func (h *Host) Hangup(ctx context.Context) error {
	reply, err := h.Do(ctx, "hangup", nil)
	if err != nil {
		return err
	}
	id := widgetID(reply)
	_, err = h.WaitMatch(ctx, EventWidgetClosed, time.Time{}, func(ev Event) bool { return ev.Str("widgetId") == id })
	return err
}

// widgetID is the widget ID in a join or hangup command's reply.
func widgetID(reply Event) string {
	res, _ := reply.Fields["result"].(map[string]any)
	id, _ := res["widgetId"].(string)
	return id
}

// CreateRoomOptions describe a room the host creates.
type CreateRoomOptions struct {
	Invite    []string
	Encrypted bool // m.room.encryption (m.megolm.v1.aes-sha2) in the initial state
	Direct    bool // is_direct on the invite
	Name      string
}

// CreateRoom creates a private room in which members may write their own
// call memberships, and returns its ID once the host's sync has it.
func (h *Host) CreateRoom(ctx context.Context, opts CreateRoomOptions) (string, error) {
	invite := opts.Invite
	if invite == nil {
		invite = []string{}
	}
	ev, err := h.Do(ctx, "createRoom", map[string]any{
		"invite": invite, "encrypted": opts.Encrypted, "direct": opts.Direct, "name": opts.Name,
	})
	if err != nil {
		return "", err
	}
	return ev.Str("result"), nil
}

// Events returns a copy of every event so far (stats excepted).
func (h *Host) Events() []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Event(nil), h.events...)
}

// Do sends one command to the page (a method of window.host: join, hangup,
// close, createRoom; args become its argument) and waits for its reply.
func (h *Host) Do(ctx context.Context, cmd string, args map[string]any) (Event, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, commandTimeout)
		defer cancel()
	}
	ch := make(chan Event, 1)
	h.mu.Lock()
	h.nextID++
	id := h.nextID
	h.replies[id] = ch
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.replies, id)
		h.mu.Unlock()
	}()
	msg := map[string]any{"cmd": cmd, "id": id}
	if args != nil {
		msg["args"] = args
	}
	line, err := json.Marshal(msg)
	if err != nil {
		return Event{}, fmt.Errorf("element call host %s: %w", cmd, err)
	}
	h.writeMu.Lock()
	_, err = h.stdin.Write(append(line, '\n'))
	h.writeMu.Unlock()
	if err != nil {
		return Event{}, fmt.Errorf("element call host %s: %w", cmd, err)
	}
	select {
	case ev := <-ch:
		if msg := ev.Str("error"); msg != "" {
			return ev, fmt.Errorf("element call host %s: %s", cmd, msg)
		}
		return ev, nil
	case <-h.exited:
		return Event{}, fmt.Errorf("element call host %s: %w", cmd, h.exitError())
	case <-ctx.Done():
		return Event{}, fmt.Errorf("element call host %s: %w", cmd, context.Cause(ctx))
	}
}

// Close stops the host: it closes the driver's stdin (the driver then
// closes Chromium and exits), then sends SIGTERM and later SIGKILL to the
// driver's PID if it is still running. It returns the driver's exit error.
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		h.writeMu.Lock()
		_ = h.stdin.Close()
		h.writeMu.Unlock()
		pid := h.cmd.Process.Pid
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
			if h.waitExit(closeGrace) {
				break
			}
			fmt.Fprintf(h.log, "elementcall: driver %d still running, sending %v\n", pid, sig)
			_ = syscall.Kill(pid, sig)
		}
		<-h.exited
		h.closeErr = h.exitErr
	})
	return h.closeErr
}

func (h *Host) waitExit(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-h.exited:
		return true
	case <-t.C:
		return false
	}
}

// syncWriter serialises writes from the stderr copier and the event reader.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// tailBuffer keeps the last max bytes written, for error messages.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(bytes.TrimSpace(b.buf))
}

// testWriter sends whole lines to t.Log, after prefix.
type testWriter struct {
	mu     sync.Mutex
	t      testing.TB
	prefix string
	buf    []byte
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.t.Log(w.prefix + string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}
