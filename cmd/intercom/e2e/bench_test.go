package e2e

import (
	"context"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/resident"
)

// BenchmarkEndToEnd measures what a resident feels, over b.N rings of two
// residents on loopback (run with -benchtime=10x): press → the resident's
// client fires its incoming-call event, and answer → first decoded video
// frame. It reports medians, plus the intercom's RSS while idle (before the
// first ring and after the last). answer-to-frame starts at the page's
// answer command; the steps from the answer leaving the page to its first
// frame (sent-to-frame and its parts, firstframe_test.go) are reported
// beside it, with the door's own times from its debug log.
func BenchmarkEndToEnd(b *testing.B) {
	e := startSystem(b, "alice", "bob")
	alice, bob := e.residents[0], e.residents[1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	time.Sleep(2 * time.Second) // let start-up settle before sampling idle memory
	before, err := e.status()
	if err != nil {
		b.Fatal(err)
	}
	var ring, bobRing, frame, connect []time.Duration
	var calls []string
	b.ResetTimer()
	for range b.N {
		e.waitStatus(ctx, "idle", func(s status) bool { return s.State == "idle" })
		pressed := e.press()
		inA, err := alice.WaitFor(ctx, "incoming")
		if err != nil {
			b.Fatal(err)
		}
		inB, err := bob.WaitFor(ctx, "incoming")
		if err != nil {
			b.Fatal(err)
		}
		calls = append(calls, inA.CallID())
		ring = append(ring, inA.TS.Sub(pressed))
		bobRing = append(bobRing, inB.TS.Sub(pressed))
		if err := alice.Answer(); err != nil {
			b.Fatal(err)
		}
		ans, err := alice.WaitFor(ctx, "answered")
		if err != nil {
			b.Fatal(err)
		}
		conn, err := alice.WaitFor(ctx, "connected")
		if err != nil {
			b.Fatal(err)
		}
		ff, err := alice.WaitFor(ctx, "first_frame")
		if err != nil {
			b.Fatal(err)
		}
		frame = append(frame, ff.TS.Sub(ans.TS))
		connect = append(connect, conn.TS.Sub(ans.TS))
		if _, err := bob.WaitFor(ctx, "hangup"); err != nil {
			b.Fatal(err)
		}
		if err := alice.Hangup(); err != nil {
			b.Fatal(err)
		}
		if _, err := alice.WaitFor(ctx, "hangup"); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	e.waitStatus(ctx, "idle", func(s status) bool { return s.State == "idle" })
	time.Sleep(2 * time.Second)
	after, err := e.status()
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("process before %+v after %+v", before.Process, after.Process)
	b.ReportMetric(ms(median(ring)), "press-to-ring-ms")
	b.ReportMetric(ms(median(bobRing)), "press-to-ring2-ms")
	b.ReportMetric(ms(median(connect)), "answer-to-connected-ms")
	b.ReportMetric(ms(median(frame)), "answer-to-frame-ms")
	reportAnswerSteps(b, collectAnswerSteps(calls, alice.Events(), e.log.String()), b.N)
	b.ReportMetric(float64(before.Process.RSS)/1e6, "idle-rss-MB")
	b.ReportMetric(float64(after.Process.RSS)/1e6, "idle-rss-after-MB")
	b.ReportMetric(0, "ns/op")
	b.Logf("rounds %d: press→ring %v; answer→connected %v; answer→first frame %v", b.N, ring, connect, frame)
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkLiveView measures a resident calling the door to watch it:
// placing the call → first decoded frame, median over b.N calls (run with
// -benchtime=10x).
func BenchmarkLiveView(b *testing.B) {
	e := startSystem(b, "judy")
	judy := e.residents[0]
	room := roomOf(b, judy)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var frame []time.Duration
	b.ResetTimer()
	for range b.N {
		e.waitStatus(ctx, "idle", func(s status) bool { return s.State == "idle" })
		id, placed := callStarted(ctx, b, judy, room)
		ff, err := judy.WaitFor(ctx, "first_frame")
		if err != nil {
			b.Fatal(err)
		}
		if ff.CallID() != id {
			b.Fatalf("first frame of call %s, want %s", ff.CallID(), id)
		}
		frame = append(frame, ff.TS.Sub(placed))
		if _, err := judy.Do(ctx, "hangup", map[string]any{"callId": id}); err != nil {
			b.Fatal(err)
		}
		if _, err := judy.WaitFor(ctx, "hangup"); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(ms(median(frame)), "call-to-frame-ms")
	b.ReportMetric(0, "ns/op")
	b.Logf("rounds %d: call → first frame %v", b.N, frame)
}

// BenchmarkRingEncryption compares ringing one resident in an unencrypted
// DM ("plain") and in an encrypted one ("encrypted", the resident on
// matrix-js-sdk's rust crypto), over INTERCOM_BENCH_ROUNDS (default 10)
// rings: press → the homeserver accepted the m.call.invite (its
// origin_server_ts; Dendrite runs on this machine's clock), and press →
// the resident's incoming-call event. Each ring is rejected, so the next
// starts from idle.
func BenchmarkRingEncryption(b *testing.B) {
	for _, enc := range []bool{false, true} {
		name := "plain"
		if enc {
			name = "encrypted"
		}
		b.Run(name, func(b *testing.B) { benchRing(b, enc) })
	}
}

func benchRing(b *testing.B, encrypted bool) {
	e := startSystemWith(b, systemOptions{Encrypted: encrypted}, "alice")
	alice := e.residents[0]
	rounds := 10
	if n, err := strconv.Atoi(os.Getenv("INTERCOM_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	time.Sleep(2 * time.Second) // let start-up (and the room keys' sharing) settle
	idle, err := e.status()
	if err != nil {
		b.Fatal(err)
	}
	// The resident's side, from its page's clock: invite accepted → its
	// sync handed the cleartext invite over (delivery, and decryption in
	// an encrypted room), → js-sdk fired incoming.
	var accepted, incoming, toClear, clearToIncoming []time.Duration
	b.ResetTimer()
	for range b.N {
		for range rounds {
			e.waitStatus(ctx, "idle", func(s status) bool { return s.State == "idle" })
			pressed := e.press()
			in, err := alice.WaitFor(ctx, resident.EventIncoming)
			if err != nil {
				b.Fatal(err)
			}
			if ts := in.Num("inviteTs"); ts > 0 {
				accepted = append(accepted, time.UnixMilli(int64(ts)).Sub(pressed))
				if synced := in.Num("syncedTs"); synced > 0 {
					toClear = append(toClear, time.Duration(synced-ts)*time.Millisecond)
					clearToIncoming = append(clearToIncoming, in.TS.Sub(time.UnixMilli(int64(synced))))
				}
			}
			incoming = append(incoming, in.TS.Sub(pressed))
			if err := alice.Reject(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	if len(accepted) < len(incoming) {
		b.Errorf("only %d of %d incoming calls carried the invite's origin_server_ts", len(accepted), len(incoming))
	}
	b.ReportMetric(ms(median(accepted)), "press-to-invite-accepted-ms")
	b.ReportMetric(ms(median(incoming)), "press-to-incoming-ms")
	b.ReportMetric(ms(median(toClear)), "accepted-to-cleartext-ms")
	b.ReportMetric(ms(median(clearToIncoming)), "cleartext-to-incoming-ms")
	b.ReportMetric(float64(idle.Process.RSS)/1e6, "idle-rss-MB")
	b.ReportMetric(0, "ns/op")
	b.Logf("%d rings: press→invite accepted %v; press→incoming %v", len(incoming), accepted, incoming)
}
