package framecrypt

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/lkcrypt"
	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/codec"
	"github.com/doorbell/intercom/media/h264nal"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
)

// The tests in this file run livekit-client 2.23.0's own E2EE worker (the
// file Element Call runs) in node through internal/testenv/lkcrypt, with
// Element Call's key provider options, so they prove byte compatibility
// with what residents' apps really do, not with this package's reading of
// the source.

// compatFrame is one frame for both directions.
type compatFrame struct {
	name  string
	codec Codec
	frame []byte
}

// realFrames encodes a few frames with the encoders the door uses
// (OpenH264, libvpx, libopus from media/codec): key and delta frames of
// each video codec and Opus packets of a tone.
func realFrames(t *testing.T) []compatFrame {
	t.Helper()
	format := media.VideoFormat{Width: 320, Height: 240, FPS: 15}
	pattern, err := media.NewTestPattern(format)
	if err != nil {
		t.Fatal(err)
	}
	var out []compatFrame
	for _, v := range []struct {
		codec Codec
		new   func(media.VideoEncoderConfig) (media.VideoEncoder, error)
	}{{H264, codec.NewH264}, {VP8, codec.NewVP8}} {
		enc, err := v.new(media.VideoEncoderConfig{VideoFormat: format, Bitrate: 300_000, KeyFrameInterval: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		now := time.Unix(1_800_000_000, 0)
		for i := range 3 {
			au, err := enc.Encode(pattern.Render(now.Add(time.Duration(i)*format.Interval())).Image, i == 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(au) == 0 {
				continue
			}
			out = append(out, compatFrame{fmt.Sprintf("%v %s frame %d", v.codec, map[bool]string{true: "key", false: "delta"}[i == 0], i), v.codec, bytes.Clone(au)})
		}
		if err := enc.Close(); err != nil {
			t.Fatal(err)
		}
	}
	opus, err := codec.NewOpus(media.AudioEncoderConfig{Bitrate: 32_000})
	if err != nil {
		t.Fatal(err)
	}
	defer opus.Close()
	tone := media.NewTone(440, 0.3)
	defer tone.Close()
	for i := range 3 {
		pkt, err := opus.Encode(tone.Next())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, compatFrame{fmt.Sprintf("opus packet %d", i), Opus, bytes.Clone(pkt)})
	}
	return out
}

// syntheticFrames cover what the encoders above may not produce: 3-byte
// start codes (x264, Intel Quick Sync), AUD and SEI before the slice, a
// non-reference slice, large frames, one-byte Opus.
func syntheticFrames() []compatFrame {
	return []compatFrame{
		{"h264 key, 3-byte start code before the slice", H264, h264Key(30000, 1)},
		{"h264 delta", H264, h264Delta(5000, 2)},
		{"h264 AUD, SEI, non-reference slice, 3-byte codes", H264, accessUnit(nal{3, []byte{0x09, 0xf0}}, nal{3, []byte{0x06, 0x05, 0x01, 0xaa, 0x80}}, nal{3, sliceNAL(0x01, 800, 3)})},
		{"vp8 key", VP8, vp8Frame(true, 4000, 4)},
		{"vp8 delta", VP8, vp8Frame(false, 700, 5)},
		{"opus", Opus, opusFrame(120, 6)},
		{"opus TOC only", Opus, []byte{0xfc}},
	}
}

// frameType is the RTCEncodedVideoFrame type a WebRTC encoder or
// depacketizer gives the frame.
func frameType(c Codec, frame []byte) string {
	switch c {
	case VP8:
		if vp8KeyFrame(frame) {
			return "key"
		}
	case H264:
		for at, n := nextStartCode(frame, 0); at >= 0; at, n = nextStartCode(frame, at+n) {
			if at+n < len(frame) && frame[at+n]&0x1f == 5 {
				return "key"
			}
		}
	default:
		return ""
	}
	return "delta"
}

// livekitNormalized is a header as livekit-client's sender sends it
// (naluUtils.ts normalizeAnnexBStartCodes): every 00 00 01 that starts the
// header or follows a nonzero byte made 00 00 00 01. Checked against
// livekit-client by TestLivekitClientH264Parsing.
func livekitNormalized(header []byte) []byte {
	var out []byte
	from := 0
	for i := 0; i+2 < len(header); i++ {
		if header[i] == 0 && header[i+1] == 0 && header[i+2] == 1 && (i == 0 || header[i-1] != 0) {
			out = append(out, header[from:i]...)
			out = append(out, 0)
			from = i
			i += 2
		}
	}
	return append(out, header[from:]...)
}

// fromLivekit is what a frame livekit-client encrypted decrypts to: its
// clear header as livekit-client sends it, then the rest.
func fromLivekit(c Codec, frame []byte) []byte {
	if c != H264 {
		return frame
	}
	clear, _, _ := h264Clear(frame)
	return append(livekitNormalized(frame[:clear]), frame[clear:]...)
}

// overRTP is the frame as a receiver gets it from the door: packetised by
// pion's payloader for the codec (what TrackLocalStaticSample uses),
// depacketised by pion's depacketizer, which rebuilds H.264 NAL units
// behind 4-byte start codes as WebRTC's does.
func overRTP(t *testing.T, c Codec, frame []byte) []byte {
	t.Helper()
	var pay rtp.Payloader
	var depay rtp.Depacketizer
	switch c {
	case H264:
		pay, depay = &codecs.H264Payloader{}, &codecs.H264Packet{}
	case VP8:
		pay, depay = &codecs.VP8Payloader{EnablePictureID: true}, &codecs.VP8Packet{}
	default:
		pay, depay = &codecs.OpusPayloader{}, &codecs.OpusPacket{}
	}
	var out []byte
	for _, pkt := range pay.Payload(1200, frame) {
		b, err := depay.Unmarshal(pkt)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

func TestLivekitClientCompat(t *testing.T) {
	h := lkcrypt.NewT(t)
	frames := append(realFrames(t), syntheticFrames()...)

	// Element Call's keys are 16 bytes; others send 32. Two keys set, the
	// second one sending, as after a rotation.
	old, cur := testKey(1), bytes.Repeat([]byte{0xa5, 0x5a, 0x01, 0x00}, 8)
	keys := []lkcrypt.Key{{Index: 4, Raw: old}, {Index: 200, Raw: cur}}
	ring := NewKeyRing()
	for _, k := range keys {
		if err := ring.SetKey(k.Index, k.Raw); err != nil {
			t.Fatal(err)
		}
	}
	if err := ring.SetCurrent(200); err != nil {
		t.Fatal(err)
	}
	oldRing := ringWith(t) // only the old key, sending with it
	if err := oldRing.SetKey(4, old); err != nil {
		t.Fatal(err)
	}
	if err := oldRing.SetCurrent(4); err != nil {
		t.Fatal(err)
	}

	var ops []lkcrypt.Op
	var goFrames [][]byte
	for i, f := range frames {
		typ := frameType(f.codec, f.frame)
		// livekit-client encrypts; the sending key is the last one set.
		ops = append(ops, lkcrypt.Op{Op: "encrypt", Codec: f.codec.String(), Type: typ, Keys: keys, Frame: f.frame, SSRC: uint32(1000 + i), Timestamp: uint32(3000 * i)})
		// livekit-client decrypts what Go encrypted, under the current key
		// and under the old one.
		for _, r := range []*KeyRing{ring, oldRing} {
			enc, err := NewEncryptor(r, f.codec).Encrypt(f.frame)
			if err != nil {
				t.Fatalf("%s: %v", f.name, err)
			}
			enc = bytes.Clone(enc)
			goFrames = append(goFrames, enc)
			ops = append(ops, lkcrypt.Op{Op: "decrypt", Codec: f.codec.String(), Type: typ, Keys: keys, Frame: enc})
		}
		// The door's real path: through pion's packetizer and a
		// depacketizer before livekit-client sees it.
		ops = append(ops, lkcrypt.Op{Op: "decrypt", Codec: f.codec.String(), Type: typ, Keys: keys, Frame: overRTP(t, f.codec, goFrames[len(goFrames)-2])})
	}
	// Go's RBSP escaping as livekit-client unescapes it: a frame whose
	// ciphertext is full of start codes and zeros.
	heavyRing, heavy := escapeHeavyH264(t, 200, cur, escapeHeavyCiphertext())
	heavyEnc, err := NewEncryptor(heavyRing, H264).Encrypt(heavy)
	if err != nil {
		t.Fatal(err)
	}
	ops = append(ops, lkcrypt.Op{Op: "decrypt", Codec: "h264", Type: "delta", Keys: keys, Frame: overRTP(t, H264, heavyEnc)})
	// A frame under a key livekit-client does not have is dropped: the
	// harness does see failures.
	wrong := ringWith(t, 4)
	bad, err := NewEncryptor(wrong, Opus).Encrypt(opusFrame(50, 1))
	if err != nil {
		t.Fatal(err)
	}
	ops = append(ops, lkcrypt.Op{Op: "decrypt", Codec: "opus", Keys: keys, Frame: bytes.Clone(bad)})

	res, err := h.Run(t.Context(), ops)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range frames {
		want := normalized(f.codec, f.frame)
		lk, fromGo, fromGoOld, fromGoRTP := res[4*i], res[4*i+1], res[4*i+2], res[4*i+3]
		t.Run(f.name, func(t *testing.T) {
			if lk.Dropped || len(lk.Frame) == 0 {
				t.Fatalf("livekit-client did not encrypt: %s", strings.Join(lk.Errors, "; "))
			}
			if got := lk.Frame[len(lk.Frame)-1]; got != 200 {
				t.Fatalf("livekit-client used key index %d, want 200", got)
			}
			got, err := NewDecryptor(ring, f.codec).Decrypt(lk.Frame)
			if err != nil {
				t.Fatalf("Go cannot decrypt livekit-client's %d-byte frame: %v", len(lk.Frame), err)
			}
			if !bytes.Equal(got, fromLivekit(f.codec, f.frame)) {
				t.Fatalf("Go decrypted livekit-client's frame to %d bytes that differ from the %d-byte frame", len(got), len(want))
			}
			for name, r := range map[string]lkcrypt.Result{"current key": fromGo, "old key": fromGoOld, "over RTP": fromGoRTP} {
				if r.Dropped {
					t.Fatalf("livekit-client cannot decrypt Go's frame (%s): %s", name, strings.Join(r.Errors, "; "))
				}
				if !bytes.Equal(r.Frame, want) {
					t.Fatalf("livekit-client decrypted Go's frame (%s) to %d bytes that differ from the %d-byte frame", name, len(r.Frame), len(want))
				}
			}
			t.Logf("%d bytes → livekit-client %d bytes, Go %d bytes", len(f.frame), len(lk.Frame), len(goFrames[2*i]))
		})
	}
	if r := res[len(res)-2]; r.Dropped || !bytes.Equal(r.Frame, heavy) {
		t.Fatalf("livekit-client did not decrypt Go's escape-heavy H.264 frame: dropped=%v %s", r.Dropped, strings.Join(r.Errors, "; "))
	}
	if last := res[len(res)-1]; !last.Dropped {
		t.Fatal("livekit-client decrypted a frame under a key it does not have")
	}
}

// TestLivekitClientServerInjectedFrames checks the SIF handling against
// livekit-client's: its injected Opus silence passes, anything else with
// the trailer is dropped.
func TestLivekitClientServerInjectedFrames(t *testing.T) {
	h := lkcrypt.NewT(t)
	trailer := []byte{0x4c, 0x4b, 0x53, 0x49, 0x46, 0x01, 0x02}
	silence := append([]byte{0xf8, 0xff, 0xfe}, make([]byte, 77)...)
	keys := []lkcrypt.Key{{Index: 0, Raw: testKey(0)}}
	frames := [][]byte{append(bytes.Clone(silence), trailer...), append(opusFrame(40, 1), trailer...)}
	var ops []lkcrypt.Op
	for _, f := range frames {
		ops = append(ops, lkcrypt.Op{Op: "decrypt", Codec: "opus", Keys: keys, Frame: f, SIF: trailer})
	}
	res, err := h.Run(t.Context(), ops)
	if err != nil {
		t.Fatal(err)
	}
	dec := NewDecryptor(ringWith(t, 0), Opus)
	dec.SetSIFTrailer(trailer)
	for i, f := range frames {
		got, err := dec.Decrypt(f)
		if res[i].Dropped != (err != nil) {
			t.Fatalf("frame %d: livekit-client dropped=%v, Go error %v", i, res[i].Dropped, err)
		}
		if err == nil && !bytes.Equal(got, res[i].Frame) {
			t.Fatalf("frame %d: Go passes %x, livekit-client %x", i, got, res[i].Frame)
		}
	}
}

// TestLivekitClientH264Parsing compares the H.264 parsing and escaping
// with livekit-client's on bytes made to hit their edges: start codes of both
// lengths anywhere (also in the last bytes), runs of zeros, escapes, every
// NAL type, leading data.
func TestLivekitClientH264Parsing(t *testing.T) {
	h := lkcrypt.NewT(t)
	rng := rand.New(rand.NewPCG(18, 2026))
	pieces := [][]byte{{0, 0, 1}, {0, 0, 0, 1}, {0, 0}, {0}, {0, 0, 3}, {3}, {1}, {2}}
	inputs := [][]byte{nil, {0}, {0, 0, 1}, {0, 0, 0, 1, 0x65}, {0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00}}
	for range 3000 {
		var b []byte
		for range rng.IntN(12) {
			switch rng.IntN(3) {
			case 0:
				b = append(b, pieces[rng.IntN(len(pieces))]...)
			case 1:
				b = append(b, byte(rng.IntN(256))) // a NAL header of any type
			default:
				b = append(b, byte(rng.IntN(4)))
			}
		}
		inputs = append(inputs, b)
	}
	var ops []lkcrypt.Op
	for _, in := range inputs {
		for _, op := range []string{"nalu", "writeRbsp", "parseRbsp", "needsRbspUnescaping", "normalize"} {
			ops = append(ops, lkcrypt.Op{Op: op, Frame: in})
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	res, err := h.Run(ctx, ops)
	if err != nil {
		t.Fatal(err)
	}
	for i, in := range inputs {
		r := res[5*i : 5*i+5]
		clear, _, ok := h264Clear(in)
		lkOK := r[0].Threw == "" && r[0].NALU
		if ok != lkOK || (ok && clear != r[0].Clear) {
			t.Errorf("h264Clear(%x) = %d, %v; livekit-client %d, %v (threw %q)", in, clear, ok, r[0].Clear, r[0].NALU, r[0].Threw)
		}
		if got := h264nal.AppendEscaped(nil, in); !bytes.Equal(got, r[1].Frame) {
			t.Errorf("escape(%x) = %x; livekit-client %x", in, got, r[1].Frame)
		}
		if got := h264nal.AppendUnescaped(nil, in); !bytes.Equal(got, r[2].Frame) {
			t.Errorf("unescape(%x) = %x; livekit-client %x", in, got, r[2].Frame)
		}
		if got := needsRBSPUnescaping(in); got != r[3].Bool {
			t.Errorf("needsRBSPUnescaping(%x) = %v; livekit-client %v", in, got, r[3].Bool)
		}
		if got := livekitNormalized(in); !bytes.Equal(got, r[4].Frame) {
			t.Errorf("livekitNormalized(%x) = %x; livekit-client %x", in, got, r[4].Frame)
		}
	}
}
