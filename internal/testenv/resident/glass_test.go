package resident

import "testing"

// TestGlassMatched: frames whose code and RTP timestamp disagree (a late
// callback read a newer picture) are set apart, across an RTP wrap.
func TestGlassMatched(t *testing.T) {
	const rtp0 = 1<<32 - 90*100 // wraps after 100 ms
	var gs []Glass
	for i := range 10 {
		capture := 1_000_000 + float64(i)*66.7
		gs = append(gs, Glass{OK: true, CaptureMs: capture, RTP: int64(uint32(rtp0 + uint32(i)*6003))})
	}
	// Frame 4's callback described frame 4 but the page drew frame 5.
	gs[4].CaptureMs = gs[5].CaptureMs
	gs = append(gs, Glass{OK: false, RTP: 5}, Glass{OK: true, RTP: -1, CaptureMs: 1})
	matched, mismatched := GlassMatched(gs, 10)
	if len(matched) != 9 || len(mismatched) != 1 || mismatched[0].RTP != gs[4].RTP {
		t.Fatalf("matched %d, mismatched %+v; want 9 and frame 4", len(matched), mismatched)
	}
	if m, mm := GlassMatched(nil, 10); m != nil || mm != nil {
		t.Fatal("nothing matched something")
	}
}
