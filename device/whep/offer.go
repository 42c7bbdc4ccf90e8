package whep

import (
	"fmt"

	"github.com/pion/sdp/v3"
)

// Limits on an offer, far above what a browser, go2rtc or GStreamer send
// (a browser's audio+video offer is 3–6 KB, 2 or 3 media sections): an
// offer is read from any client the guard let through, and pion's parser
// and ICE agent should never see one that could only be an attack.
const (
	maxOfferBytes = 64 << 10
	maxMedia      = 8
)

// checkOffer reads a viewer's offer before any peer connection is made,
// so that what is not a viewer's offer gets a 400 that says why
// (draft-ietf-wish-whep, section 4.2: the offer is an SDP offer per RFC
// 8829 / JSEP). It accepts any offer that parses, stays within the limits
// and has at least one audio or video section the viewer may receive on
// (recvonly or sendrecv, port not zero); whether the door can send one of
// its codecs there is for the peer connection to say.
func checkOffer(raw []byte) error {
	if len(raw) == 0 {
		return fmt.Errorf("%w: empty body", ErrBadOffer)
	}
	if len(raw) > maxOfferBytes {
		return fmt.Errorf("%w: larger than %d bytes", ErrBadOffer, maxOfferBytes)
	}
	var sd sdp.SessionDescription
	if err := sd.Unmarshal(raw); err != nil {
		return fmt.Errorf("%w: %w", ErrBadOffer, err)
	}
	if len(sd.MediaDescriptions) > maxMedia {
		return fmt.Errorf("%w: %d media sections, at most %d", ErrBadOffer, len(sd.MediaDescriptions), maxMedia)
	}
	sessionDir := direction(sd.Attributes)
	receives := false
	for _, m := range sd.MediaDescriptions {
		if m.MediaName.Media != "audio" && m.MediaName.Media != "video" {
			continue
		}
		if m.MediaName.Port.Value == 0 {
			continue // rejected (RFC 3264, section 6)
		}
		dir := direction(m.Attributes)
		if dir == "" {
			dir = sessionDir
		}
		// The offerer's direction: sendrecv when absent (RFC 4566,
		// section 6); a viewer offers recvonly.
		if dir == "" || dir == "recvonly" || dir == "sendrecv" {
			receives = true
		}
	}
	if !receives {
		return fmt.Errorf("%w: no audio or video section the viewer receives on (recvonly or sendrecv)", ErrBadOffer)
	}
	return nil
}

// direction returns the direction attribute among attrs, "" if none.
func direction(attrs []sdp.Attribute) string {
	for _, a := range attrs {
		switch a.Key {
		case "sendrecv", "sendonly", "recvonly", "inactive":
			return a.Key
		}
	}
	return ""
}
