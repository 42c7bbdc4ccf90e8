package callengine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// Event types of the Matrix VoIP module (client-server spec, "Voice over
// IP"). The engine writes its own content structs rather than mautrix's:
// mautrix can serialise version as a number and lacks invitee, capabilities
// and the stream metadata keys (see ../shared/matrix-voip.md §1.10).
const (
	TypeInvite       = "m.call.invite"
	TypeCandidates   = "m.call.candidates"
	TypeAnswer       = "m.call.answer"
	TypeSelectAnswer = "m.call.select_answer"
	TypeHangup       = "m.call.hangup"
	TypeReject       = "m.call.reject"
	TypeNegotiate    = "m.call.negotiate"
)

// ProtocolVersion is the VoIP protocol version the engine speaks.
const ProtocolVersion = "1"

// Hangup reasons (Matrix spec, VoIP: m.call.hangup). Receivers must treat
// unknown reasons as a normal hangup, so the engine accepts any string.
const (
	ReasonICETimeout    = "ice_timeout"
	ReasonICEFailed     = "ice_failed"
	ReasonInviteTimeout = "invite_timeout"
	ReasonUserHangup    = "user_hangup"
	ReasonMediaFailed   = "user_media_failed"
	ReasonUserBusy      = "user_busy"
	ReasonUnknownError  = "unknown_error"
)

// StreamPurposeUserMedia marks camera and microphone streams (MSC3077).
const StreamPurposeUserMedia = "m.usermedia"

// Limits on untrusted content. An SDP offer from a browser is a few KiB;
// anything far larger is hostile or broken.
const (
	MaxSDPBytes        = 64 << 10
	MaxIDBytes         = 255
	MaxCandidates      = 64
	MaxCandidateBytes  = 1024
	MaxReasonBytes     = 255
	MaxStreamsMetadata = 16
)

// Version is the "version" field. The spec says to treat anything other
// than the integer 0 or the string "1" as "1", so it decodes from a number
// or a string and always encodes as a string.
type Version string

// UnmarshalJSON accepts a JSON string or number.
func (v *Version) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*v = Version(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("version is neither string nor number: %w", err)
	}
	if i, err := strconv.ParseInt(n.String(), 10, 64); err == nil && i == 0 {
		*v = "0"
		return nil
	}
	*v = Version(n.String())
	return nil
}

// IsV0 reports whether the peer speaks the legacy version 0 protocol.
func (v Version) IsV0() bool { return v == "0" }

// SessionDescription is an SDP offer or answer as carried in call events.
type SessionDescription struct {
	Type string `json:"type"`
	SDP  string `json:"sdp"`
}

// StreamInfo describes one MediaStream (MSC3077 sdp_stream_metadata).
type StreamInfo struct {
	Purpose    string `json:"purpose"`
	AudioMuted bool   `json:"audio_muted"`
	VideoMuted bool   `json:"video_muted"`
}

// StreamMetadata maps MediaStream IDs (the first token of a=msid) to their
// description.
type StreamMetadata map[string]StreamInfo

// Capabilities advertised in invites and answers (MSC2747, MSC2746).
type Capabilities struct {
	Transferee bool `json:"m.call.transferee"`
	DTMF       bool `json:"m.call.dtmf"`
}

// Common holds the fields every call event carries.
type Common struct {
	CallID  CallID  `json:"call_id"`
	PartyID PartyID `json:"party_id,omitempty"`
	Version Version `json:"version"`
}

// Invite is the content of m.call.invite. Both metadata keys are written:
// matrix-js-sdk reads either, famedly's SDK only the unstable one
// (matrix-voip.md §1.3).
type Invite struct {
	Common
	Lifetime         int64              `json:"lifetime"`
	Invitee          UserID             `json:"invitee,omitempty"`
	Offer            SessionDescription `json:"offer"`
	Capabilities     *Capabilities      `json:"capabilities,omitempty"`
	Metadata         StreamMetadata     `json:"sdp_stream_metadata,omitempty"`
	MetadataUnstable StreamMetadata     `json:"org.matrix.msc3077.sdp_stream_metadata,omitempty"`
}

// Answer is the content of m.call.answer.
type Answer struct {
	Common
	Answer           SessionDescription `json:"answer"`
	Capabilities     *Capabilities      `json:"capabilities,omitempty"`
	Metadata         StreamMetadata     `json:"sdp_stream_metadata,omitempty"`
	MetadataUnstable StreamMetadata     `json:"org.matrix.msc3077.sdp_stream_metadata,omitempty"`
}

// StreamMetadata returns whichever metadata key the sender used, preferring
// the stable one.
func (a *Answer) StreamMetadata() StreamMetadata {
	if len(a.Metadata) > 0 {
		return a.Metadata
	}
	return a.MetadataUnstable
}

// Candidates is the content of m.call.candidates.
type Candidates struct {
	Common
	Candidates []Candidate `json:"candidates"`
}

// SelectAnswer is the content of m.call.select_answer.
type SelectAnswer struct {
	Common
	SelectedPartyID PartyID `json:"selected_party_id"`
}

// Hangup is the content of m.call.hangup. A missing reason means
// user_hangup.
type Hangup struct {
	Common
	Reason string `json:"reason,omitempty"`
}

// Reject is the content of m.call.reject (MSC2746).
type Reject struct {
	Common
}

// Negotiate is the content of m.call.negotiate. The engine decodes it so
// that renegotiation offers are recognised; answering them is handled by
// the live-call logic.
type Negotiate struct {
	Common
	Lifetime         int64              `json:"lifetime"`
	Description      SessionDescription `json:"description"`
	Metadata         StreamMetadata     `json:"sdp_stream_metadata,omitempty"`
	MetadataUnstable StreamMetadata     `json:"org.matrix.msc3077.sdp_stream_metadata,omitempty"`
}
