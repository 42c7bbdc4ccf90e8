package e2e

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// Press → MatrixRTC ring, step by step (issue 18): the ring is two
// homeserver events in a row in the resident's room, the intercom's call
// membership and then the ring that references it. The intercom's debug
// log says when each request left and how long the homeserver took to
// answer (rtc.logSent); the bench knows when it pressed and the ring's
// origin_server_ts. All four are read on the one clock this machine's
// processes share.

// ringRound is what the bench saw of one press.
type ringRound struct {
	Pressed  time.Time
	Room     string
	EventID  string    // the ring as alice's client received it
	ServerTS time.Time // its origin_server_ts
}

// ringSteps are one press's times, as the intercom's log tells them.
type ringSteps struct {
	ringRound
	MemberSent, MemberDone time.Time // the membership's PUT left, was answered
	RingSent, RingDone     time.Time // the ring's PUT left, was answered
}

// sentLine is one "call membership sent" or "MatrixRTC ring sent" line.
type sentLine struct {
	msg, room, eventID string
	at                 time.Time
	took               time.Duration
}

func parseSentLines(intercomLog string) []sentLine {
	var out []sentLine
	for _, line := range strings.Split(intercomLog, "\n") {
		kv := parseLogLine(line)
		if kv == nil || (kv["msg"] != "call membership sent" && kv["msg"] != "MatrixRTC ring sent") {
			continue
		}
		took, err := time.ParseDuration(kv["took"])
		at := logTime(kv["sent_at"])
		if err != nil || at.IsZero() {
			continue
		}
		out = append(out, sentLine{msg: kv["msg"], room: kv["room_id"], eventID: kv["event_id"], at: at, took: took})
	}
	return out
}

// collectRingSteps matches each round to its ring (by event ID) and to the
// membership sent into its room after the press and before the ring.
func collectRingSteps(rounds []ringRound, intercomLog string) []ringSteps {
	lines := parseSentLines(intercomLog)
	var out []ringSteps
	for _, r := range rounds {
		s := ringSteps{ringRound: r}
		for _, l := range lines {
			if l.msg == "MatrixRTC ring sent" && l.eventID == r.EventID {
				s.RingSent, s.RingDone = l.at, l.at.Add(l.took)
			}
		}
		for _, l := range lines {
			if l.msg == "call membership sent" && l.room == r.Room && !l.at.Before(r.Pressed.Add(-time.Millisecond)) &&
				(s.RingSent.IsZero() || l.at.Before(s.RingSent)) && (s.MemberSent.IsZero() || l.at.After(s.MemberSent)) {
				s.MemberSent, s.MemberDone = l.at, l.at.Add(l.took)
			}
		}
		out = append(out, s)
	}
	return out
}

// ringSpans are the steps reported, in order; the intercom's share is the
// first and the third.
var ringSpans = []struct {
	name string
	of   func(ringSteps) (time.Time, time.Time)
}{
	{"press-to-membership-leaves", func(s ringSteps) (time.Time, time.Time) { return s.Pressed, s.MemberSent }},
	{"membership-at-homeserver", func(s ringSteps) (time.Time, time.Time) { return s.MemberSent, s.MemberDone }},
	{"membership-answered-to-ring-leaves", func(s ringSteps) (time.Time, time.Time) { return s.MemberDone, s.RingSent }},
	{"ring-leaves-to-origin-ts", func(s ringSteps) (time.Time, time.Time) { return s.RingSent, s.ServerTS }},
}

// reportRingSteps reports each span's median over the rounds whose steps
// were all found, and the intercom's share (press → membership leaves,
// plus membership answered → ring leaves).
func reportRingSteps(b *testing.B, steps []ringSteps) {
	spans := make([][]time.Duration, len(ringSpans))
	var door []time.Duration
	for _, s := range steps {
		if s.MemberSent.IsZero() || s.RingSent.IsZero() {
			b.Logf("ring %s: steps incomplete in the intercom's log", s.EventID)
			continue
		}
		for i, sp := range ringSpans {
			from, to := sp.of(s)
			spans[i] = append(spans[i], to.Sub(from))
		}
		door = append(door, s.MemberSent.Sub(s.Pressed)+s.RingSent.Sub(s.MemberDone))
	}
	if len(door) == 0 {
		return
	}
	parts := make([]string, 0, len(ringSpans)+1)
	for i, sp := range ringSpans {
		b.ReportMetric(ms(median(spans[i])), sp.name+"-ms")
		parts = append(parts, fmt.Sprintf("%s %v", sp.name, spans[i]))
	}
	b.ReportMetric(ms(median(door)), "intercom-share-ms")
	parts = append(parts, fmt.Sprintf("intercom's share %v", door))
	fmt.Println(b.Name(), "press → ring in steps:", strings.Join(parts, "; "))
}

// TestCollectRingSteps: the rounds are matched to their own lines, as the
// intercom's slog text handler writes them, including a membership of an
// earlier press and one in another room.
func TestCollectRingSteps(t *testing.T) {
	var buf strings.Builder
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t0 := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	sent := func(msg, room, id string, at time.Time, took time.Duration) {
		log.Debug(msg, "room_id", room, "event_id", id, "sent_at", at.Format(time.RFC3339Nano), "took", took)
	}
	sent("call membership sent", "!a", "$m0", t0.Add(-time.Second), 20*time.Millisecond)
	sent("call membership sent", "!a", "$m1", t0.Add(3*time.Millisecond), 25*time.Millisecond)
	sent("call membership sent", "!b", "$m2", t0.Add(4*time.Millisecond), 30*time.Millisecond)
	sent("MatrixRTC ring sent", "!b", "$r2", t0.Add(35*time.Millisecond), 20*time.Millisecond)
	sent("MatrixRTC ring sent", "!a", "$r1", t0.Add(29*time.Millisecond), 22*time.Millisecond)
	steps := collectRingSteps([]ringRound{{Pressed: t0, Room: "!a", EventID: "$r1", ServerTS: t0.Add(40 * time.Millisecond)}}, buf.String())
	if len(steps) != 1 {
		t.Fatalf("got %d rounds", len(steps))
	}
	s := steps[0]
	want := []time.Duration{3 * time.Millisecond, 25 * time.Millisecond, time.Millisecond, 11 * time.Millisecond}
	for i, sp := range ringSpans {
		from, to := sp.of(s)
		if from.IsZero() || to.Sub(from) != want[i] {
			t.Errorf("%s = %v (from %v), want %v", sp.name, to.Sub(from), from, want[i])
		}
	}
}
