package webrtc

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/doorbell/intercom/media"
	"github.com/pion/sdp/v3"
)

// answeredMedia is what an answer accepted, read before pion applies it.
type answeredMedia struct {
	audio bool        // the audio m-section is accepted with Opus
	video media.Codec // "" when video is rejected or has no codec we send
}

// parseAnswer finds the codecs the answerer accepted. For video it prefers
// H.264 over VP8 whatever the answerer's order, because our encoder for
// H.264 is several times cheaper. H.264 counts only if it keeps
// packetization-mode 1 and the profile (first two bytes of
// profile-level-id, level excepted) we offered: RFC 6184 §8.2.2 requires the
// answerer to keep them or drop the format, and pion binds a track only to
// such a match.
func parseAnswer(raw string, have func(media.Codec) bool) (answeredMedia, error) {
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(raw); err != nil {
		return answeredMedia{}, fmt.Errorf("parse answer: %w", err)
	}
	var out answeredMedia
	for _, m := range sd.MediaDescriptions {
		if m.MediaName.Port.Value == 0 {
			continue // rejected (RFC 3264 §6)
		}
		names := map[string]string{} // payload type → encoding name
		fmtps := map[string]string{}
		for _, a := range m.Attributes {
			switch a.Key {
			case "rtpmap":
				pt, rest, ok := strings.Cut(a.Value, " ")
				if ok {
					name, _, _ := strings.Cut(rest, "/")
					names[pt] = strings.ToLower(name)
				}
			case "fmtp":
				pt, rest, ok := strings.Cut(a.Value, " ")
				if ok {
					fmtps[pt] = rest
				}
			}
		}
		switch m.MediaName.Media {
		case "audio":
			for _, pt := range m.MediaName.Formats {
				if names[pt] == "opus" {
					out.audio = true
				}
			}
		case "video":
			h264, vp8 := false, false
			for _, pt := range m.MediaName.Formats {
				switch names[pt] {
				case "h264":
					h264 = h264 || h264Compatible(fmtps[pt])
				case "vp8":
					vp8 = true
				}
			}
			switch {
			case h264 && have(media.H264):
				out.video = media.H264
			case vp8 && have(media.VP8):
				out.video = media.VP8
			}
		}
	}
	return out, nil
}

// h264Compatible reports whether an H.264 fmtp line matches what we send:
// packetization-mode=1 and profile 42e0 (constrained baseline), any level.
func h264Compatible(fmtp string) bool {
	var pm, plid string
	for _, kv := range strings.Split(fmtp, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		switch strings.ToLower(k) {
		case "packetization-mode":
			pm = v
		case "profile-level-id":
			plid = v
		}
	}
	if n, err := strconv.Atoi(pm); err != nil || n != 1 || len(plid) != 6 {
		return false
	}
	return strings.EqualFold(plid[:4], "42e0")
}

// iceUfrag returns the first a=ice-ufrag of an SDP (with BUNDLE there is
// one ICE transport), "" if it has none.
func iceUfrag(sdp string) string {
	for line := range strings.Lines(sdp) {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "a=ice-ufrag:"); ok {
			return v
		}
	}
	return ""
}
