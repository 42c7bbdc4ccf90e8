package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/rtc"
	"github.com/doorbell/intercom/matrix"
)

// scriptedDiscovery answers DiscoverRTCTransport from a script, then
// repeats its last answer.
type scriptedDiscovery struct {
	mu      sync.Mutex
	answers []func() (matrix.RTCTransport, error)
	asked   []time.Time
}

func (s *scriptedDiscovery) DiscoverRTCTransport(context.Context) (matrix.RTCTransport, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = append(s.asked, time.Now())
	a := s.answers[0]
	if len(s.answers) > 1 {
		s.answers = s.answers[1:]
	}
	return a()
}

// countingHandler counts log records by level and message.
type countingHandler struct {
	mu sync.Mutex
	n  map[string]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n[r.Level.String()+" "+r.Message]++
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

// TestDiscoverTransport: an unreachable homeserver, then one that
// advertises nothing, are asked again with backoff and the trouble is
// logged once; the transport found is handed to the runner once and kept
// through a failed recheck; a moved transport is taken up.
func TestDiscoverTransport(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		unreachable := func() (matrix.RTCTransport, error) {
			return matrix.RTCTransport{}, &matrix.RTCDiscoveryError{Unreachable: true, Tried: []string{"x: no answer"}}
		}
		none := func() (matrix.RTCTransport, error) {
			return matrix.RTCTransport{}, &matrix.RTCDiscoveryError{Tried: []string{"x: HTTP 404"}}
		}
		found := func(u string) func() (matrix.RTCTransport, error) {
			return func() (matrix.RTCTransport, error) {
				return matrix.RTCTransport{ServiceURL: u, Source: "https://hs/x"}, nil
			}
		}
		d := &scriptedDiscovery{answers: []func() (matrix.RTCTransport, error){
			unreachable, unreachable, none, found("https://a/jwt"), none, found("https://a/jwt"), found("https://b/jwt")}}
		var handed []string
		tr := &rtcTransport{changed: func(u string) { handed = append(handed, u) }}
		h := &countingHandler{n: map[string]int{}}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { discoverTransport(ctx, d, tr, slog.New(h)); close(done) }()

		// until advances the fake clock a second at a time until cond
		// holds, for at most limit.
		until := func(what string, limit time.Duration, cond func() bool) {
			t.Helper()
			for start := time.Now(); !cond(); time.Sleep(time.Second) {
				synctest.Wait()
				if cond() {
					return
				}
				if time.Since(start) > limit {
					t.Fatalf("%s: not within %v: %+v (asked %d times)", what, limit, tr.status(), len(d.asked))
				}
			}
		}
		synctest.Wait()
		if st := tr.status(); st.ServiceURL != "" || !strings.Contains(st.Problem, "until the homeserver can be asked") {
			t.Fatalf("after an unreachable homeserver: %+v", st)
		}
		until("advertises nothing", transportRetryMax, func() bool {
			return strings.Contains(tr.status().Problem, "until the homeserver advertises a transport")
		})
		until("found", transportRetryMax, tr.known)
		if tr.url() != "https://a/jwt" || tr.status().Source != "https://hs/x" || fmt.Sprint(handed) != "[https://a/jwt]" {
			t.Fatalf("found %+v, handed to the runner %v", tr.status(), handed)
		}
		// A failed recheck keeps the transport.
		until("failed recheck", transportRecheck+time.Minute, func() bool { return tr.status().Problem != "" })
		if st := tr.status(); st.ServiceURL != "https://a/jwt" || !strings.HasPrefix(st.Problem, "last check: ") {
			t.Fatalf("after a failed recheck: %+v", st)
		}
		// Found again (unchanged: not handed again), then moved.
		until("found again", transportRetryMax, func() bool { return tr.status().Problem == "" })
		until("moved", transportRecheck+time.Minute, func() bool { return tr.url() == "https://b/jwt" })
		if fmt.Sprint(handed) != "[https://a/jwt https://b/jwt]" {
			t.Fatalf("handed to the runner: %v", handed)
		}
		cancel()
		<-done
		h.mu.Lock()
		defer h.mu.Unlock()
		if n := h.n["WARN MatrixRTC ringing unavailable: no transport yet; asking the homeserver again with backoff"]; n != 1 {
			t.Errorf("warned %d times, want once: %v", n, h.n)
		}
		if n := h.n["INFO MatrixRTC transport discovered from the homeserver"]; n != 2 {
			t.Errorf("discoveries logged %d times, want 2 (found, moved): %v", n, h.n)
		}
		for i := 1; i < len(d.asked); i++ {
			if gap := d.asked[i].Sub(d.asked[i-1]); gap < transportRetryBase/2 {
				t.Errorf("asked again after %v", gap)
			}
		}
	})
}

// TestRTCLineWaitsForTransport: the matrixrtc path refuses a ring while
// no transport is known, so the ring coordinator rings the others.
func TestRTCLineWaitsForTransport(t *testing.T) {
	tr := &rtcTransport{}
	r := rtc.NewRunner(rtc.RunnerConfig{Machine: rtc.DefaultConfig(rtc.Device{User: "@door:hs", DeviceID: "D"}, "")}, nil, nil)
	line := rtcLine{Runner: r, transport: tr}
	residents := []callengine.Resident{{User: "@alice:hs", Room: "!a:hs"}}
	if err := line.Ring(t.Context(), residents); !errors.Is(err, errNoTransport) {
		t.Fatalf("ring without a transport: %v", err)
	}
	tr.changed = r.SetTransport
	tr.set("https://hs/jwt", "https://hs/_matrix/client/v1/rtc/transports")
	if err := line.Ring(t.Context(), residents); err != nil {
		t.Fatalf("ring with a transport: %v", err)
	}
}
