package v4l2

// NAL unit types (ITU-T H.264 Table 7-1).
const (
	nalSlice = 1
	nalIDR   = 5
	nalSPS   = 7
	nalPPS   = 8
	nalAUD   = 9
)

var startCode = []byte{0, 0, 0, 1}

// h264Framer passes the camera's access units through untouched except
// for one thing: every IDR access unit gets the latest SPS and PPS in front
// of its first slice if the camera sent them only once at stream start (many
// UVC and SoC encoders do), so a viewer who joins at any keyframe can
// decode (RFC 6184 §8.4 leaves parameter-set delivery to the sender).
type h264Framer struct {
	sps, pps []byte // latest, without start code
	out      []byte
}

// splitNALs returns the NAL units of an Annex B byte stream, without start
// codes.
func splitNALs(b []byte) [][]byte {
	var nals [][]byte
	start := -1
	for i := 0; i+2 < len(b); i++ {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			if start >= 0 {
				end := i
				if end > start && b[end-1] == 0 {
					end-- // the first zero of a four-byte start code
				}
				nals = append(nals, b[start:end])
			}
			start = i + 3
			i += 2
		}
	}
	if start >= 0 && start < len(b) {
		nals = append(nals, b[start:])
	}
	return nals
}

// frame returns the access unit to send, and whether it is an IDR that
// could not be completed because no SPS/PPS has been seen yet (the caller
// drops it and asks for another keyframe).
func (f *h264Framer) frame(au []byte) (out []byte, incomplete bool) {
	nals := splitNALs(au)
	hasIDR, hasSPS, hasPPS := false, false, false
	for _, n := range nals {
		if len(n) == 0 {
			continue
		}
		switch n[0] & 0x1f {
		case nalSPS:
			f.sps = append(f.sps[:0], n...)
			hasSPS = true
		case nalPPS:
			f.pps = append(f.pps[:0], n...)
			hasPPS = true
		case nalIDR:
			hasIDR = true
		}
	}
	if !hasIDR || (hasSPS && hasPPS) {
		return au, false
	}
	if f.sps == nil || f.pps == nil {
		return nil, true
	}
	f.out = f.out[:0]
	inserted := false
	for _, n := range nals {
		if len(n) == 0 {
			continue
		}
		t := n[0] & 0x1f
		if !inserted && t >= nalSlice && t <= nalIDR {
			// Before the first slice; an AUD, SEI or a lone SPS/PPS stays
			// in front (an AUD must open the access unit, §7.4.1.2.3).
			if !hasSPS {
				f.out = append(append(f.out, startCode...), f.sps...)
			}
			if !hasPPS {
				f.out = append(append(f.out, startCode...), f.pps...)
			}
			inserted = true
		}
		f.out = append(append(f.out, startCode...), n...)
	}
	return f.out, false
}
