package codec

import (
	"bytes"
	"testing"
	"time"

	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/h264nal"
)

// paramSetIDs lists the ids an access unit names: each SPS's, each PPS's
// own and its SPS's, each slice's PPS.
func paramSetIDs(t *testing.T, au []byte) []int {
	t.Helper()
	var ids []int
	forEachNAL(au, func(_, nal []byte) {
		r := bitReader{b: h264nal.Unescaped(nal[1:])}
		read := func() int {
			v, ok := r.ue()
			if !ok {
				t.Fatalf("NAL type %d: truncated header", nal[0]&0x1f)
			}
			return v
		}
		switch nal[0] & 0x1f {
		case nalSPS:
			r.pos = 24
			ids = append(ids, read())
		case nalPPS:
			ids = append(ids, read(), read())
		case nalSlice, nalIDR:
			read()
			read()
			ids = append(ids, read())
		}
	})
	return ids
}

// TestConstantParamSetIDs: OpenH264 numbers each keyframe's parameter
// sets anew; after the rewrite every id is 0, and OpenH264's decoder
// decodes the rewritten stream into exactly the pictures of the original.
func TestConstantParamSetIDs(t *testing.T) {
	cfg := vga
	cfg.KeyFrameInterval = time.Second
	pat, err := media.NewNoisyTestPattern(cfg.VideoFormat)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := NewH264(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	raw := enc.(*videoEncoder)
	orig, err := NewH264Decoder()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	rewritten, err := NewH264Decoder()
	if err != nil {
		t.Fatal(err)
	}
	defer rewritten.Close()
	start := time.Now()
	sawNonZero := false
	for i := range 70 {
		img := pat.Render(start.Add(time.Duration(i) * cfg.Interval())).Image
		// Encode through the mediadevices reader directly, to see the
		// encoder's own ids.
		if i == 25 || i == 26 {
			if err := raw.key.ForceKeyFrame(); err != nil {
				t.Fatal(err)
			}
		}
		raw.cur = img
		data, release, err := raw.rc.Read()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		data = bytes.Clone(data)
		release()
		for _, id := range paramSetIDs(t, data) {
			sawNonZero = sawNonZero || id != 0
		}
		out := rewriteParamSetIDs(nil, data)
		for _, id := range paramSetIDs(t, out) {
			if id != 0 {
				t.Fatalf("frame %d: id %d after the rewrite (before: %v)", i, id, paramSetIDs(t, data))
			}
		}
		want, err1 := orig.Decode(data)
		got, err2 := rewritten.Decode(out)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("frame %d: decoding the original: %v, the rewritten: %v", i, err1, err2)
		}
		if err1 != nil {
			continue
		}
		if !bytes.Equal(want.Y, got.Y) || !bytes.Equal(want.Cb, got.Cb) || !bytes.Equal(want.Cr, got.Cr) {
			t.Fatalf("frame %d decodes differently after the rewrite", i)
		}
	}
	if !sawNonZero {
		t.Fatal("the encoder wrote no id other than 0: nothing was tested")
	}
}

// TestRewriteParamSetIDsEscapes: a rewrite that moves bytes into a 00 00
// 0x pattern gets an emulation prevention byte, and one that removes the
// need drops it; a NAL unit with no ids passes as it was.
func TestRewriteParamSetIDsEscapes(t *testing.T) {
	// A P slice (nal_ref_idc 3) naming PPS 1: first_mb 0 (1), slice_type
	// 5 (00110), pps 1 (010), then payload bits that, moved two bits
	// left, become 00 00 01.
	body := []byte{0b1_00110_01, 0b0_0000000, 0b00000000, 0b00000000, 0b01_100000}
	nal := append([]byte{0x61}, h264nal.AppendEscaped(nil, body)...)
	au := append([]byte{0, 0, 0, 1}, nal...)
	out := rewriteParamSetIDs(nil, au)
	if ids := paramSetIDs(t, out); len(ids) != 1 || ids[0] != 0 {
		t.Fatalf("ids %v, want [0]", ids)
	}
	if bytes.Contains(out[4:], []byte{0, 0, 1}) || bytes.Contains(out[4:], []byte{0, 0, 0}) {
		t.Fatalf("start code emulated in %x", out)
	}
	if got := h264nal.Unescaped(out[5:]); !bytes.Equal(got, []byte{0b1_00110_1_0, 0, 0, 0b00000001, 0b1_0000000}) {
		t.Errorf("rbsp %08b", got)
	}
	sei := []byte{0, 0, 0, 1, 0x06, 0x05, 0x01, 0x80}
	if out := rewriteParamSetIDs(nil, sei); !bytes.Equal(out, sei) {
		t.Errorf("SEI changed: %x", out)
	}
}

// BenchmarkRewriteParamSetIDs: the rewrite's cost per access unit, for a
// keyframe and a P-frame at 1.5 Mb/s (the stream's ceiling), 640x480.
func BenchmarkRewriteParamSetIDs(b *testing.B) {
	cfg := vga
	cfg.Bitrate = 1_500_000
	pat, err := media.NewNoisyTestPattern(cfg.VideoFormat)
	if err != nil {
		b.Fatal(err)
	}
	enc, err := NewH264(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer enc.Close()
	raw := enc.(*videoEncoder)
	var key, inter []byte
	start := time.Now()
	for i := 0; key == nil || inter == nil; i++ {
		img := pat.Render(start.Add(time.Duration(i) * cfg.Interval())).Image
		raw.cur = img
		data, release, err := raw.rc.Read()
		if err != nil {
			b.Fatal(err)
		}
		data = bytes.Clone(data)
		release()
		// The second keyframe and a P-frame after it: ids other than 0.
		if media.IsKeyFrame(media.H264, data) && i > 0 {
			key = data
		} else if key != nil {
			inter = data
		}
		if i == 2 {
			if err := raw.key.ForceKeyFrame(); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, c := range []struct {
		name string
		au   []byte
	}{{"key", key}, {"inter", inter}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.au)))
			var dst []byte
			for b.Loop() {
				dst = rewriteParamSetIDs(dst, c.au)
			}
		})
	}
}
