package daemon

import (
	"bytes"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/media"
)

// TestBurstTap: the speaker's tap logs each resident burst it plays with
// the latency from the burst's start to its handing over plus the
// device's delay of the period it was in.
func TestBurstTap(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	tap := burstTap(func() time.Duration { return 40 * time.Millisecond }, log)
	// Handed over 30 ms after each sample's own time, with a card delay of
	// 25 ms: every burst is heard 55 ms (plus the detector's < 1 ms) late.
	t0 := time.UnixMilli(1_765_061_000_000).Add(-200 * time.Millisecond)
	first := media.SampleIndex(t0)
	pcm := make([]int16, media.AudioFrameSamples)
	for f := range 3 * 50 {
		n0 := first + int64(f*media.AudioFrameSamples)
		for i := range pcm {
			pcm[i] = int16(math.Round(media.BurstSample(n0+int64(i), media.BurstPhaseResident) * 32767))
		}
		at := t0.Add(time.Duration(f)*media.AudioFrame + 30*time.Millisecond)
		tap(pcm, at, 25*time.Millisecond)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines:\n%s", len(lines), out.String())
	}
	for _, l := range lines {
		kv := map[string]string{}
		for _, f := range strings.Fields(l) {
			if k, v, ok := strings.Cut(f, "="); ok {
				kv[k] = v
			}
		}
		if kv["msg"] != `"burst` || kv["refused"] != `""` || kv["delay_us"] != "25000" || kv["playout_us"] != "40000" {
			t.Errorf("line %q", l)
		}
		if lat, err := strconv.Atoi(kv["latency_us"]); err != nil || lat < 55000 || lat > 55999 {
			t.Errorf("latency %d µs, want 55000–55999: %q", lat, l)
		}
	}
}
