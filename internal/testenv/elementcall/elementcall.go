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
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/nodeproc"
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
)

// Host is one running host: a node process (driver.mjs) with its Chromium.
// Its methods are safe for concurrent use.
type Host struct {
	p     *nodeproc.Proc
	ready Event // set by Start, read-only after

	mu     sync.Mutex
	stats  Stats  // the last stats of Element Call's frame
	ecOrig string // Element Call's origin, from "serving"
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
	var args []string
	if opts.AutoJoin {
		args = append(args, "--autojoin")
	}
	if opts.Encryption {
		args = append(args, "--encryption")
	}
	h := &Host{}
	h.p, h.ready, err = nodeproc.Start(ctx, nodeproc.Options{
		Name: "elementcall",
		Dir:  dir,
		Args: args,
		Env: []string{
			"ELEMENTCALL_HOMESERVER=" + opts.Homeserver,
			"ELEMENTCALL_USER=" + opts.UserID,
			"ELEMENTCALL_PASSWORD=" + opts.Password,
			"ELEMENTCALL_SERVICE_URL=" + opts.ServiceURL,
		},
		Log:    opts.Log,
		Quiet:  []string{EventStats},
		Handle: h.handle,
	})
	if err != nil {
		return nil, fmt.Errorf("start element call host %s: %w", opts.UserID, err)
	}
	return h, nil
}

// handle learns Element Call's origin from "serving" and keeps the last
// stats of Element Call's frame, which stay out of the event log (one
// every 250 ms per frame).
func (h *Host) handle(ev Event) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch ev.Name {
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
		return false
	}
	return true
}

// StartT starts a host for a test and closes it in t.Cleanup. Without
// opts.Log, the host logs to t.Log.
func StartT(t testing.TB, opts Options) *Host {
	t.Helper()
	if opts.Log == nil {
		opts.Log = nodeproc.TestLog(t, "")
	}
	return nodeproc.StartT(t, "element call host", startTimeout, func(ctx context.Context) (*Host, error) { return Start(ctx, opts) })
}

// UserID is the logged-in user.
func (h *Host) UserID() string { return h.ready.Str("userId") }

// DeviceID is the host's device, which Element Call uses too.
func (h *Host) DeviceID() string { return h.ready.Str("deviceId") }

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

// WaitFor returns the next event called name: the first one after the event
// of that name WaitFor returned last, whether it already came or is still
// to come.
func (h *Host) WaitFor(ctx context.Context, name string) (Event, error) {
	return h.p.WaitFor(ctx, name)
}

// WaitMatch returns the first event called name emitted at or after since
// that match accepts (nil accepts any), whatever the other waits returned.
func (h *Host) WaitMatch(ctx context.Context, name string, since time.Time, match func(Event) bool) (Event, error) {
	ev, err := h.p.Wait(ctx, "", func(ev Event) bool {
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
	ev, err := h.p.Wait(ctx, "ring:"+roomID, func(ev Event) bool {
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
	ev, err := h.p.Wait(ctx, "firstFrame", func(ev Event) bool {
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
	var s Stats
	err := h.p.Await(ctx, func() bool {
		h.mu.Lock()
		s = h.stats
		h.mu.Unlock()
		return cond(s)
	})
	if err != nil {
		return s, fmt.Errorf("wait for Element Call's stats (last %+v): %w", s, err)
	}
	return s, nil
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
func (h *Host) Events() []Event { return h.p.Events() }

// Do sends one command to the page (a method of window.host: join, hangup,
// close, createRoom; args become its argument) and waits for its reply.
func (h *Host) Do(ctx context.Context, cmd string, args map[string]any) (Event, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, commandTimeout)
		defer cancel()
	}
	msg := map[string]any{"cmd": cmd}
	if args != nil {
		msg["args"] = args
	}
	ev, err := h.p.Do(ctx, msg)
	if err != nil {
		return ev, fmt.Errorf("element call host %s: %w", cmd, err)
	}
	return ev, nil
}

// Close stops the host: it closes the driver's stdin (the driver then
// closes Chromium and exits), then sends SIGTERM and later SIGKILL to the
// driver's PID if it is still running. It returns the driver's exit error.
func (h *Host) Close() error { return h.p.Close() }
