package codec

import (
	"bytes"

	"github.com/doorbell/intercom/media/h264nal"
)

// Constant parameter set ids (issue 16, "bad networks stay usable").
//
// OpenH264 gives every IDR a new SPS and PPS id (its default
// eSpsPpsIdStrategy, INCREASING_ID: 0, 1, 2 … per keyframe), and
// mediadevices' binding cannot set another strategy. A receiver must have
// the SPS and PPS a slice names before it can use the slice: libwebrtc
// (H264SpsPpsTracker) drops an IDR slice whose PPS id it has not seen and
// asks for a keyframe at once instead of waiting or NACKing. The door's
// SPS and PPS travel in their own packet (pion's payloader sends them as
// one STAP-A ahead of the first slice), so when that packet is lost, or
// overtaken by the slices on a path that reorders, the keyframe is
// thrown away and a PLI comes back; the next keyframe has new ids again
// and can meet the same fate. Under BenchmarkBadNetwork's 0–200 ms
// jitter, with no loss at all, Chromium sent 18 PLIs a minute and each
// was followed by a freeze of 0.3–3 s.
//
// With one id for every keyframe (what OpenH264's CONSTANT_ID strategy
// would write), a receiver that got any earlier SPS and PPS can use the
// slices of the next keyframe whenever its parameter sets arrive, as the
// encoder's settings stay the same within a stream. rewriteParamSetIDs
// sets the ids to 0: in each SPS, each PPS (its own id and the SPS it
// names) and each slice header (the PPS it names). The ids are
// Exp-Golomb coded (H.264 7.3.2.1.1, 7.3.2.2, 7.3.3), so the rest of each
// NAL unit moves by a few bits: the RBSP is re-assembled and its
// emulation prevention bytes (7.4.1) are written anew.

// NAL unit types (H.264 table 7-1) whose ids are rewritten.
const (
	nalSlice = 1
	nalIDR   = 5
	nalSPS   = 7
	nalPPS   = 8
)

// rewriteParamSetIDs returns au (Annex B) with every parameter set id 0,
// appending to dst[:0]. An access unit whose ids are all 0 already, or
// that cannot be parsed, comes back as it was: au itself, not copied.
func rewriteParamSetIDs(dst, au []byte) []byte {
	dst = dst[:0]
	changed := false
	forEachNAL(au, func(prefix, nal []byte) {
		dst = append(dst, prefix...)
		if out, ok := rewriteNAL(dst, nal); ok {
			dst, changed = out, true
			return
		}
		dst = append(dst, nal...)
	})
	if !changed {
		return au
	}
	return dst
}

// forEachNAL calls fn with each NAL unit of an Annex B stream and the
// start code (and anything else) before it.
func forEachNAL(au []byte, fn func(prefix, nal []byte)) {
	start := bytes.Index(au, []byte{0, 0, 1})
	if start < 0 {
		fn(nil, au)
		return
	}
	prefix := au[:start+3]
	for {
		rest := au[start+3:]
		next := bytes.Index(rest, []byte{0, 0, 1})
		if next < 0 {
			fn(prefix, rest)
			return
		}
		end := next
		// A four-byte start code's leading zero belongs to the next one.
		if end > 0 && rest[end-1] == 0 {
			end--
		}
		fn(prefix, rest[:end])
		prefix = rest[end : next+3]
		start += 3 + next
	}
}

// rewriteNAL appends nal with its parameter set ids set to 0 to dst; ok
// is false (and dst unchanged) when nal has no id to change.
func rewriteNAL(dst, nal []byte) ([]byte, bool) {
	if len(nal) < 2 {
		return dst, false
	}
	var keep, ids int // leading bits kept as they are, then ids to zero
	skip := 0         // ue(v) fields read before the ids
	switch nal[0] & 0x1f {
	case nalSPS:
		keep, ids = 24, 1 // profile_idc, constraint flags, level_idc; seq_parameter_set_id
	case nalPPS:
		ids = 2 // pic_parameter_set_id, seq_parameter_set_id
	case nalSlice, nalIDR:
		skip, ids = 2, 1 // first_mb_in_slice, slice_type; pic_parameter_set_id
	default:
		return dst, false
	}
	rbsp := h264nal.Unescaped(nal[1:])
	r := bitReader{b: rbsp, pos: keep}
	for range skip {
		if _, ok := r.ue(); !ok {
			return dst, false
		}
	}
	from := r.pos
	zero := true
	for range ids {
		v, ok := r.ue()
		if !ok {
			return dst, false
		}
		zero = zero && v == 0
	}
	stop := lastSetBit(rbsp)
	if zero || stop < r.pos {
		return dst, false
	}
	var w bitWriter
	w.b = make([]byte, 0, len(rbsp)+1)
	w.copyBits(rbsp, 0, from)
	for range ids {
		w.bit(1) // ue(v) 0
	}
	w.copyBits(rbsp, r.pos, stop)
	w.bit(1) // rbsp_stop_one_bit, then alignment zeros
	w.align()
	dst = append(dst, nal[0])
	return h264nal.AppendEscaped(dst, w.b), true
}

// lastSetBit is the position of the last 1 bit (the RBSP stop bit), or -1.
func lastSetBit(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if c := b[i]; c != 0 {
			n := 7
			for c&1 == 0 {
				c >>= 1
				n--
			}
			return i*8 + n
		}
	}
	return -1
}

type bitReader struct {
	b   []byte
	pos int
}

func (r *bitReader) bit() (int, bool) {
	if r.pos >= len(r.b)*8 {
		return 0, false
	}
	v := int(r.b[r.pos/8]>>(7-r.pos%8)) & 1
	r.pos++
	return v, true
}

// ue reads an unsigned Exp-Golomb code (H.264 9.1).
func (r *bitReader) ue() (int, bool) {
	zeros := 0
	for {
		v, ok := r.bit()
		if !ok || zeros > 31 {
			return 0, false
		}
		if v == 1 {
			break
		}
		zeros++
	}
	n := 0
	for range zeros {
		v, ok := r.bit()
		if !ok {
			return 0, false
		}
		n = n<<1 | v
	}
	return 1<<zeros - 1 + n, true
}

type bitWriter struct {
	b []byte
	n int // bits used in the last byte, 0–7 (0: start a new byte)
}

func (w *bitWriter) bit(v int) {
	if w.n == 0 {
		w.b = append(w.b, 0)
	}
	w.b[len(w.b)-1] |= byte(v&1) << (7 - w.n)
	w.n = (w.n + 1) % 8
}

// copyBits appends the bits [from, to) of src.
func (w *bitWriter) copyBits(src []byte, from, to int) {
	for from < to && from%8 != 0 {
		w.bit(int(src[from/8]>>(7-from%8)) & 1)
		from++
	}
	// Whole source bytes, shifted into place.
	for ; from+8 <= to; from += 8 {
		c := src[from/8]
		if w.n == 0 {
			w.b = append(w.b, c)
			continue
		}
		w.b[len(w.b)-1] |= c >> w.n
		w.b = append(w.b, c<<(8-w.n))
	}
	for ; from < to; from++ {
		w.bit(int(src[from/8]>>(7-from%8)) & 1)
	}
}

// align pads the last byte with zeros.
func (w *bitWriter) align() { w.n = 0 }
