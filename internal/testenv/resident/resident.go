// Package resident runs the reference Matrix VoIP client that stands in for a
// resident in the end-to-end tests and the demo: matrix-js-sdk (the SDK of
// Element Web) in headless Chromium, driven by Playwright from driver.mjs.
// It answers the intercom's classic 1:1 calls (Matrix spec, VoIP module,
// version "1") with Chromium's fake camera and microphone and reports what it
// receives as events with the page's timestamps. It also takes part in
// MatrixRTC calls as Element Call and Element X do (rtc.go, page/rtc.js):
// per-device org.matrix.msc3401.call.member state, rings
// (org.matrix.msc4075.rtc.notification) and declines, media through a
// LiveKit SFU with livekit-client. With Options.Encryption it uses
// end-to-end encryption as Element does (matrix-js-sdk's rust crypto, Olm and
// Megolm), optionally with a cross-signed device (Options.CrossSign).
//
// It needs node, npm and Chromium (/usr/bin/chromium, or $CHROMIUM). Setup
// installs the pinned npm packages and bundles the page on first use.
package resident

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

// Options configure one resident.
type Options struct {
	Homeserver string // base URL, e.g. "http://127.0.0.1:8008"
	UserID     string // for a password login: "@bob:localhost" or "bob"
	Password   string
	// AccessToken logs in as an existing device instead of UserID and
	// Password (which create a new device). matrix-js-sdk uses the device
	// ID as its VoIP party_id and ignores call events that carry its own
	// party_id, so the two ends of a call must not share a device ID; the
	// tokens of shared-secret registration all have the device
	// "shared_secret_registration".
	AccessToken string
	AutoAnswer  bool // answer as soon as a call rings
	AutoJoin    bool // join every room the user is invited to
	// AnyInterface keeps ICE candidates of every interface; by default the
	// page uses (and accepts) only loopback candidates, so that tests stay
	// on 127.0.0.1 and ::1.
	AnyInterface bool
	// ForceTURN makes the page gather and use relay candidates only
	// (matrix-js-sdk's createClient forceTURN: iceTransportPolicy
	// "relay"), with the homeserver's TURN servers; Start then also waits
	// until the page has them.
	ForceTURN bool
	// NoICERestart keeps js-sdk from restarting ICE by itself (it does on
	// "failed" and after 2 s "disconnected"), so that a test sees the far
	// end drive the restart. RestartICE still works.
	NoICERestart bool
	// Encryption initialises matrix-js-sdk's rust crypto (Olm/Megolm, as
	// Element Web) before the first sync: the resident then reads and
	// writes encrypted rooms, and "ready" waits until the homeserver lists
	// the device's keys, so that others can encrypt to it at once. The
	// crypto store is in memory: each Start is a new Olm device, so it needs
	// a password login (a new device), or an access token whose device has
	// never uploaded keys. It costs a start about 0.5–1.1 s here
	// (initRustCrypto, mostly compiling the wasm) plus 0.05–0.2 s until
	// the keys are listed.
	Encryption bool
	// CrossSign (needs Encryption, UserID and Password) creates a new
	// cross-signing identity for the user (master, self-signing and
	// user-signing keys; Matrix spec, Client-Server API, Cross-signing) and
	// signs this device with it; the password answers the user-interactive
	// auth of the key upload. "ready" then says crossSigned: true. Any other
	// device of the same user, started before or after without CrossSign,
	// stays unsigned: so a cross-signed and an unsigned device of one user
	// are two residents of that user, one with CrossSign and one without;
	// a signed and an unsigned user are two users, likewise. Each CrossSign
	// start replaces the user's identity, so only the latest CrossSign
	// device of a user is signed by its current keys.
	CrossSign bool
	// Bursts turns the page into a mouth-to-ear instrument
	// (../nodeproc/page/bursts.js, media/burst.go): its microphone sends
	// timestamped tone bursts (phase media.BurstPhaseResident) instead of
	// the fake device's beep, and the door's bursts are detected in every
	// remote audio track as the page's WebAudio renders it (see Burst).
	Bursts bool
	// Log receives the driver's diagnostics, the page's console and every
	// event but stats. Nil discards them.
	Log io.Writer
}

// Timeouts.
const (
	// startTimeout bounds Start when its context has no deadline: setup,
	// Chromium's start, login and the first sync.
	startTimeout = 2 * time.Minute
	// commandTimeout bounds Answer, Reject, Hangup and PlaceCall.
	commandTimeout = 30 * time.Second
)

// Resident is one running resident: a node process (driver.mjs) with its
// Chromium. Its methods are safe for concurrent use.
type Resident struct {
	p     *nodeproc.Proc
	ready Event // set by Start, read-only after

	mu     sync.Mutex
	stats  Stats
	rtc    RTCStats
	glass  []Glass // every EventGlass, in arrival order
	bursts []Burst // every EventBurst, in arrival order
}

// Start sets up the package (see Setup), spawns `node driver.mjs`, and
// returns once the page has logged in, finished its first sync and listens
// for calls (event "ready"). ctx bounds only the start; the resident runs
// until Close.
func Start(ctx context.Context, opts Options) (*Resident, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	if opts.Homeserver == "" || (opts.AccessToken == "" && (opts.UserID == "" || opts.Password == "")) {
		return nil, errors.New("resident: need Homeserver and AccessToken, or UserID and Password")
	}
	if opts.CrossSign && (!opts.Encryption || opts.UserID == "" || opts.Password == "" || opts.AccessToken != "") {
		return nil, errors.New("resident: CrossSign needs Encryption and a password login (UserID and Password, no AccessToken)")
	}
	dir, err := Setup(ctx)
	if err != nil {
		return nil, err
	}
	var args []string
	for _, f := range []struct {
		on   bool
		flag string
	}{
		{opts.AutoAnswer, "--autoanswer"},
		{opts.AutoJoin, "--autojoin"},
		{opts.AnyInterface, "--no-loopback"},
		{opts.ForceTURN, "--force-turn"},
		{opts.NoICERestart, "--no-ice-restart"},
		{opts.Encryption, "--encryption"},
		{opts.CrossSign, "--cross-sign"},
		{opts.Bursts, "--bursts"},
	} {
		if f.on {
			args = append(args, f.flag)
		}
	}
	r := &Resident{}
	r.p, r.ready, err = nodeproc.Start(ctx, nodeproc.Options{
		Name: "resident",
		Dir:  dir,
		Args: args,
		Env: []string{
			"RESIDENT_HOMESERVER=" + opts.Homeserver,
			"RESIDENT_USER=" + opts.UserID,
			"RESIDENT_PASSWORD=" + opts.Password,
			"RESIDENT_ACCESS_TOKEN=" + opts.AccessToken,
		},
		Log:    opts.Log,
		Quiet:  []string{EventStats, EventRTCStats, EventGlass, EventBurst},
		Handle: r.handle,
	})
	if err != nil {
		return nil, fmt.Errorf("start resident %s: %w", opts.UserID, err)
	}
	return r, nil
}

// handle keeps the latest stats and rtcStats for LastStats and
// LastRTCStats, and the glass events for Glass; every event but those
// stays in the log (a call presents 15 frames a second).
func (r *Resident) handle(ev Event) bool {
	switch ev.Name {
	case EventGlass:
		var g Glass
		if err := ev.Decode(&g); err == nil {
			r.mu.Lock()
			r.glass = append(r.glass, g)
			r.mu.Unlock()
		}
		return false
	case EventBurst:
		var b Burst
		if err := ev.Decode(&b); err == nil {
			r.mu.Lock()
			r.bursts = append(r.bursts, b)
			r.mu.Unlock()
		}
		return false
	case EventStats:
		var s Stats
		if err := ev.Decode(&s); err == nil {
			s.TS = ev.TS
			r.mu.Lock()
			r.stats = s
			r.mu.Unlock()
		}
	case EventRTCStats:
		var s RTCStats
		if err := ev.Decode(&s); err == nil {
			s.TS = ev.TS
			r.mu.Lock()
			r.rtc = s
			r.mu.Unlock()
		}
	}
	return true
}

// StartT starts a resident for a test and stops it in t.Cleanup. Without
// opts.Log, the resident logs to t.Log.
func StartT(t testing.TB, opts Options) *Resident {
	t.Helper()
	if opts.Log == nil {
		opts.Log = nodeproc.TestLog(t, "")
	}
	return nodeproc.StartT(t, "resident", startTimeout, func(ctx context.Context) (*Resident, error) { return Start(ctx, opts) })
}

// WaitFor returns the next event called name: the first one after the event
// of that name WaitFor returned last, whether it already came or is still
// to come. Events of other names do not affect it.
func (r *Resident) WaitFor(ctx context.Context, name string) (Event, error) {
	return r.p.WaitFor(ctx, name)
}

// Events returns a copy of every event so far (not command replies).
func (r *Resident) Events() []Event { return r.p.Events() }

// LastStats returns the latest stats event (zero before the first call).
func (r *Resident) LastStats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// LastRTCStats returns the latest rtcStats event (zero before the first
// MatrixRTC call).
func (r *Resident) LastRTCStats() RTCStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rtc
}

// Bursts returns the burst events (one per onset heard, Options.Bursts)
// that arrived since the previous call of Bursts, and forgets them.
func (r *Resident) Bursts() []Burst {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.bursts
	r.bursts = nil
	return b
}

// Glass returns the glass events (one per presented remote video frame)
// that arrived since the previous call of Glass, and forgets them.
func (r *Resident) Glass() []Glass {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.glass
	r.glass = nil
	return g
}

// UserID is the logged-in user, as the "ready" event reported it.
func (r *Resident) UserID() string { return r.ready.Str("userId") }

// DeviceID is the device the page logged in as; matrix-js-sdk uses it as its
// party_id (Matrix spec, VoIP: party identifiers).
func (r *Resident) DeviceID() string { return r.ready.Str("deviceId") }

// Ready returns the "ready" event: userId, deviceId, turnServers and, with
// encryption, the device's keys and whether it is cross-signed (see
// EventReady).
func (r *Resident) Ready() Event { return r.ready }

// CrossSigned reports whether this device is signed by its user's
// self-signing key, as matrix-js-sdk saw it when the page became ready.
func (r *Resident) CrossSigned() bool {
	b, _ := r.ready.Fields["crossSigned"].(bool)
	return b
}

// Answer answers the current call, which must be ringing.
func (r *Resident) Answer() error { return r.simple("answer", nil) }

// Click clicks the page element matching the CSS selector as a person
// would (it must be visible), e.g. "#answer" or "#ring".
func (r *Resident) Click(selector string) error {
	return r.simple("click", map[string]any{"selector": selector})
}

// Reject rejects the ringing call (m.call.reject).
func (r *Resident) Reject() error { return r.simple("reject", nil) }

// Hangup ends the current call (m.call.hangup, reason user_hangup).
func (r *Resident) Hangup() error { return r.simple("hangup", nil) }

// PlaceCall places a video call into a joined room; the "placing" event
// carries its call ID.
func (r *Resident) PlaceCall(roomID string) error {
	return r.simple("placeCall", map[string]any{"roomId": roomID})
}

// SendText posts an m.text message with body into a joined room and
// returns its event ID. With Encryption and an encrypted room, matrix-js-sdk
// encrypts it (Megolm) for the devices of the room's members.
func (r *Resident) SendText(ctx context.Context, roomID, body string) (string, error) {
	ev, err := r.Do(ctx, "sendText", map[string]any{"args": map[string]any{"roomId": roomID, "body": body}})
	if err != nil {
		return "", err
	}
	return ev.Str("result"), nil
}

// React annotates eventID in roomID with key (m.reaction) and returns the
// reaction's event ID. Like Element Web, matrix-js-sdk sends a reaction in
// the clear even in an encrypted room (its relation would show anyway); see
// ReactEncrypted.
func (r *Resident) React(ctx context.Context, roomID, eventID, key string) (string, error) {
	return r.react(ctx, roomID, eventID, key, false)
}

// ReactEncrypted is React for an encrypted room (it needs Encryption), with
// the reaction encrypted (m.room.encrypted, m.relates_to in the clear), as
// clients that do not make js-sdk's exception for reactions send it.
func (r *Resident) ReactEncrypted(ctx context.Context, roomID, eventID, key string) (string, error) {
	return r.react(ctx, roomID, eventID, key, true)
}

func (r *Resident) react(ctx context.Context, roomID, eventID, key string, encrypt bool) (string, error) {
	ev, err := r.Do(ctx, "react", map[string]any{"args": map[string]any{"roomId": roomID, "eventId": eventID, "key": key, "encrypt": encrypt}})
	if err != nil {
		return "", err
	}
	return ev.Str("result"), nil
}

// CreateRoomOptions describe a room a resident creates.
type CreateRoomOptions struct {
	Invite []string // user IDs to invite
	// Encrypted puts m.room.encryption (m.megolm.v1.aes-sha2) in the
	// room's initial state, as Element does for every private room.
	Encrypted bool
	// Direct makes it a direct chat with Invite[0]: is_direct on the
	// invite and the m.direct account data Element keeps.
	Direct bool
	Name   string // optional m.room.name
}

// CreateRoom creates a private room (preset private_chat) as this resident
// and returns its ID once the page's sync has it joined.
func (r *Resident) CreateRoom(ctx context.Context, opts CreateRoomOptions) (string, error) {
	invite := opts.Invite
	if invite == nil {
		invite = []string{}
	}
	ev, err := r.Do(ctx, "createRoom", map[string]any{"args": map[string]any{
		"invite": invite, "encrypted": opts.Encrypted, "direct": opts.Direct, "name": opts.Name,
	}})
	if err != nil {
		return "", err
	}
	return ev.Str("result"), nil
}

// VideoCapabilities lists the video codecs Chromium can receive over WebRTC
// (RTCRtpReceiver.getCapabilities("video")), as "mimeType;fmtp".
func (r *Resident) VideoCapabilities(ctx context.Context) ([]string, error) {
	ev, err := r.Do(ctx, "videoCapabilities", nil)
	if err != nil {
		return nil, err
	}
	list, _ := ev.Fields["result"].([]any)
	caps := make([]string, 0, len(list))
	for _, c := range list {
		if s, ok := c.(string); ok {
			caps = append(caps, s)
		}
	}
	return caps, nil
}

// ICEUfrags are the ICE username fragments (RFC 8839 a=ice-ufrag) of the
// page's local and remote descriptions.
type ICEUfrags struct {
	Local  string `json:"localUfrag"`
	Remote string `json:"remoteUfrag"`
}

// Hold puts the intercom on hold (onHold true) or takes it off again with
// js-sdk's call.setRemoteOnHold: every transceiver becomes sendonly (or
// sendrecv again), and js-sdk sends an m.call.negotiate offer. The answer
// comes as an EventNegotiate. It returns the ufrags in use when it asked.
func (r *Resident) Hold(ctx context.Context, onHold bool) (ICEUfrags, error) {
	ev, err := r.Do(ctx, "hold", map[string]any{"args": map[string]any{"onHold": onHold}})
	if err != nil {
		return ICEUfrags{}, err
	}
	return ufragsOf(ev)
}

// Mute mutes (or unmutes) the microphone with js-sdk's
// call.setMicrophoneMuted, as Element's microphone button does: the track
// is disabled, so Chromium goes on sending packets, of silence.
func (r *Resident) Mute(ctx context.Context, muted bool) error {
	_, err := r.Do(ctx, "mute", map[string]any{"args": map[string]any{"muted": muted}})
	return err
}

// RestartICE restarts ICE from the page (RTCPeerConnection.restartIce);
// js-sdk then sends an m.call.negotiate offer with new ICE credentials
// from its negotiationneeded handler. It returns the ufrags in use before.
func (r *Resident) RestartICE(ctx context.Context) (ICEUfrags, error) {
	ev, err := r.Do(ctx, "restartIce", nil)
	if err != nil {
		return ICEUfrags{}, err
	}
	return ufragsOf(ev)
}

func ufragsOf(reply Event) (ICEUfrags, error) {
	var u struct {
		Result ICEUfrags `json:"result"`
	}
	if err := reply.Decode(&u); err != nil {
		return ICEUfrags{}, fmt.Errorf("decode ufrags: %w", err)
	}
	return u.Result, nil
}

func (r *Resident) simple(cmd string, args map[string]any) error {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	_, err := r.Do(ctx, cmd, args)
	return err
}

// Do sends one command to the page (a method of window.resident: answer,
// reject, hangup, placeCall, videoCapabilities, rtcJoin, createRoom,
// sendImage, downloadImage, …; args may carry
// "callId", "roomId" or "args") and waits for its reply, whose "result" field holds the value
// the method returned.
func (r *Resident) Do(ctx context.Context, cmd string, args map[string]any) (Event, error) {
	msg := map[string]any{}
	for k, v := range args {
		msg[k] = v
	}
	msg["cmd"] = cmd
	ev, err := r.p.Do(ctx, msg)
	if err != nil {
		return ev, fmt.Errorf("resident %s: %w", cmd, err)
	}
	return ev, nil
}

// Close stops the resident: it closes the driver's stdin (the driver then
// closes Chromium and exits), sends SIGTERM to the driver's PID if it has not
// exited after a grace period, and SIGKILL after another. It returns the
// driver's exit error, if any.
func (r *Resident) Close() error { return r.p.Close() }
