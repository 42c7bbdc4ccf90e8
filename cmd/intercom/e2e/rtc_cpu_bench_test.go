package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/doorbell/intercom/internal/testenv/resident"
)

// rtcCPUWindow is one CPU sample's length. The door uses some 20–40 ms of
// CPU per second; over 10 s that is a few hundred ms, so scheduler noise
// of a few ms stays well under the 10 % the issue allows encryption.
const rtcCPUWindow = 10 * time.Second

// rtcCPUSubscribers is how many of the call's members watch the door: the
// issue's "4 subscribers".
const rtcCPUSubscribers = 4

// BenchmarkMatrixRTCEncryptionCPU measures what end-to-end encrypted
// MatrixRTC media cost the door (issue 18's target: encryption adds at
// most 10 %). For "plain" (matrix.encryption off, an unencrypted DM) and
// then "encrypted" (matrix.encryption on, the DM encrypted, the door's
// frames encrypted once for all and the members' audio decrypted) it
// starts a system, presses, and has four devices of alice join the DM's
// call: one answers, three more follow, all published as microphones only.
// Once all four decode the door's video and the door receives their
// audio, it samples the intercom process's CPU time (user+system, every
// thread, from the kernel's per-process CPU clock) over
// INTERCOM_BENCH_ROUNDS (default 5) windows of 10 s in which all four kept
// decoding and the door kept receiving four streams (a window where one
// fell behind is logged and not counted; as many of those as rounds fail
// the benchmark). It reports the median CPU seconds per second of each mode, the
// machine's median busy share (the pages, the SFU and the homeserver run
// on the same cores), and in "encrypted" the ratio of the two medians.
//
// Four devices of one user rather than four users: the door's work per
// subscriber is the same (each is a member of the call that gets the
// door's key over Olm and whose audio the door receives and decrypts),
// the DM is where a real ring is answered, and the system needs no room
// besides the harness's own. Through an SFU the door sends its media
// once whatever the number of watchers; what grows with them is the audio
// it receives, so the members publish their fake microphones, not their
// cameras, which also keeps four Chromium pages from forwarding video to
// each other on a 2-core machine.
func BenchmarkMatrixRTCEncryptionCPU(b *testing.B) {
	var plain []float64
	for _, encrypted := range []bool{false, true} {
		name := "plain"
		if encrypted {
			name = "encrypted"
		}
		b.Run(name, func(b *testing.B) {
			var cpu, busy []float64
			for range b.N {
				c, m := benchRTCCPU(b, encrypted)
				cpu, busy = append(cpu, c...), append(busy, m...)
			}
			b.ReportMetric(medianF(cpu), "door-cpu-s/s")
			b.ReportMetric(medianF(busy), "machine-busy-%")
			b.ReportMetric(0, "ns/op")
			b.Logf("%s: door CPU s/s per window %s; machine busy %% %s", name, fmtF(cpu, 4), fmtF(busy, 0))
			if !encrypted {
				plain = cpu
				return
			}
			if len(plain) > 0 {
				ratio := medianF(cpu) / medianF(plain)
				b.ReportMetric(ratio, "ratio-to-plain")
				b.Logf("encrypted / plain: %.3f (medians %.4f / %.4f s/s; target ≤ 1.10)", ratio, medianF(cpu), medianF(plain))
			}
		})
	}
}

// benchRTCCPU runs one mode: it returns the door's CPU seconds per second
// and the machine's busy percentage, one of each per window.
func benchRTCCPU(b *testing.B, encrypted bool) (cpu, busy []float64) {
	rounds := 5
	if n, err := strconv.Atoi(os.Getenv("INTERCOM_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	s := startRTCSystemOpts(b, rtcOptions{Encrypted: encrypted})
	alice := s.residents[0]
	room := roomOf(b, alice)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	// Alice's other devices: password logins are new devices (new Olm
	// devices in the encrypted run), started before the press so that
	// they sync the ring like the first.
	devices := []*resident.Resident{alice}
	for i := 1; i < rtcCPUSubscribers; i++ {
		log := &lockedBuffer{}
		d := resident.StartT(b, resident.Options{
			Homeserver: s.hs.BaseURL, UserID: alice.UserID(), Password: "alice-password",
			AutoJoin: true, AnyInterface: true, Encryption: encrypted, Log: log,
		})
		b.Cleanup(func() {
			if b.Failed() {
				b.Logf("alice's device %d:\n%s", i, lastLines(log.String(), 40))
			}
		})
		devices = append(devices, d)
	}

	pressed := s.press()
	waitEvent(ctx, b, alice, resident.EventRTCRing, pressed, func(ev resident.Event) bool { return ev.Str("roomId") == room })
	for _, d := range devices {
		joined, err := d.RTCJoinWith(ctx, resident.RTCJoinOptions{RoomID: room, NoVideo: true})
		if err != nil {
			b.Fatal(err)
		}
		if joined.Fields["encrypted"] != encrypted {
			b.Fatalf("%s joined with encrypted=%v, want %v", d.DeviceID(), joined.Fields["encrypted"], encrypted)
		}
	}
	s.waitStatus(ctx, "four members in the call", func(st status) bool {
		r, ok := rtcRoomStatus(st, room)
		return ok && st.State == "in_call" && len(r.Members) == rtcCPUSubscribers && r.Encrypted == encrypted
	})
	door := s.bot.UserID + ":"
	// watching reports each device's decoded frames of the door's video,
	// and whether every one has decoded more than 10 since since.
	watching := func(since []int) ([]int, bool) {
		frames, ok := make([]int, len(devices)), true
		for i, d := range devices {
			rs := d.LastRTCStats()
			frames[i] = rs.FramesDecoded
			ok = ok && strings.HasPrefix(rs.VideoParticipant, door) && rs.FramesDecoded > since[i]+10
		}
		return frames, ok
	}
	zero := make([]int, len(devices))
	for deadline := time.Now().Add(time.Minute); ; {
		if _, ok := watching(zero); ok && s.heardAudio() {
			break
		}
		if time.Now().After(deadline) {
			logDevices(b, devices)
			b.Fatalf("media incomplete after a minute: intercom hears them %v", s.heardAudio())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The newest member's key and keyframe, and the door's encoder's
	// ramp-up after the last join.
	time.Sleep(3 * time.Second)

	pid := s.cmd.Process.Pid
	clock0, err := processCPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	ticks0, err := procTicks(pid)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for w := 0; len(cpu) < rounds; w++ {
		if w == 2*rounds {
			logDevices(b, devices)
			b.Fatalf("only %d of %d windows had all four watching and heard", len(cpu), w)
		}
		st0, err := s.status()
		if err != nil {
			b.Fatal(err)
		}
		frames0, _ := watching(zero)
		m0, err := machineCPU()
		if err != nil {
			b.Fatal(err)
		}
		c0, err := processCPU(pid)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		time.Sleep(rtcCPUWindow)
		c1, err := processCPU(pid)
		if err != nil {
			b.Fatal(err)
		}
		el := time.Since(t0).Seconds()
		m1, err := machineCPU()
		if err != nil {
			b.Fatal(err)
		}
		st1, err := s.status()
		if err != nil {
			b.Fatal(err)
		}
		frames1, ok := watching(frames0)
		pps := float64(st1.Media.ReceivedAudio.Packets-st0.Media.ReceivedAudio.Packets) / el
		c := (c1 - c0).Seconds() / el
		m := m1.busyPercent(m0)
		fps := make([]string, len(devices))
		for i := range devices {
			fps[i] = fmt.Sprintf("%.1f", float64(frames1[i]-frames0[i])/el)
		}
		line := fmt.Sprintf("window %d (encrypted %v): door %.4f CPU s/s, machine %.0f %% busy, door receives %.0f audio packets/s, devices decode %s fps", w, encrypted, c, m, pps, strings.Join(fps, "/"))
		// A window counts only if all four kept decoding the door's video
		// and the door kept receiving audio from four (50 Opus packets a
		// second each; 40 allows for loss and the stats' timing): on a
		// saturated machine the pages fall behind now and then (most in
		// the encrypted run, where livekit-client decrypts in JavaScript),
		// and a door with less to receive would look cheaper than it is.
		if !ok || pps < rtcCPUSubscribers*40 {
			b.Logf("%s: not counted, the subscribers fell behind", line)
			continue
		}
		cpu, busy = append(cpu, c), append(busy, m)
		b.Logf("%s", line)
	}
	b.StopTimer()
	// The per-process CPU clock and /proc's tick counts are the same
	// kernel bookkeeping at different resolutions: they must agree.
	clock1, err := processCPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	ticks1, err := procTicks(pid)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("door CPU over the windows: %.3f s by its CPU clock, %.2f s by /proc/%d/stat", (clock1 - clock0).Seconds(), float64(ticks1-ticks0)/100, pid)
	return cpu, busy
}

// rtcRoomStatus is room's entry in /api/status matrix.matrixrtc.rooms.
func rtcRoomStatus(st status, room string) (rtcRoom, bool) {
	var m struct {
		RTC struct {
			Rooms []rtcRoom `json:"rooms"`
		} `json:"matrixrtc"`
	}
	if json.Unmarshal(st.Matrix, &m) != nil {
		return rtcRoom{}, false
	}
	for _, r := range m.RTC.Rooms {
		if r.Room == room {
			return r, true
		}
	}
	return rtcRoom{}, false
}

type rtcRoom struct {
	Room      string   `json:"room_id"`
	Members   []string `json:"members"`
	Encrypted bool     `json:"encrypted"`
}

// logDevices logs what each device last reported of its call, and the
// frame decryption errors its page saw.
func logDevices(b *testing.B, devices []*resident.Resident) {
	for _, d := range devices {
		errs := 0
		for _, ev := range d.Events() {
			if ev.Name == "rtcEncryptionError" {
				errs++
			}
		}
		b.Logf("device %s: %+v; %d frame encryption errors", d.DeviceID(), d.LastRTCStats(), errs)
	}
}

// processCPU is the CPU time that process pid has used, every thread
// (those that ended too), at nanosecond resolution: the kernel's
// per-process CPU clock (clock_getcpuclockid(3); the clock ID is
// ~pid << 3 | CPUCLOCK_SCHED, as glibc builds it). /proc's utime and
// stime come from the same accounting in 10 ms ticks, too coarse for a
// few percent of 30 ms/s.
func processCPU(pid int) (time.Duration, error) {
	const cpuclockSched = 2
	clock := (^pid)<<3 | cpuclockSched
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, uintptr(clock), uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0, fmt.Errorf("CPU clock of process %d: %w", pid, errno)
	}
	return time.Duration(ts.Nano()), nil
}

// procTicks is pid's user+system time in clock ticks (100 a second):
// /proc/PID/stat fields 14 and 15 (proc(5)), counted after the command
// name, which may hold spaces.
func procTicks(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read process stat: %w", err)
	}
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 || i+2 > len(raw) {
		return 0, fmt.Errorf("process stat %q: no command name", raw)
	}
	f := strings.Fields(string(raw[i+2:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("process stat %q: too few fields", raw)
	}
	u, err := strconv.ParseInt(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("process stat utime: %w", err)
	}
	st, err := strconv.ParseInt(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("process stat stime: %w", err)
	}
	return u + st, nil
}

// machineTicks is the machine's CPU time, all cores, from /proc/stat's
// "cpu" line: total and idle (idle + iowait) ticks.
type machineTicks struct{ total, idle int64 }

func machineCPU() (machineTicks, error) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineTicks{}, fmt.Errorf("read machine stat: %w", err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return machineTicks{}, fmt.Errorf("machine stat: first line %q", line)
	}
	var m machineTicks
	// user nice system idle iowait irq softirq steal; guest time is
	// already inside user and nice (proc(5)).
	for i, v := range f[1:min(len(f), 9)] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return machineTicks{}, fmt.Errorf("machine stat field %d: %w", i+1, err)
		}
		m.total += n
		if i == 3 || i == 4 {
			m.idle += n
		}
	}
	return m, nil
}

// busyPercent is the share of all cores' time that was not idle between
// since and m.
func (m machineTicks) busyPercent(since machineTicks) float64 {
	total := m.total - since.total
	if total <= 0 {
		return 0
	}
	return 100 * float64(total-(m.idle-since.idle)) / float64(total)
}

func medianF(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtF(v []float64, prec int) string {
	out := make([]string, len(v))
	for i, x := range v {
		out[i] = strconv.FormatFloat(x, 'f', prec, 64)
	}
	return "[" + strings.Join(out, " ") + "]"
}
