package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/dendrite"
	"github.com/doorbell/intercom/internal/testenv/householdpeer"
)

// householdStatus is the part of /api/status the household tests read.
type householdStatus struct {
	Matrix struct {
		Household struct {
			Room     string `json:"room"`
			Phase    string `json:"phase"`
			Joined   bool   `json:"joined"`
			LiveView bool   `json:"live_view"`
			Members  []struct {
				User  string `json:"user_id"`
				Valid bool   `json:"valid"`
				Call  string `json:"call"`
			} `json:"members"`
			Calls []struct {
				CallID     string `json:"call_id"`
				User       string `json:"user_id"`
				State      string `json:"state"`
				Recovering bool   `json:"recovering"`
			} `json:"calls"`
		} `json:"household"`
	} `json:"matrix"`
	Media struct {
		Encoders []struct {
			Codec   string `json:"codec"`
			Running bool   `json:"running"`
			Starts  int    `json:"starts"`
			Users   int    `json:"users"`
		} `json:"encoders"`
	} `json:"media"`
}

func (e *e2e) householdStatus(ctx context.Context, what string, cond func(householdStatus) bool) householdStatus {
	e.t.Helper()
	var last householdStatus
	for {
		resp, err := http.Get("http://" + e.api + "/api/status")
		if err == nil {
			var s householdStatus
			err = json.NewDecoder(resp.Body).Decode(&s)
			resp.Body.Close()
			if err == nil && cond(s) {
				return s
			}
			last = s
		}
		if e.hasExited() {
			e.t.Fatalf("intercom exited while waiting for %s", what)
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("waiting for %s: %v; last status %+v", what, ctx.Err(), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// cpuTicks is the intercom's user+system CPU time in clock ticks
// (procTicks), or the test fails.
func cpuTicks(t testing.TB, pid int) int64 {
	n, err := procTicks(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func matrixDo(ctx context.Context, hs *dendrite.Server, token, method, path string, in, out any) error {
	b, _ := json.Marshal(in)
	req, _ := http.NewRequestWithContext(ctx, method, hs.BaseURL+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, buf.String())
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// householdSystem is the intercom and household devices on a real
// Dendrite, in a household room made by alice (see startHousehold).
type householdSystem struct {
	t     testing.TB
	ctx   context.Context
	hs    *dendrite.Server
	e     *e2e
	room  string
	users map[string]dendrite.User
	bot   dendrite.User
}

// startHousehold registers the intercom and names (the first makes the
// household room and invites the others and the intercom: everyone may
// publish call memberships and send the ring, as famedly's
// enableGroupCalls sets the power levels), writes a configuration with
// the resident IDs residents (names of users, or "carol", a resident
// without a client) and extra YAML ("{name}" stands for that user's ID),
// starts the intercom and waits until it
// is in the household room.
func startHousehold(ctx context.Context, t testing.TB, names, residents []string, extra string) *householdSystem {
	t.Helper()
	return startHouseholdWith(ctx, t, householdOptions{}, names, residents, extra)
}

// householdOptions vary what startHouseholdWith starts; the zero value is
// startHousehold's system.
type householdOptions struct {
	// Encryption is the intercom's matrix.encryption.
	Encryption bool
	// EncryptedRoom creates the household room with m.room.encryption.
	EncryptedRoom bool
	// ICEOnVeth: the intercom's peer connections gather on the veth pair
	// (e2e.iceOnVeth), so that taking it down breaks the media path.
	ICEOnVeth bool
}

// startHouseholdWith is startHousehold with options.
func startHouseholdWith(ctx context.Context, t testing.TB, opts householdOptions, names, residents []string, extra string) *householdSystem {
	t.Helper()
	hs := dendrite.StartT(t)
	e := newE2E(ctx, t, hs)
	e.encrypted = opts.Encryption
	e.iceOnVeth = opts.ICEOnVeth
	bot := e.bot
	var err error
	users := map[string]dendrite.User{}
	for _, n := range append(slices.Clone(names), "carol") {
		if users[n], err = hs.Register(ctx, n, n+"-password"); err != nil {
			t.Fatal(err)
		}
	}
	invite := []string{bot.UserID}
	for _, n := range names[1:] {
		invite = append(invite, users[n].UserID)
	}
	var created struct {
		RoomID string `json:"room_id"`
	}
	req := map[string]any{
		"preset": "private_chat", "name": "Home", "invite": invite,
		"power_level_content_override": map[string]any{"events": map[string]int{
			"com.famedly.call.member": 0, "org.matrix.msc3401.call.member": 0, "org.matrix.msc4075.rtc.notification": 0}},
	}
	if opts.EncryptedRoom {
		req["initial_state"] = []any{map[string]any{"type": "m.room.encryption", "state_key": "",
			"content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}
	}
	if err := matrixDo(ctx, hs, users[names[0]].AccessToken, http.MethodPost, "/_matrix/client/v3/createRoom", req, &created); err != nil {
		t.Fatal(err)
	}
	var rs []string
	for _, n := range residents {
		rs = append(rs, users[n].UserID)
	}
	for n, u := range users {
		extra = strings.ReplaceAll(extra, "{"+n+"}", u.UserID)
	}
	e.writeConfig(rs, 30*time.Second, fmt.Sprintf("household:\n  room: %q\n  group_call: mesh\n", created.RoomID)+extra)
	e.launch(ctx)
	e.householdStatus(ctx, "household room joined", func(s householdStatus) bool { return s.Matrix.Household.Room == created.RoomID })
	return &householdSystem{t: t, ctx: ctx, hs: hs, e: e, room: created.RoomID, users: users, bot: bot}
}

// device starts the household device of name, without crypto.
func (s *householdSystem) device(name string) *householdpeer.Device {
	s.t.Helper()
	return s.deviceWith(name, false)
}

// deviceWith starts the household device of name, with end-to-end
// encryption if crypto is set (householdpeer.Options.Crypto).
func (s *householdSystem) deviceWith(name string, crypto bool) *householdpeer.Device {
	s.t.Helper()
	return s.deviceOpts(name, householdpeer.Options{Crypto: crypto})
}

// deviceOpts starts the household device of name with o, its account and
// the room filled in.
func (s *householdSystem) deviceOpts(name string, o householdpeer.Options) *householdpeer.Device {
	s.t.Helper()
	u := s.users[name]
	o.Homeserver, o.UserID, o.AccessToken, o.DeviceID, o.Room = s.hs.BaseURL, u.UserID, u.AccessToken, u.DeviceID, s.room
	o.Logf = func(f string, a ...any) { s.t.Logf(name+": "+f, a...) }
	d, err := householdpeer.Start(s.ctx, o)
	if err != nil {
		s.t.Fatalf("%s: %v", name, err)
	}
	s.t.Cleanup(d.Close)
	return d
}

// waitFrames waits until d has received n video frames.
func (s *householdSystem) waitFrames(name string, d *householdpeer.Device, n int64) {
	s.t.Helper()
	for d.Frames() < n {
		select {
		case <-s.ctx.Done():
			s.t.Fatalf("%s received %d frames, want %d", name, d.Frames(), n)
		case <-time.After(20 * time.Millisecond):
		}
	}
	s.t.Logf("%s: membership → first frame %v", name, d.MembershipToFirstFrame())
}

// TestHouseholdMesh: household devices (the pion test peer, behaving as
// famedly's SDK documents) publish memberships in the household room of a
// real Dendrite; a press makes the intercom join the group call and ring;
// every device is connected (alice places her call, since
// "@alice…" < "@intercom…"; the intercom places the call to zoe, yan
// and zed) and receives video, while the intercom runs one video encoder.
// It logs the intercom's CPU with 1, 2 and 4 devices and the time from a
// device's membership to its first frame. When the devices leave, the
// intercom leaves too. carol, the only resident, has no client, so no
// device may watch without a press.
func TestHouseholdMesh(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: needs Dendrite")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	sys := startHousehold(ctx, t, []string{"alice", "zoe", "yan", "zed"}, []string{"carol"}, "")
	e, start, waitFrames := sys.e, sys.device, sys.waitFrames
	measure := func(n int) float64 {
		time.Sleep(time.Second) // let the new call settle
		pid := e.cmd.Process.Pid
		c0, t0 := cpuTicks(t, pid), time.Now()
		time.Sleep(4 * time.Second)
		cpu := float64(cpuTicks(t, pid)-c0) / 100 / time.Since(t0).Seconds()
		t.Logf("intercom CPU with %d household device(s): %.3f s/s", n, cpu)
		return cpu
	}

	devs := map[string]*householdpeer.Device{"alice": start("alice")}
	e.householdStatus(ctx, "alice's membership read", func(s householdStatus) bool { return len(s.Matrix.Household.Members) == 1 })
	e.press()
	waitFrames("alice", devs["alice"], 10)
	if devs["alice"].Rings() == 0 {
		// The ring travels in the room timeline; give sync a moment.
		time.Sleep(time.Second)
		if devs["alice"].Rings() == 0 {
			t.Error("alice saw no MSC4075 ring notification")
		}
	}
	cpu1 := measure(1)
	devs["zoe"] = start("zoe")
	waitFrames("zoe", devs["zoe"], 10)
	cpu2 := measure(2)
	devs["yan"], devs["zed"] = start("yan"), start("zed")
	waitFrames("yan", devs["yan"], 10)
	waitFrames("zed", devs["zed"], 10)
	cpu4 := measure(4)
	t.Logf("CPU ratio to 1 device: 2 devices %.2f×, 4 devices %.2f× (target ≤ 1.3×)", cpu2/cpu1, cpu4/cpu1)

	s := e.householdStatus(ctx, "four connected calls", func(s householdStatus) bool {
		n := 0
		for _, c := range s.Matrix.Household.Calls {
			if c.State == "connected" {
				n++
			}
		}
		return n == 4
	})
	video := 0
	for _, enc := range s.Media.Encoders {
		if strings.HasPrefix(enc.Codec, "audio/") {
			continue
		}
		if enc.Starts > 1 {
			t.Errorf("encoder %s started %d times, want once for every device", enc.Codec, enc.Starts)
		}
		if enc.Running {
			video++
		}
	}
	if video != 1 {
		t.Errorf("%d video encoders running, want 1: %+v", video, s.Media.Encoders)
	}
	for n, d := range devs {
		if d.Frames() < 10 {
			t.Errorf("%s received %d frames", n, d.Frames())
		}
	}

	// Every device leaves: the intercom leaves and is idle again.
	for _, d := range devs {
		if err := d.Leave(ctx); err != nil {
			t.Fatal(err)
		}
	}
	e.householdStatus(ctx, "intercom left", func(s householdStatus) bool {
		return s.Matrix.Household.Phase == "idle" && !s.Matrix.Household.Joined
	})
}

// roomMessages returns the m.room.message events the intercom (bot) sent
// into the household room, newest first, as "msgtype|body".
func (s *householdSystem) roomMessages(as string) []string {
	s.t.Helper()
	var resp struct {
		Chunk []struct {
			Type    string `json:"type"`
			Sender  string `json:"sender"`
			Content struct {
				MsgType string `json:"msgtype"`
				Body    string `json:"body"`
			} `json:"content"`
		} `json:"chunk"`
	}
	if err := matrixDo(s.ctx, s.hs, s.users[as].AccessToken, http.MethodGet,
		"/_matrix/client/v3/rooms/"+url.PathEscape(s.room)+"/messages?dir=b&limit=100", nil, &resp); err != nil {
		s.t.Fatal(err)
	}
	var out []string
	for _, e := range resp.Chunk {
		if e.Type == "m.room.message" && e.Sender == s.bot.UserID {
			out = append(out, e.Content.MsgType+"|"+e.Content.Body)
		}
	}
	return out
}

// TestHouseholdLiveView: with nobody at the door, household devices of
// users allowed to watch join the group call and see the door: alice's
// device ("@alice…" sorts before "@intercom…") calls the intercom, which
// joins without ringing; the intercom calls zed's. yan, who is not in
// live_view.allowed, is not connected until the bell rings. alice opens
// the door with "!open" in the household room (audit notice there); the
// press then rings the household room (notification, ring notice and
// snapshot in the room) and connects yan too. When every device has left,
// the intercom leaves.
func TestHouseholdLiveView(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: needs Dendrite")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	sys := startHousehold(ctx, t, []string{"alice", "zed", "yan"}, []string{"alice"}, `live_view:
  allowed: ["{alice}", "{zed}"]
door:
  pulse: 500ms
`)
	e := sys.e
	relay := watchRelay(t, e.api)

	alice := sys.device("alice")
	sys.waitFrames("alice", alice, 10)
	s := e.householdStatus(ctx, "live view in call", func(s householdStatus) bool {
		return s.Matrix.Household.Phase == "in_call" && s.Matrix.Household.LiveView
	})
	if len(s.Matrix.Household.Calls) != 1 {
		t.Errorf("calls %+v", s.Matrix.Household.Calls)
	}
	zed := sys.device("zed")
	sys.waitFrames("zed", zed, 10)
	yan := sys.device("yan")
	e.householdStatus(ctx, "yan's membership read", func(s householdStatus) bool { return len(s.Matrix.Household.Members) == 3 })
	time.Sleep(2 * time.Second) // room for a wrong call to yan
	if yan.Frames() != 0 {
		t.Errorf("yan, not allowed to watch, received %d frames of a live view", yan.Frames())
	}
	if alice.Rings()+zed.Rings() != 0 {
		t.Errorf("a live view rang the household")
	}

	// Door control from the household room.
	txn := strconv.FormatInt(time.Now().UnixNano(), 10)
	if err := matrixDo(ctx, sys.hs, sys.users["alice"].AccessToken, http.MethodPut,
		"/_matrix/client/v3/rooms/"+url.PathEscape(sys.room)+"/send/m.room.message/"+txn,
		map[string]string{"msgtype": "m.text", "body": "!open"}, nil); err != nil {
		t.Fatal(err)
	}
	evs, _ := relay.waitFor(ctx, t, "relay on and off", func(evs []relayEvent, _ []string) bool { return len(evs) >= 2 })
	if !evs[0].On || evs[0].Sender != sys.users["alice"].UserID || evs[1].On {
		t.Fatalf("relay events %+v", evs)
	}
	waitCond(ctx, t, "audit notice in the household room", func() bool {
		return slices.ContainsFunc(sys.roomMessages("alice"), func(m string) bool { return strings.Contains(m, "Door opened by") })
	})

	// The bell: the household is rung and yan connected as well.
	e.press()
	sys.waitFrames("yan", yan, 10)
	waitCond(ctx, t, "ring notice and snapshot in the household room", func() bool {
		ms := sys.roomMessages("alice")
		return slices.ContainsFunc(ms, func(m string) bool { return strings.Contains(m, "Someone is at the door") }) &&
			slices.ContainsFunc(ms, func(m string) bool { return strings.HasPrefix(m, "m.image|") })
	})
	waitCond(ctx, t, "MSC4075 ring seen by a device", func() bool { return alice.Rings() > 0 })

	for _, d := range []*householdpeer.Device{alice, zed, yan} {
		if err := d.Leave(ctx); err != nil {
			t.Fatal(err)
		}
	}
	e.householdStatus(ctx, "intercom left", func(s householdStatus) bool {
		return s.Matrix.Household.Phase == "idle" && !s.Matrix.Household.Joined
	})
}

func waitCond(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
