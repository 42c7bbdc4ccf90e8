package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/group"
	"github.com/doorbell/intercom/callengine/rtc"
	"github.com/doorbell/intercom/matrix/matrixtest"
	"github.com/doorbell/intercom/provisioning"
	"github.com/doorbell/intercom/provisioning/provisioningtest"
)

// The daemon's tests in -short mode: Run in-process against
// matrixtest's homeserver, with simulated pins, the test pattern and the
// tone, its API on a free port of 127.0.0.1 and ICE on loopback.

// testPassword is the password file provisioningtest writes.
const testPassword = "hunter2-secret"

// runConfig is the base configuration of these tests; %s is the fake
// homeserver's URL, %v matrix.encryption. api.listen is replaced by a
// free port after loading.
const runConfig = `matrix:
  homeserver: %s
  user_id: "@door:hs.test"
  password_file: ./password
  device_name: Front door
  encryption: %v
state_dir: ./state
residents: ["@alice:hs.test"]
hardware:
  gpio: sim
  camera: testpattern
  audio: tone
api:
  listen: 127.0.0.1:8080
log:
  level: debug
`

// newHS starts the fake homeserver for the intercom's account.
func newHS(t testing.TB) *matrixtest.Server {
	t.Helper()
	return matrixtest.NewServer(t, matrixtest.Options{Password: testPassword, IdlePoll: time.Second})
}

// running is one Run of the daemon.
type running struct {
	t        testing.TB
	hs       *matrixtest.Server
	path     string // the config file
	logs     *logSink
	api      string // host:port of the API
	token    string // api.token_file's token, sent by get
	stop     context.CancelFunc
	finished chan struct{} // closed when Run has returned err
	err      error
}

// writeConfig writes the base configuration for hs plus extra YAML and
// returns the file's path.
//
// Encryption is off: the fake homeserver stores and relays events but
// cannot decrypt them, and these tests read the intercom's call events.
// The crypto's own tests run against Dendrite (matrix/e2ee_dendrite_test.go,
// cmd/intercom/e2e); provision's tests turn it on (writeConfigWith).
func writeConfig(t *testing.T, hs *matrixtest.Server, extra string) string {
	t.Helper()
	return writeConfigWith(t, hs, false, extra)
}

func writeConfigWith(t *testing.T, hs *matrixtest.Server, encrypted bool, extra string) string {
	t.Helper()
	return provisioningtest.WriteConfig(t, fmt.Sprintf(runConfig, hs.URL, encrypted)+extra, 0o600)
}

// TestMain keeps ICE on loopback (loopbackOnly) and keeps Run's
// sd_notify from reaching a service manager the tests may run under, for
// every test, so the daemon's tests can run in parallel.
func TestMain(m *testing.M) {
	os.Setenv("INTERCOM_ICE_LOOPBACK", "1")
	os.Unsetenv("NOTIFY_SOCKET")
	os.Unsetenv("WATCHDOG_USEC")
	os.Exit(m.Run())
}

// startDaemon runs the daemon with the configuration at path until the
// test ends, and waits until its API answers and it is healthy (its
// first sync went through).
func startDaemon(t *testing.T, hs *matrixtest.Server, path string) *running {
	t.Helper()
	return startDaemonWith(t, hs, path, runHooks{})
}

// startDaemonWith is startDaemon with hooks into the Run.
func startDaemonWith(t testing.TB, hs *matrixtest.Server, path string, hooks runHooks) *running {
	t.Helper()
	cfg, err := provisioning.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.API.Listen = "127.0.0.1:0" // the config refuses port 0; Run takes it
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{t: t, hs: hs, path: path, logs: newLogSink(), stop: cancel, finished: make(chan struct{}), token: cfg.API.Token}
	go func() {
		defer close(r.finished)
		r.err = run(ctx, cfg, "test", r.logs, hooks)
	}()
	t.Cleanup(func() {
		if err := r.shutdown(); err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", r.logs.String())
		}
	})
	line := r.logs.waitOr(t, r.finished, `msg="intercom ready"`)
	m := regexp.MustCompile(` api=(\S+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no API address in %q", line)
	}
	r.api = m[1]
	r.waitHTTP("healthy", "/healthz", func(code int, _ []byte) bool { return code == http.StatusOK })
	return r
}

// shutdown cancels Run's context and returns what Run returned; a Run
// that does not return within 10 s is an error.
func (r *running) shutdown() error {
	r.stop()
	select {
	case <-r.finished:
		return r.err
	case <-time.After(10 * time.Second):
		return fmt.Errorf("Run did not return within 10 s of cancel")
	}
}

func (r *running) get(path string) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+r.api+path, nil)
	if err != nil {
		return 0, nil, err
	}
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// waitHTTP polls GET path until ok accepts the answer, for up to 10 s.
func (r *running) waitHTTP(what, path string, ok func(code int, body []byte) bool) []byte {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for {
		code, body, err := r.get(path)
		if err == nil && ok(code, body) {
			return body
		}
		last = fmt.Sprintf("%d %s %v", code, body, err)
		if time.Now().After(deadline) {
			r.t.Fatalf("waiting for %s: last answer of %s: %.2000s", what, path, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runStatus is the part of /api/status these tests read.
type runStatus struct {
	State   callengine.Phase        `json:"state"`
	Healthy bool                    `json:"healthy"`
	Calls   []callengine.CallStatus `json:"calls"`
	Matrix  matrixStatus            `json:"matrix"`
	Presses uint64                  `json:"presses"`
}

// waitStatus polls /api/status until ok accepts it.
func (r *running) waitStatus(what string, ok func(runStatus) bool) runStatus {
	r.t.Helper()
	var st runStatus
	r.waitHTTP(what, "/api/status", func(code int, body []byte) bool {
		st = runStatus{}
		return code == http.StatusOK && json.Unmarshal(body, &st) == nil && ok(st)
	})
	return st
}

// press rings the bell through the API.
func (r *running) press() {
	r.t.Helper()
	resp, err := http.Post("http://"+r.api+"/api/ring", "", nil)
	if err != nil {
		r.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		r.t.Fatalf("POST /api/ring: %s", resp.Status)
	}
}

// directRoom is the room the intercom made for user.
func (r *running) directRoom(user string) string {
	r.t.Helper()
	var direct map[string][]string
	raw, _ := r.hs.AccountData("m.direct")
	if err := json.Unmarshal(raw, &direct); err != nil || len(direct[user]) == 0 {
		r.t.Fatalf("no direct room for %s in m.direct %s", user, raw)
	}
	return direct[user][len(direct[user])-1]
}

// invite waits for the n-th (from 0) classic call invite into room and
// decodes it as the resident's client would.
func (r *running) invite(room string, n int) (matrixtest.Event, *callengine.Invite) {
	r.t.Helper()
	var e matrixtest.Event
	r.await(fmt.Sprintf("invite %d into %s", n, room), func() bool {
		var in []matrixtest.Event
		for _, e := range r.hs.Sent(callengine.TypeInvite) {
			if e.Room == room {
				in = append(in, e)
			}
		}
		if len(in) > n {
			e = in[n]
			return true
		}
		return false
	})
	v, err := callengine.Decode(e.Type, e.Content)
	if err != nil {
		r.t.Fatalf("invite does not decode: %v\n%s", err, e.Content)
	}
	return e, v.(*callengine.Invite)
}

// await waits up to 10 s for cond, checked at every request the
// homeserver gets.
func (r *running) await(what string, cond func() bool) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.t.Context(), 10*time.Second)
	defer cancel()
	if err := r.hs.Await(ctx, cond); err != nil {
		r.t.Fatalf("waiting for %s: %v", what, err)
	}
}

// logSink is the daemon's log: kept for the test to read and wait on,
// printed only when the test fails.
type logSink struct {
	mu      sync.Mutex
	b       strings.Builder
	changed chan struct{}
}

func newLogSink() *logSink { return &logSink{changed: make(chan struct{})} }

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	close(l.changed)
	l.changed = make(chan struct{})
	return l.b.Write(p)
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// wait returns the first log line containing all of parts, waiting up
// to 10 s for it.
func (l *logSink) wait(t testing.TB, parts ...string) string {
	t.Helper()
	return l.waitOr(t, nil, parts...)
}

// waitOr is wait that gives up when stop is closed (Run returned).
func (l *logSink) waitOr(t testing.TB, stop <-chan struct{}, parts ...string) string {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		text, ch := l.b.String(), l.changed
		l.mu.Unlock()
		if line, ok := findLine(text, parts...); ok {
			return line
		}
		select {
		case <-ch:
		case <-stop:
			t.Fatalf("no log line with %q: the daemon stopped", parts)
		case <-deadline.C:
			t.Fatalf("no log line with %q within 10 s", parts)
		}
	}
}

// findLine returns the first line of text that contains all of parts.
func findLine(text string, parts ...string) (string, bool) {
	for line := range strings.Lines(text) {
		all := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				all = false
				break
			}
		}
		if all {
			return strings.TrimRight(line, "\n"), true
		}
	}
	return "", false
}

// resident is a call event from user, as the resident's client sends it:
// the common fields of c and extra.
func resident(room, user, eventType string, c callengine.Common, extra map[string]any) matrixtest.Event {
	content := map[string]any{"call_id": c.CallID, "party_id": c.PartyID, "version": c.Version}
	for k, v := range extra {
		content[k] = v
	}
	return matrixtest.Message(room, user, eventType, content)
}

// TestRunRingAndReject: the daemon starts against the homeserver, makes
// alice's room, gets healthy; a press sends alice a classic call invite
// that her client can decode and posts the ring notice; her reject ends
// the ring, a second press rings again and her hangup ends that one too.
func TestRunRingAndReject(t *testing.T) {
	t.Parallel()
	hs := newHS(t)
	r := startDaemon(t, hs, writeConfig(t, hs, ""))
	room := r.directRoom("@alice:hs.test")
	if hs.Membership(room, "@alice:hs.test") != "invite" {
		t.Errorf("alice is %q in her room", hs.Membership(room, "@alice:hs.test"))
	}
	st := r.waitStatus("idle", func(s runStatus) bool { return s.State == callengine.PhaseIdle })
	if !st.Healthy || !st.Matrix.Syncing || st.Matrix.UserID != "@door:hs.test" || st.Matrix.DeviceID == "" {
		t.Errorf("status %+v", st)
	}

	for i, answer := range []string{callengine.TypeReject, callengine.TypeHangup} {
		r.press()
		ev, inv := r.invite(room, i)
		if inv.Offer.Type != "offer" || !strings.HasPrefix(inv.Offer.SDP, "v=0") || inv.Version != "1" || inv.Lifetime <= 0 {
			t.Errorf("invite %s", ev.Content)
		}
		r.waitStatus("ringing", func(s runStatus) bool { return s.State == callengine.PhaseRinging })
		hs.Deliver(resident(room, "@alice:hs.test", answer, callengine.Common{CallID: inv.CallID, PartyID: "ALICE", Version: "1"}, nil))
		r.waitStatus("idle after "+answer, func(s runStatus) bool { return s.State == callengine.PhaseIdle })
	}

	// Each ring's notice, and its snapshot, went to alice's room.
	r.await("two ring notices with snapshots", func() bool {
		text, pictures := 0, 0
		for _, e := range hs.Sent("m.room.message") {
			var c struct{ MsgType, Body, URL string }
			if e.Room != room || json.Unmarshal(e.Content, &c) != nil {
				continue
			}
			switch {
			case c.MsgType == "m.text" && strings.Contains(c.Body, "Someone is at the door"):
				text++
			case c.MsgType == "m.image" && strings.HasPrefix(c.URL, "mxc://hs.test/"):
				pictures++
			}
		}
		return text == 2 && pictures == 2
	})
	if ups := hs.Uploads(); len(ups) != 2 || ups[0].ContentType != "image/jpeg" {
		t.Errorf("uploads %d", len(ups))
	}
}

// TestRunReloadResidents: SIGHUP with bob added to the residents makes
// his room (named, as at start), takes up his room invite, and the next
// press rings alice and bob.
func TestRunReloadResidents(t *testing.T) {
	t.Parallel()
	hs := newHS(t)
	r := startDaemon(t, hs, writeConfig(t, hs, ""))
	alice := r.directRoom("@alice:hs.test")
	reloadTo(t, r, strings.Replace(r.configText(t), `residents: ["@alice:hs.test"]`, `residents: ["@alice:hs.test", "@bob:hs.test"]`, 1))
	r.logs.wait(t, `msg=reloaded`, "applied=", "residents")
	bob := r.directRoom("@bob:hs.test")
	if name, _ := hs.StateOf(bob, "m.room.name", ""); !strings.Contains(string(name), "Front door") {
		t.Errorf("bob's room is named %s", name)
	}
	if hs.Membership(bob, "@bob:hs.test") != "invite" {
		t.Errorf("bob is %q in his room", hs.Membership(bob, "@bob:hs.test"))
	}

	// An invite from bob is now one from a resident.
	hs.Invite("!frombob:hs.test", "@bob:hs.test")
	r.await("join of bob's room", func() bool { return hs.Membership("!frombob:hs.test", "@door:hs.test") == "join" })

	r.press()
	_, ia := r.invite(alice, 0)
	_, ib := r.invite(bob, 0)
	if ia.Invitee != "@alice:hs.test" || ib.Invitee != "@bob:hs.test" {
		t.Errorf("invitees %s, %s", ia.Invitee, ib.Invitee)
	}
	st := r.waitStatus("two calls ringing", func(s runStatus) bool { return s.State == callengine.PhaseRinging && len(s.Calls) == 2 })
	if st.Calls[0].Room == st.Calls[1].Room {
		t.Errorf("calls %+v", st.Calls)
	}
}

// configText is the configuration file as it is now.
func (r *running) configText(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(r.path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// reloadTo writes cfg into the running daemon's file and sends this
// process SIGHUP, as systemctl reload does; every running daemon of
// the test binary reloads (the others find nothing changed).
func reloadTo(t *testing.T, r *running, cfg string) {
	t.Helper()
	if err := os.WriteFile(r.path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

// liveKitProcess is held by each test whose daemon has MatrixRTC on, for
// the test's whole length: media/livekit.SetProcessLogger sets the
// LiveKit SDK's process-wide logger without a lock (one daemon per
// process in production), so two such daemons in this test binary would
// race.
var liveKitProcess sync.Mutex

func lockLiveKit(t *testing.T) {
	liveKitProcess.Lock()
	t.Cleanup(liveKitProcess.Unlock) // after the daemon's cleanup, registered later
}

// sfuService is a stand-in for the LiveKit JWT service (lk-jwt-service);
// there is no SFU in these tests. answer answers every request; room is
// the one a valid /sfu/get asks for, else "".
type sfuService struct {
	*httptest.Server
	mu    sync.Mutex
	rooms []string // the rooms asked for, in order
}

func newSFUService(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, room string)) *sfuService {
	t.Helper()
	s := &sfuService{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		room := ""
		if r.URL.Path == "/sfu/get" {
			var req struct {
				Room   string `json:"room"`
				OpenID struct {
					AccessToken string `json:"access_token"`
				} `json:"openid_token"`
				DeviceID string `json:"device_id"`
			}
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.OpenID.AccessToken == "" || req.DeviceID == "" {
				http.Error(w, "bad request", http.StatusBadRequest)
				return
			}
			s.mu.Lock()
			s.rooms = append(s.rooms, req.Room)
			s.mu.Unlock()
			room = req.Room
		}
		answer(w, r, room)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *sfuService) asked() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.rooms)
}

// TestRunHouseholdAndMatrixRTC: with the household mesh and MatrixRTC
// (with the household room) on, a press rings every path: alice's
// classic call, the household call's membership and ring, and MatrixRTC
// memberships and rings in alice's room and the household room, whose
// SFU joins wait on a token service that does not answer. The ring
// notice goes to the household room too. Cancelling Run's context
// returns nil with every membership cleared.
func TestRunHouseholdAndMatrixRTC(t *testing.T) {
	t.Parallel()
	lockLiveKit(t)
	hs := newHS(t)
	const home = "!home:hs.test"
	hs.SetAlias("#household:hs.test", home)
	hs.SetMembership(home, "@alice:hs.test", "join")
	sfu := newSFUService(t, func(w http.ResponseWriter, r *http.Request, _ string) { <-r.Context().Done() })
	r := startDaemon(t, hs, writeConfig(t, hs, `household:
  room: "#household:hs.test"
  group_call: mesh
matrixrtc:
  enabled: true
  livekit_service_url: `+sfu.URL+`
  household: true
`))
	alice := r.directRoom("@alice:hs.test")
	st := r.waitStatus("household room known to MatrixRTC", func(s runStatus) bool {
		return s.Matrix.Household != nil && s.Matrix.MatrixRTC != nil && slices.Contains(s.Matrix.MatrixRTC.HouseholdRooms, home)
	})
	if hs.Membership(home, "@door:hs.test") != "join" {
		t.Fatalf("intercom is %q in the household room", hs.Membership(home, "@door:hs.test"))
	}
	// MatrixRTC readied alice's room: its call slot is open.
	r.await("open call slot", func() bool {
		slot, ok := hs.StateOf(alice, rtc.TypeSlot, rtc.Slot)
		return ok && rtc.SlotOpen(slot)
	})

	r.press()
	r.invite(alice, 0)
	hh := hs.WaitSent(t, group.TypeMember, func(e matrixtest.Event) bool {
		return e.Room == home && *e.StateKey == "@door:hs.test" && strings.Contains(string(e.Content), `"device_id"`)
	})
	self := rtc.Device{User: "@door:hs.test", DeviceID: st.Matrix.DeviceID}
	for _, room := range []string{alice, home} {
		hs.WaitSent(t, rtc.TypeMember, func(e matrixtest.Event) bool {
			return e.Room == room && *e.StateKey == rtc.StateKey(self) && len(e.Content) > 2
		})
	}
	// The rings: MatrixRTC's in both rooms, the household call's in its
	// room (which relates to its membership).
	r.await("rings", func() bool {
		in := map[string]int{}
		for _, e := range hs.Sent(rtc.TypeNotification) {
			in[e.Room]++
		}
		return in[alice] == 1 && in[home] == 2
	})
	related := false
	for _, e := range hs.Sent(rtc.TypeNotification) {
		related = related || strings.Contains(string(e.Content), hh.ID)
	}
	if !related {
		t.Errorf("no ring relates to the household membership %s", hh.ID)
	}
	hs.WaitSent(t, "m.room.message", func(e matrixtest.Event) bool {
		return e.Room == home && strings.Contains(string(e.Content), "at the door")
	})
	r.await("SFU token requests", func() bool { return len(sfu.asked()) == 2 })
	st = r.waitStatus("ringing on every path", func(s runStatus) bool {
		return s.State == callengine.PhaseRinging && s.Matrix.Household != nil && s.Matrix.Household.Phase == group.PhaseRinging &&
			s.Matrix.MatrixRTC.Phase == rtc.PhaseRinging
	})

	if err := r.shutdown(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if c, _ := hs.StateOf(home, group.TypeMember, "@door:hs.test"); string(c) != `{"memberships":[]}` {
		t.Errorf("household membership after stop: %s", c)
	}
	for _, room := range []string{alice, home} {
		if c, _ := hs.StateOf(room, rtc.TypeMember, rtc.StateKey(self)); string(c) != `{}` {
			t.Errorf("MatrixRTC membership in %s after stop: %s", room, c)
		}
	}
}

// TestRunMatrixRTCWithoutSFU: MatrixRTC on, with the household room
// created for it (no household call), and a token service whose SFU
// does not exist. A press still publishes the memberships and sends the
// rings; the failed SFU joins are logged and the memberships cleared,
// while alice's classic call rings on. A membership left behind (a power
// cut: the homeserver still shows it) is cleared by the next start.
func TestRunMatrixRTCWithoutSFU(t *testing.T) {
	t.Parallel()
	lockLiveKit(t)
	hs := newHS(t)
	var sfu *sfuService
	sfu = newSFUService(t, func(w http.ResponseWriter, r *http.Request, room string) {
		if room == "" {
			http.Error(w, "no SFU here", http.StatusNotFound) // LiveKit's /rtc and /rtc/validate
			return
		}
		// Only once the room's ring is out, so that the test sees it
		// before the failure ends the call there.
		_ = hs.Await(r.Context(), func() bool {
			return slices.ContainsFunc(hs.Sent(rtc.TypeNotification), func(e matrixtest.Event) bool { return e.Room == room })
		})
		fmt.Fprintf(w, `{"url":%q,"jwt":"not.a.jwt"}`, "ws"+strings.TrimPrefix(sfu.URL, "http"))
	})
	path := writeConfig(t, hs, `household:
  room: "#household:hs.test"
matrixrtc:
  enabled: true
  livekit_service_url: `+sfu.URL+`
  household: true
`)
	r := startDaemon(t, hs, path)
	alice := r.directRoom("@alice:hs.test")
	st := r.waitStatus("household room joined for MatrixRTC", func(s runStatus) bool {
		return s.Matrix.MatrixRTC != nil && len(s.Matrix.MatrixRTC.HouseholdRooms) == 1
	})
	home, ok := hs.Alias("#household:hs.test")
	if !ok || st.Matrix.MatrixRTC.HouseholdRooms[0] != callengine.RoomID(home) || hs.Membership(home, "@alice:hs.test") != "invite" {
		t.Fatalf("household room %q (%v), status %v, alice %q", home, ok, st.Matrix.MatrixRTC.HouseholdRooms, hs.Membership(home, "@alice:hs.test"))
	}
	self := rtc.Device{User: "@door:hs.test", DeviceID: st.Matrix.DeviceID}

	r.press()
	_, inv := r.invite(alice, 0)
	var membership json.RawMessage
	for _, room := range []string{alice, home} {
		e := hs.WaitSent(t, rtc.TypeMember, func(e matrixtest.Event) bool { return e.Room == room && len(e.Content) > 2 })
		membership = e.Content
		hs.WaitSent(t, rtc.TypeNotification, func(e matrixtest.Event) bool { return e.Room == room })
	}
	r.logs.wait(t, `msg="join SFU"`, "room_id="+alice, "not found")
	for _, room := range []string{alice, home} {
		r.await("membership cleared in "+room, func() bool {
			c, _ := hs.StateOf(room, rtc.TypeMember, rtc.StateKey(self))
			return string(c) == `{}`
		})
	}
	st = r.waitStatus("MatrixRTC given up, classic call ringing", func(s runStatus) bool {
		return s.Matrix.MatrixRTC.Phase == rtc.PhaseIdle && s.State == callengine.PhaseRinging
	})
	hs.Deliver(resident(alice, "@alice:hs.test", callengine.TypeReject, callengine.Common{CallID: inv.CallID, PartyID: "ALICE", Version: "1"}, nil))
	r.waitStatus("idle", func(s runStatus) bool { return s.State == callengine.PhaseIdle })
	if err := r.shutdown(); err != nil {
		t.Fatal(err)
	}

	// Power cut: the homeserver still has the intercom in alice's call.
	hs.SetState(matrixtest.State(alice, "@door:hs.test", rtc.TypeMember, rtc.StateKey(self), membership))
	r = startDaemon(t, hs, path)
	r.logs.wait(t, "clearing a call membership left behind", "room_id="+alice)
	r.await("stale membership cleared", func() bool {
		c, _ := hs.StateOf(alice, rtc.TypeMember, rtc.StateKey(self))
		return string(c) == `{}`
	})
	if n := len(hs.Requests("POST login")); n != 1 {
		t.Errorf("%d logins: the second start did not resume the session", n)
	}
}

// answerSDP is the SDP answer alice's client would send to offer: made
// by pion, but never applied, so nothing listens or connects.
func answerSDP(t *testing.T, offer string) string {
	t.Helper()
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		t.Fatal(err)
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	return answer.SDP
}

// TestRunClassicAnswerWithdrawsMatrixRTC: alice answers the classic
// call while MatrixRTC still rings her room (its SFU join pending): the
// classic path wins, MatrixRTC's membership is cleared while the call
// goes on, and stopping the daemon hangs the call up.
func TestRunClassicAnswerWithdrawsMatrixRTC(t *testing.T) {
	t.Parallel()
	lockLiveKit(t)
	hs := newHS(t)
	sfu := newSFUService(t, func(w http.ResponseWriter, r *http.Request, _ string) { <-r.Context().Done() })
	r := startDaemon(t, hs, writeConfig(t, hs, "matrixrtc:\n  enabled: true\n  livekit_service_url: "+sfu.URL+"\n"))
	alice := r.directRoom("@alice:hs.test")
	self := rtc.Device{User: "@door:hs.test", DeviceID: r.waitStatus("status", func(runStatus) bool { return true }).Matrix.DeviceID}

	r.press()
	_, inv := r.invite(alice, 0)
	hs.WaitSent(t, rtc.TypeNotification, func(e matrixtest.Event) bool { return e.Room == alice })
	hs.Deliver(resident(alice, "@alice:hs.test", callengine.TypeAnswer, callengine.Common{CallID: inv.CallID, PartyID: "ALICE", Version: "1"},
		map[string]any{"answer": map[string]string{"type": "answer", "sdp": answerSDP(t, inv.Offer.SDP)}}))
	sel := hs.WaitSent(t, callengine.TypeSelectAnswer, func(e matrixtest.Event) bool { return e.Room == alice })
	if v, err := callengine.Decode(sel.Type, sel.Content); err != nil || v.(*callengine.SelectAnswer).SelectedPartyID != "ALICE" {
		t.Errorf("select_answer %s: %v", sel.Content, err)
	}
	r.await("MatrixRTC membership withdrawn", func() bool {
		c, _ := hs.StateOf(alice, rtc.TypeMember, rtc.StateKey(self))
		return string(c) == `{}`
	})
	r.waitStatus("in a call, MatrixRTC idle", func(s runStatus) bool {
		return s.State == callengine.PhaseInCall && s.Matrix.MatrixRTC.Phase == rtc.PhaseIdle
	})

	if err := r.shutdown(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !slices.ContainsFunc(hs.Sent(callengine.TypeHangup), func(e matrixtest.Event) bool {
		return e.Room == alice && strings.Contains(string(e.Content), string(inv.CallID))
	}) {
		t.Error("no hangup for alice's call at stop")
	}
}
