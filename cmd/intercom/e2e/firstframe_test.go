package e2e

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/resident"
)

// Answer → first frame, step by step (docs/ARCHITECTURE.md, "Answer to
// first frame"). Every time is read on the one wall clock the resident's
// page, Dendrite and the intercom share on this machine: the page's
// events, the answer's origin_server_ts and the intercom's debug log.

// answerSteps are one classic call's times from the resident's answer
// leaving its page to its first decoded frame.
type answerSteps struct {
	CallID string
	Ufrag  string // the door's ICE username fragment for the call
	Pair   string // the candidate pair the door's ICE selected

	Command   time.Time // the page's answer command (js-sdk's answer() called)
	Sent      time.Time // the m.call.answer PUT left the page
	Stored    time.Time // its origin_server_ts at Dendrite
	Synced    time.Time // the door's /sync response carrying it arrived
	Applied   time.Time // the door's peer took the answer (SetAnswer returned)
	Selected  time.Time // the door's ICE selected a pair (nominated, connected)
	Connected time.Time // the door's peer connection connected (DTLS and SRTP up)
	KeyFrame  time.Time // the first keyframe written after that
	PageICE   time.Time // the page's ICE connection reached connected
	PagePC    time.Time // the page's peer connection reached connected
	Received  time.Time // the first frame's last packet at the page (0: unknown)
	Frame     time.Time // the page's first decoded frame
}

// complete reports whether every step of the door's path was seen.
func (s answerSteps) complete() bool {
	for _, t := range []time.Time{s.Sent, s.Stored, s.Synced, s.Applied, s.Selected, s.Connected, s.KeyFrame, s.Frame} {
		if t.IsZero() {
			return false
		}
	}
	return true
}

// answerSpan is one named interval of answerSteps, in order.
type answerSpan struct {
	Name string
	Of   func(answerSteps) (time.Duration, bool)
}

func span(name string, from, to func(answerSteps) time.Time) answerSpan {
	return answerSpan{Name: name, Of: func(s answerSteps) (time.Duration, bool) {
		a, b := from(s), to(s)
		if a.IsZero() || b.IsZero() {
			return 0, false
		}
		return b.Sub(a), true
	}}
}

// answerSpans are the steps reported: the chain from the answer leaving
// the page to the first frame, then figures beside it.
var answerSpans = []answerSpan{
	span("sent-to-stored", func(s answerSteps) time.Time { return s.Sent }, func(s answerSteps) time.Time { return s.Stored }),
	span("stored-to-synced", func(s answerSteps) time.Time { return s.Stored }, func(s answerSteps) time.Time { return s.Synced }),
	span("synced-to-applied", func(s answerSteps) time.Time { return s.Synced }, func(s answerSteps) time.Time { return s.Applied }),
	span("applied-to-ice", func(s answerSteps) time.Time { return s.Applied }, func(s answerSteps) time.Time { return s.Selected }),
	span("ice-to-dtls", func(s answerSteps) time.Time { return s.Selected }, func(s answerSteps) time.Time { return s.Connected }),
	span("dtls-to-keyframe", func(s answerSteps) time.Time { return s.Connected }, func(s answerSteps) time.Time { return s.KeyFrame }),
	span("keyframe-to-frame", func(s answerSteps) time.Time { return s.KeyFrame }, func(s answerSteps) time.Time { return s.Frame }),
	span("sent-to-frame", func(s answerSteps) time.Time { return s.Sent }, func(s answerSteps) time.Time { return s.Frame }),
	// Beside the chain.
	span("command-to-sent", func(s answerSteps) time.Time { return s.Command }, func(s answerSteps) time.Time { return s.Sent }),
	span("keyframe-to-received", func(s answerSteps) time.Time { return s.KeyFrame }, func(s answerSteps) time.Time { return s.Received }),
	span("sent-to-page-ice", func(s answerSteps) time.Time { return s.Sent }, func(s answerSteps) time.Time { return s.PageICE }),
	span("sent-to-page-dtls", func(s answerSteps) time.Time { return s.Sent }, func(s answerSteps) time.Time { return s.PagePC }),
}

// reportAnswerSteps reports the median of every span over the complete
// calls as a benchmark metric "<span>-ms", logs each call's steps, and
// fails the benchmark if fewer than want calls were complete.
func reportAnswerSteps(b *testing.B, steps []answerSteps, want int) {
	b.Helper()
	var done []answerSteps
	for _, s := range steps {
		if s.complete() {
			done = append(done, s)
		} else {
			b.Logf("call %s: steps incomplete: %+v", s.CallID, s)
		}
	}
	if len(done) < want {
		b.Errorf("%d of %d calls had every step of answer → first frame, want %d", len(done), len(steps), want)
	}
	for _, sp := range answerSpans {
		var ds []time.Duration
		for _, s := range done {
			if d, ok := sp.Of(s); ok {
				ds = append(ds, d)
			}
		}
		if len(ds) > 0 {
			b.ReportMetric(ms(median(ds)), sp.Name+"-ms")
		}
	}
	for _, s := range done {
		var parts []string
		for _, sp := range answerSpans {
			if d, ok := sp.Of(s); ok {
				parts = append(parts, fmt.Sprintf("%s %.0f", sp.Name, ms(d)))
			}
		}
		b.Logf("call %s (door ufrag %s, pair %s): %s ms", s.CallID, s.Ufrag, s.Pair, strings.Join(parts, ", "))
	}
}

// collectAnswerSteps gathers the steps of the given calls from the
// resident's events and the intercom's log.
func collectAnswerSteps(callIDs []string, events []resident.Event, intercomLog string) []answerSteps {
	byCall := map[string]*answerSteps{}
	var out []*answerSteps
	for _, id := range callIDs {
		s := &answerSteps{CallID: id}
		byCall[id] = s
		out = append(out, s)
	}
	byUfrag := map[string]*answerSteps{}
	for _, ev := range events {
		s := byCall[ev.CallID()]
		if s == nil {
			continue
		}
		switch ev.Name {
		case resident.EventAnswered:
			s.Command = firstTime(s.Command, ev.TS)
		case resident.EventAnswerSent:
			s.Sent = firstTime(s.Sent, ev.TS)
		case resident.EventICE:
			if ev.Str("state") == "connected" {
				s.PageICE = firstTime(s.PageICE, ev.TS)
				if u := ev.Str("remoteUfrag"); u != "" && s.Ufrag == "" {
					s.Ufrag = u
					byUfrag[u] = s
				}
			}
		case resident.EventPCState:
			if ev.Str("state") == "connected" {
				s.PagePC = firstTime(s.PagePC, ev.TS)
			}
		case resident.EventFirstFrame:
			s.Frame = firstTime(s.Frame, ev.TS)
			if r := ev.Num("receiveTs"); r > 0 {
				s.Received = time.UnixMicro(int64(r * 1000))
			}
		}
	}
	// The intercom's lines in order; keyframes belong to no call: each
	// call takes the first one after its connection came up.
	var keyframes []time.Time
	for _, line := range strings.Split(intercomLog, "\n") {
		kv := parseLogLine(line)
		if kv == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, kv["time"])
		if err != nil {
			continue
		}
		switch kv["msg"] {
		case "call answer received":
			if s := byCall[kv["call_id"]]; s != nil {
				s.Stored = logTime(kv["origin_server_ts"])
				s.Synced = logTime(kv["synced"])
			}
		case "call answer applied":
			if s := byCall[kv["call_id"]]; s != nil {
				s.Applied = firstTime(s.Applied, at)
			}
		case "ice pair selected":
			if s := byUfrag[kv["ufrag"]]; s != nil && s.Selected.IsZero() {
				s.Selected, s.Pair = at, kv["pair"]
			}
		case "peer state":
			if s := byUfrag[kv["ufrag"]]; s != nil && kv["state"] == "connected" {
				s.Connected = firstTime(s.Connected, at)
			}
		case "keyframe sent":
			if kv["key"] == "true" {
				keyframes = append(keyframes, at)
			}
		}
	}
	res := make([]answerSteps, 0, len(out))
	for _, s := range out {
		if !s.Connected.IsZero() {
			// Log times are to the millisecond: a keyframe in the same
			// millisecond as the connection counts as after it.
			if i := slices.IndexFunc(keyframes, func(k time.Time) bool { return !k.Before(s.Connected) }); i >= 0 {
				s.KeyFrame = keyframes[i]
			}
		}
		res = append(res, *s)
	}
	return res
}

func firstTime(have, t time.Time) time.Time {
	if have.IsZero() {
		return t
	}
	return have
}

func logTime(v string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}
	}
	return t
}

// parseLogLine splits one line of slog's text handler (key=value, values
// with spaces or quotes quoted as Go strings) into its fields; nil if the
// line is not one.
func parseLogLine(line string) map[string]string {
	if !strings.HasPrefix(line, "time=") {
		return nil
	}
	kv := map[string]string{}
	for rest := line; rest != ""; {
		rest = strings.TrimLeft(rest, " ")
		key, after, ok := strings.Cut(rest, "=")
		if !ok || key == "" || strings.ContainsAny(key, " \"") {
			return kv
		}
		if strings.HasPrefix(after, `"`) {
			q, err := strconv.QuotedPrefix(after)
			if err != nil {
				return kv
			}
			v, _ := strconv.Unquote(q)
			kv[key] = v
			rest = after[len(q):]
			continue
		}
		v, next, _ := strings.Cut(after, " ")
		kv[key] = v
		rest = next
	}
	return kv
}

func TestParseLogLine(t *testing.T) {
	line := `time=2026-12-07T01:31:43.052Z level=DEBUG msg="call answer received" component=calls call_id=179ab origin_server_ts=2026-12-07T01:31:43.001Z pair="udp4 host 127.0.0.1:1 <-> udp4 host 127.0.0.1:2" empty= q="a \"b\""`
	kv := parseLogLine(line)
	want := map[string]string{
		"time": "2026-12-07T01:31:43.052Z", "level": "DEBUG", "msg": "call answer received", "component": "calls",
		"call_id": "179ab", "origin_server_ts": "2026-12-07T01:31:43.001Z", "pair": "udp4 host 127.0.0.1:1 <-> udp4 host 127.0.0.1:2",
		"empty": "", "q": `a "b"`,
	}
	for k, v := range want {
		if kv[k] != v {
			t.Errorf("%s = %q, want %q", k, kv[k], v)
		}
	}
	if len(kv) != len(want) {
		t.Errorf("got %d fields %v, want %d", len(kv), kv, len(want))
	}
	if parseLogLine("[OpenH264] warning") != nil {
		t.Error("a line that is not slog's was parsed")
	}
}
