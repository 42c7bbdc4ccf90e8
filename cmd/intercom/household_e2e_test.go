package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/dendrite"
	"github.com/doorbell/intercom/internal/householdpeer"
)

// householdStatus is the part of /api/status the household tests read.
type householdStatus struct {
	Matrix struct {
		Household struct {
			Room    string `json:"room"`
			Phase   string `json:"phase"`
			Joined  bool   `json:"joined"`
			Members []struct {
				User  string `json:"user_id"`
				Valid bool   `json:"valid"`
				Call  string `json:"call"`
			} `json:"members"`
			Calls []struct {
				User  string `json:"user_id"`
				State string `json:"state"`
			} `json:"calls"`
		} `json:"household"`
	} `json:"matrix"`
	Media struct {
		Encoders []struct {
			Codec   string `json:"Codec"`
			Running bool   `json:"Running"`
			Starts  int    `json:"Starts"`
			Users   int    `json:"Users"`
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
		if e.cmd.ProcessState != nil {
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
// (/proc/PID/stat fields 14 and 15; 100 per second on Linux).
func cpuTicks(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
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

// TestHouseholdMesh: household devices (the pion test peer, behaving as
// famedly's SDK documents) publish memberships in the household room of a
// real Dendrite; a press makes the intercom join the group call and ring;
// every device is connected (alice places her call, since
// "@alice…" < "@intercom…"; the intercom places the call to zoe, yan
// and zed) and receives video, while the intercom runs one video encoder.
// It logs the intercom's CPU with 1, 2 and 4 devices and the time from a
// device's membership to its first frame. When the devices leave, the
// intercom leaves too.
func TestHouseholdMesh(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: needs Dendrite")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	bin, err := buildIntercom()
	if err != nil {
		t.Fatal(err)
	}
	hs := dendrite.StartT(t)
	dir := t.TempDir()
	const password = "intercom-password"
	bot, err := hs.Register(ctx, "intercom", password)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "password"), []byte(password), 0o600); err != nil {
		t.Fatal(err)
	}
	carol, err := hs.Register(ctx, "carol", "carol-password") // a resident without a client
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"alice", "zoe", "yan", "zed"}
	users := map[string]dendrite.User{}
	for _, n := range names {
		if users[n], err = hs.Register(ctx, n, n+"-password"); err != nil {
			t.Fatal(err)
		}
	}
	// The household room, made by alice: everyone may publish call
	// memberships and send the ring (famedly's enableGroupCalls lowers the
	// same power levels).
	invite := []string{bot.UserID}
	for _, n := range names[1:] {
		invite = append(invite, users[n].UserID)
	}
	var created struct {
		RoomID string `json:"room_id"`
	}
	if err := matrixDo(ctx, hs, users["alice"].AccessToken, http.MethodPost, "/_matrix/client/v3/createRoom", map[string]any{
		"preset": "private_chat", "name": "Home", "invite": invite,
		"power_level_content_override": map[string]any{"events": map[string]int{
			"com.famedly.call.member": 0, "org.matrix.msc3401.call.member": 0, "org.matrix.msc4075.rtc.notification": 0}},
	}, &created); err != nil {
		t.Fatal(err)
	}
	room := created.RoomID

	e := &e2e{t: t, hs: hs, api: freeAddr(t), log: &lockedBuffer{}}
	cfg := fmt.Sprintf(`matrix:
  homeserver: %s
  user_id: %q
  password_file: ./password
state_dir: ./state
residents: [%q]
ring:
  timeout: 30s
api:
  listen: %s
household:
  room: %q
  group_call: mesh
log:
  level: debug
`, hs.BaseURL, bot.UserID, carol.UserID, e.api, room)
	cfgPath := filepath.Join(dir, "intercom.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e.cmd = exec.Command(bin, "run", "--config", cfgPath)
	e.cmd.Env = append(os.Environ(), "INTERCOM_ICE_LOOPBACK=1")
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.stop()
		if t.Failed() || os.Getenv("INTERCOM_E2E_LOG") != "" {
			t.Logf("intercom log:\n%s", e.log.String())
		}
	})
	e.householdStatus(ctx, "household room joined", func(s householdStatus) bool { return s.Matrix.Household.Room == room })

	start := func(name string) *householdpeer.Device {
		u := users[name]
		d, err := householdpeer.Start(ctx, householdpeer.Options{Homeserver: hs.BaseURL, UserID: u.UserID,
			AccessToken: u.AccessToken, DeviceID: u.DeviceID, Room: room, Logf: func(f string, a ...any) { t.Logf(name+": "+f, a...) }})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Cleanup(d.Close)
		return d
	}
	waitFrames := func(name string, d *householdpeer.Device, n int64) {
		t.Helper()
		for d.Frames() < n {
			select {
			case <-ctx.Done():
				t.Fatalf("%s received %d frames, want %d", name, d.Frames(), n)
			case <-time.After(20 * time.Millisecond):
			}
		}
		t.Logf("%s: membership → first frame %v", name, d.MembershipToFirstFrame())
	}
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
