package webrtc

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

func TestViewerBudgetRate(t *testing.T) {
	now := time.Unix(1000, 0)
	target := 800_000
	b := newViewerBudget(func() int { return target }, 1_500_000, func() time.Time { return now })
	remb := func(bps float32) {
		if err := b.WriteRTCP([]rtcp.Packet{&rtcp.ReceiverEstimatedMaximumBitrate{Bitrate: bps}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		step func()
		want int
	}{
		{"no REMB: the encoder's target", func() {}, 800_000},
		{"a lower REMB", func() { remb(300_000) }, 300_000},
		{"a higher REMB: the target", func() { remb(2_000_000) }, 800_000},
		{"the target falls below it", func() { target = 500_000 }, 500_000},
		{"a REMB below the floor", func() { remb(30_000) }, minViewerBudget},
		{"the REMB gone stale", func() { now = now.Add(rembFresh) }, 500_000},
	} {
		c.step()
		if got := b.GetTargetBitrate(); got != c.want {
			t.Errorf("%s: budget %d b/s, want %d", c.name, got, c.want)
		}
	}
}

// The point of the budget: pion's NACK responder, registered after it as
// in the viewers' API, resends no more than the budget allows however
// much a viewer asks for (here every one of 100 packets of 1 kB at once:
// 500 ms of a budget is what may go in one burst, pion's window).
func TestViewerBudgetLimitsRetransmissions(t *testing.T) {
	for _, c := range []struct {
		name   string
		target int
		remb   float32
		want   int // packets resent: budget/16 bytes, in 1012-byte packets
	}{
		{"the encoder's 1 Mb/s", 1_000_000, 0, 61},
		{"a REMB of 200 kb/s", 1_000_000, 200_000, 12},
		{"the floor", 50_000, 0, 9},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				if got := resentFor(t, c.target, c.remb, 100); got != c.want {
					t.Errorf("%d of 100 NACKed packets resent, want %d", got, c.want)
				}
			})
		})
	}
}

// resentFor sends n packets through a viewer's budget and NACK responder,
// has them all NACKed (after a REMB of remb, if not 0), and returns how
// many were resent once the pacer drained.
func resentFor(t *testing.T, target int, remb float32, n int) int {
	t.Helper()
	budgets, err := cc.NewInterceptor(func() (cc.BandwidthEstimator, error) {
		return newViewerBudget(func() int { return target }, 1_500_000, time.Now), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	responder, err := nack.NewResponderInterceptor()
	if err != nil {
		t.Fatal(err)
	}
	ir := &interceptor.Registry{}
	ir.Add(budgets)
	ir.Add(responder)
	chain, err := ir.Build("viewer")
	if err != nil {
		t.Fatal(err)
	}
	defer chain.Close()
	sent := &recordWriter{}
	w := chain.BindLocalStream(&interceptor.StreamInfo{SSRC: videoSSRC, MimeType: "video/H264",
		RTCPFeedback: []interceptor.RTCPFeedback{{Type: "nack"}}}, sent)
	seqs := make([]uint16, n)
	for i := range n {
		seqs[i] = uint16(i)
		if _, err := w.Write(&rtp.Header{Version: 2, SSRC: videoSSRC, SequenceNumber: uint16(i)}, make([]byte, 1000), nil); err != nil {
			t.Fatal(err)
		}
	}
	var in []rtcp.Packet
	if remb > 0 {
		in = append(in, &rtcp.ReceiverEstimatedMaximumBitrate{Bitrate: remb, SSRCs: []uint32{videoSSRC}})
	}
	in = append(in, &rtcp.TransportLayerNack{MediaSSRC: videoSSRC, Nacks: rtcp.NackPairsFromSequenceNumbers(seqs)})
	raw, err := rtcp.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	r := chain.BindRTCPReader(interceptor.RTCPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		return copy(b, raw), a, nil
	}))
	if _, _, err := r.Read(make([]byte, 1500), nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the responder's goroutine, and the pacer's timers
	return len(sent.packets()) - n
}

func TestViewerHistory(t *testing.T) {
	for _, c := range []struct {
		bps  int
		want uint16
	}{{150_000, 256}, {1_500_000, 256}, {2_048_000, 256}, {2_100_000, 512}, {4_000_000, 512}, {8_000_000, 1024}, {50_000_000, 1024}} {
		if got := viewerHistory(c.bps); got != c.want {
			t.Errorf("viewerHistory(%d) = %d, want %d", c.bps, got, c.want)
		}
	}
}

// GCC's loss-based half on the viewer's receiver reports: more than 10 %
// lost lowers the estimate by half the fraction, less than 2 % raises it
// by 5 %, between holds; only reports about our video count; the
// estimate bounds the budget, stays within the stream's rates, and each
// change is told.
func TestViewerBudgetLossEstimate(t *testing.T) {
	b := newViewerBudget(func() int { return 1_000_000 }, 1_500_000, time.Now)
	b.AddStream(&interceptor.StreamInfo{SSRC: videoSSRC, MimeType: "video/H264"}, &recordWriter{})
	b.AddStream(&interceptor.StreamInfo{SSRC: audioSSRC, MimeType: "audio/opus"}, &recordWriter{})
	var told []int
	v := lossView{b}
	v.OnTargetBitrateChange(func(int) { told = append(told, v.GetTargetBitrate()) })
	report := func(ssrc uint32, lost uint8) {
		rr := &rtcp.ReceiverReport{Reports: []rtcp.ReceptionReport{{SSRC: ssrc, FractionLost: lost}}}
		if err := b.WriteRTCP([]rtcp.Packet{rr}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if v.GetTargetBitrate() != 0 {
		t.Fatalf("an estimate before any report: %d", v.GetTargetBitrate())
	}
	report(audioSSRC, 128)
	if len(told) != 0 || b.GetTargetBitrate() != 1_000_000 {
		t.Fatalf("a report about audio counted: told %v, budget %d", told, b.GetTargetBitrate())
	}
	for _, c := range []struct {
		lost   uint8 // in 256ths
		want   int
		budget int
	}{
		{0, 1_050_000, 1_000_000},               // clean: up 5 %, the budget still the target
		{64, 918_750, 918_750},                  // 25 %: down 12.5 %
		{13, 918_750, 918_750},                  // 5 %: held
		{255, 461_169, 461_169},                 // all but lost: nearly halved
		{255, 231_485, 231_485},                 // and again
		{255, minViewerBudget, minViewerBudget}, // the floor
	} {
		report(videoSSRC, c.lost)
		if got := v.GetTargetBitrate(); got != c.want {
			t.Errorf("after %d/256 lost: estimate %d, want %d", c.lost, got, c.want)
		}
		if got := b.GetTargetBitrate(); got != c.budget {
			t.Errorf("after %d/256 lost: budget %d, want %d", c.lost, got, c.budget)
		}
	}
	if len(told) != 6 || told[0] != 1_050_000 || told[5] != minViewerBudget {
		t.Errorf("told %v, want each of the six estimates", told)
	}
	for range 50 {
		report(videoSSRC, 0)
	}
	if got := v.GetTargetBitrate(); got != 1_500_000 {
		t.Errorf("after 50 clean reports (1.05⁵⁰ > 10): %d, want the stream's maximum 1500000", got)
	}
}
