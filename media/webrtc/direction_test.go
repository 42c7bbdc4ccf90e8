package webrtc

import (
	"strings"
	"testing"
)

// twoSections builds a minimal SDP with one audio and one video section whose
// directions are a and v ("" writes none: sendrecv by default).
func twoSections(a, v string) string {
	var b strings.Builder
	b.WriteString("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n")
	for i, m := range []struct{ kind, dir string }{{"audio 9 UDP/TLS/RTP/SAVPF 111", a}, {"video 9 UDP/TLS/RTP/SAVPF 102", v}} {
		b.WriteString("m=" + m.kind + "\r\nc=IN IP4 0.0.0.0\r\na=mid:" + string(rune('0'+i)) + "\r\n")
		if m.dir != "" {
			b.WriteString("a=" + m.dir + "\r\n")
		}
		b.WriteString("a=rtcp-mux\r\n")
	}
	return b.String()
}

func sectionDirections(t *testing.T, sdp string) []string {
	t.Helper()
	var out []string
	for _, sec := range strings.Split(sdp, "\r\nm=")[1:] {
		d := "sendrecv"
		for _, l := range strings.Split(sec, "\r\n") {
			if _, ok := directionAttrs[strings.TrimPrefix(l, "a=")]; ok {
				d = strings.TrimPrefix(l, "a=")
			}
		}
		out = append(out, d)
	}
	return out
}

func TestConformAnswer(t *testing.T) {
	for _, tc := range []struct {
		name             string
		offerA, offerV   string // the far end's offer
		answerA, answerV string // what pion wrote
		wantA, wantV     string
		unchanged        bool
	}{
		// js-sdk's hold: every transceiver sendonly.
		{name: "hold", offerA: "sendonly", offerV: "sendonly", answerA: "sendrecv", answerV: "sendonly", wantA: "recvonly", wantV: "inactive"},
		{name: "unhold", offerA: "sendrecv", offerV: "sendrecv", answerA: "sendrecv", answerV: "sendrecv", wantA: "sendrecv", wantV: "sendrecv", unchanged: true},
		{name: "ice restart", offerA: "sendrecv", offerV: "recvonly", answerA: "sendrecv", answerV: "sendonly", wantA: "sendrecv", wantV: "sendonly", unchanged: true},
		{name: "default sendrecv", offerA: "", offerV: "inactive", answerA: "", answerV: "sendonly", wantA: "sendrecv", wantV: "inactive"},
		{name: "held by a recvonly offer", offerA: "recvonly", offerV: "recvonly", answerA: "sendrecv", answerV: "sendonly", wantA: "sendonly", wantV: "sendonly"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answer := twoSections(tc.answerA, tc.answerV)
			got, err := conformAnswer(twoSections(tc.offerA, tc.offerV), answer)
			if err != nil {
				t.Fatal(err)
			}
			if tc.unchanged && got != answer {
				t.Errorf("an agreeing answer was rewritten:\n%s", got)
			}
			if d := sectionDirections(t, got); d[0] != tc.wantA || d[1] != tc.wantV {
				t.Errorf("directions %v, want [%s %s]\n%s", d, tc.wantA, tc.wantV, got)
			}
			if !strings.Contains(got, "a=mid:1\r\n") || !strings.Contains(got, "a=rtcp-mux") {
				t.Errorf("other attributes lost:\n%s", got)
			}
		})
	}
	if _, err := conformAnswer("not sdp", twoSections("", "")); err == nil {
		t.Error("a broken offer was accepted")
	}
}
