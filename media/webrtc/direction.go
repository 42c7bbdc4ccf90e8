package webrtc

import (
	"fmt"

	"github.com/pion/sdp/v3"
)

// Media directions (RFC 8866 section 6.7) as send and receive flags.
type direction struct{ send, recv bool }

var directionAttrs = map[string]direction{
	"sendrecv": {true, true},
	"sendonly": {true, false},
	"recvonly": {false, true},
	"inactive": {false, false},
}

func (d direction) String() string {
	switch {
	case d.send && d.recv:
		return "sendrecv"
	case d.send:
		return "sendonly"
	case d.recv:
		return "recvonly"
	}
	return "inactive"
}

// mediaDirection returns a media section's direction, else the session's,
// else sendrecv (RFC 8866 section 6.7).
func mediaDirection(m *sdp.MediaDescription, s *sdp.SessionDescription) direction {
	for _, attrs := range [][]sdp.Attribute{m.Attributes, s.Attributes} {
		for _, a := range attrs {
			if d, ok := directionAttrs[a.Key]; ok {
				return d
			}
		}
	}
	return direction{true, true}
}

// conformAnswer makes the directions of an answer agree with the offer it
// answers: in each media section we send only if the offerer receives and
// receive only if it sends (RFC 3264 section 6.1; RFC 8829 section
// 5.3.1). pion keeps a transceiver's own direction when the far end
// offers sendonly or inactive, so its answer to a hold (Matrix VoIP
// m.call.negotiate; js-sdk's setRemoteOnHold offers sendonly everywhere)
// says sendrecv, and browsers refuse it ("Incompatible receive
// direction"), leaving them stuck with their offer. pion also refuses a
// local answer that differs from the one it created, so the corrected
// copy only goes to the far end: pion's own state keeps its directions,
// and it goes on sending RTP that a holding browser drops. Sections are
// matched by a=mid; an answer that already agrees comes back unchanged.
func conformAnswer(offer, answer string) (string, error) {
	var o, a sdp.SessionDescription
	if err := o.UnmarshalString(offer); err != nil {
		return "", fmt.Errorf("parse offer: %w", err)
	}
	if err := a.UnmarshalString(answer); err != nil {
		return "", fmt.Errorf("parse answer: %w", err)
	}
	offered := map[string]direction{}
	for _, m := range o.MediaDescriptions {
		if mid, ok := m.Attribute("mid"); ok {
			offered[mid] = mediaDirection(m, &o)
		}
	}
	changed := false
	for _, m := range a.MediaDescriptions {
		mid, ok := m.Attribute("mid")
		if !ok {
			continue
		}
		theirs, ok := offered[mid]
		if !ok {
			continue
		}
		ours := mediaDirection(m, &a)
		want := direction{send: ours.send && theirs.recv, recv: ours.recv && theirs.send}
		if want == ours {
			continue
		}
		changed = true
		kept := m.Attributes[:0]
		for _, attr := range m.Attributes {
			if _, isDir := directionAttrs[attr.Key]; !isDir {
				kept = append(kept, attr)
			}
		}
		m.Attributes = append(kept, sdp.NewPropertyAttribute(want.String()))
	}
	if !changed {
		return answer, nil
	}
	out, err := a.Marshal()
	if err != nil {
		return "", fmt.Errorf("write answer: %w", err)
	}
	return string(out), nil
}
