package webrtc

import (
	"testing"

	"github.com/doorbell/intercom/media"
)

// A viewer's estimate rules the encoder only while no call reports one
// for the same codec: the call's picture is not lowered for a bystander.
func TestViewersYieldToCalls(t *testing.T) {
	s := &fakeSink{}
	g := newEstimateGate(s)
	calls, viewers := g.callSink(), g.viewerSink()
	v1, v2, call, vp8call := "viewer1", "viewer2", "call", "vp8call"
	want := func(step string, c media.Codec, from any, bps int) {
		t.Helper()
		got, ok := s.get(c, from)
		switch {
		case bps == 0 && ok:
			t.Errorf("%s: %s's %s estimate %d reached the stream, want none", step, from, c, got)
		case bps != 0 && got != bps:
			t.Errorf("%s: %s's %s estimate at the stream %d (there %v), want %d", step, from, c, got, ok, bps)
		}
	}

	// Viewers alone: each counts (the stream takes the lowest).
	viewers.ReportBandwidth(media.H264, v1, 300_000)
	viewers.ReportBandwidth(media.H264, v2, 900_000)
	want("viewers alone", media.H264, v1, 300_000)
	want("viewers alone", media.H264, v2, 900_000)

	// A call on H.264: the viewers' estimates are withdrawn, later
	// ones held back.
	calls.ReportBandwidth(media.H264, call, 1_200_000)
	want("call joins", media.H264, call, 1_200_000)
	want("call joins", media.H264, v1, 0)
	want("call joins", media.H264, v2, 0)
	viewers.ReportBandwidth(media.H264, v1, 200_000)
	want("during the call", media.H264, v1, 0)

	// A call on VP8 does not silence H.264 viewers of its own encoder,
	// and H.264 viewers do not reach the VP8 encoder.
	calls.ReportBandwidth(media.VP8, vp8call, 500_000)
	want("vp8 call", media.VP8, vp8call, 500_000)
	want("vp8 call", media.VP8, v1, 0)

	// A viewer that leaves during the call stays gone afterwards.
	viewers.ForgetBandwidth(media.H264, v2)

	// The H.264 call ends: the remaining viewer's latest estimate counts
	// again.
	calls.ForgetBandwidth(media.H264, call)
	want("call ends", media.H264, call, 0)
	want("call ends", media.H264, v1, 200_000)
	want("call ends", media.H264, v2, 0)
	want("call ends", media.VP8, vp8call, 500_000)

	// Back to viewers alone: a new estimate goes straight through.
	viewers.ReportBandwidth(media.H264, v1, 250_000)
	want("viewers again", media.H264, v1, 250_000)
	viewers.ForgetBandwidth(media.H264, v1)
	want("viewer leaves", media.H264, v1, 0)
	if n := s.count(); n != 1 {
		t.Errorf("%d estimates left at the stream, want the VP8 call's only", n)
	}
}

// A call peer whose codec changes (its estimate moves from one codec to
// the other) gives the first codec back to its viewers.
func TestCallChangingCodecReleasesViewers(t *testing.T) {
	s := &fakeSink{}
	g := newEstimateGate(s)
	g.viewerSink().ReportBandwidth(media.H264, "viewer", 300_000)
	g.callSink().ReportBandwidth(media.H264, "call", 1_000_000)
	if _, ok := s.get(media.H264, "viewer"); ok {
		t.Fatal("viewer still counts during an H.264 call")
	}
	g.callSink().ReportBandwidth(media.VP8, "call", 1_000_000)
	if bps, _ := s.get(media.H264, "viewer"); bps != 300_000 {
		t.Errorf("viewer's H.264 estimate %d after the call moved to VP8, want 300000", bps)
	}
	if _, ok := s.get(media.H264, "call"); ok {
		t.Error("the call's old H.264 estimate was kept")
	}
}
