package callengine

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Decode parses and validates the content of a call event of the given
// type. Content is untrusted: anything that does not follow the schema, or
// exceeds the limits above, is refused with an error wrapping ErrMalformed;
// an event type the engine does not handle gives ErrUnknownType. It never
// panics (see FuzzDecode).
//
// The result is a pointer to one of Invite, Answer, Candidates,
// SelectAnswer, Hangup, Reject or Negotiate.
func Decode(eventType string, content []byte) (any, error) {
	if len(content) > MaxSDPBytes+16<<10 {
		return nil, fmt.Errorf("%w: %s content is %d bytes", ErrMalformed, eventType, len(content))
	}
	var (
		v      any
		common *Common
	)
	switch eventType {
	case TypeInvite:
		x := &Invite{}
		v, common = x, &x.Common
	case TypeAnswer:
		x := &Answer{}
		v, common = x, &x.Common
	case TypeCandidates:
		x := &Candidates{}
		v, common = x, &x.Common
	case TypeSelectAnswer:
		x := &SelectAnswer{}
		v, common = x, &x.Common
	case TypeHangup:
		x := &Hangup{}
		v, common = x, &x.Common
	case TypeReject:
		x := &Reject{}
		v, common = x, &x.Common
	case TypeNegotiate:
		x := &Negotiate{}
		v, common = x, &x.Common
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnknownType, eventType)
	}
	if err := json.Unmarshal(content, v); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, eventType, err)
	}
	if err := validateCommon(common); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, eventType, err)
	}
	if err := validate(v); err != nil {
		return nil, fmt.Errorf("%w: %s call %q: %v", ErrMalformed, eventType, common.CallID, err)
	}
	return v, nil
}

func validateCommon(c *Common) error {
	if c.CallID == "" {
		return fmt.Errorf("call_id is missing")
	}
	if len(c.CallID) > MaxIDBytes {
		return fmt.Errorf("call_id is %d bytes", len(c.CallID))
	}
	if len(c.PartyID) > MaxIDBytes {
		return fmt.Errorf("party_id is %d bytes", len(c.PartyID))
	}
	if len(c.Version) > 16 {
		return fmt.Errorf("version is %d bytes", len(c.Version))
	}
	return nil
}

func validate(v any) error {
	switch x := v.(type) {
	case *Invite:
		if err := validateSDP("offer", x.Offer, "offer"); err != nil {
			return err
		}
		if x.Lifetime < 0 {
			return fmt.Errorf("lifetime %d is negative", x.Lifetime)
		}
		return validateMetadata(x.Metadata, x.MetadataUnstable)
	case *Answer:
		if err := validateSDP("answer", x.Answer, "answer"); err != nil {
			return err
		}
		return validateMetadata(x.Metadata, x.MetadataUnstable)
	case *Negotiate:
		if x.Description.Type != "offer" && x.Description.Type != "answer" {
			return fmt.Errorf("description type %q is neither offer nor answer", x.Description.Type)
		}
		return validateSDP("description", x.Description, x.Description.Type)
	case *Candidates:
		if len(x.Candidates) > MaxCandidates {
			return fmt.Errorf("%d candidates, at most %d", len(x.Candidates), MaxCandidates)
		}
		for i, c := range x.Candidates {
			if len(c.Candidate) > MaxCandidateBytes {
				return fmt.Errorf("candidate %d is %d bytes", i, len(c.Candidate))
			}
			if c.SDPMid != nil && len(*c.SDPMid) > MaxIDBytes {
				return fmt.Errorf("candidate %d sdpMid is %d bytes", i, len(*c.SDPMid))
			}
			if strings.ContainsAny(c.Candidate, "\r\n") {
				return fmt.Errorf("candidate %d contains a line break", i)
			}
		}
	case *SelectAnswer:
		if x.SelectedPartyID == "" {
			return fmt.Errorf("selected_party_id is missing")
		}
		if len(x.SelectedPartyID) > MaxIDBytes {
			return fmt.Errorf("selected_party_id is %d bytes", len(x.SelectedPartyID))
		}
	case *Hangup:
		if len(x.Reason) > MaxReasonBytes {
			return fmt.Errorf("reason is %d bytes", len(x.Reason))
		}
	}
	return nil
}

// validateSDP checks the shape only; the WebRTC stack parses the SDP itself
// and reports its own errors.
func validateSDP(field string, d SessionDescription, wantType string) error {
	if d.Type != wantType {
		return fmt.Errorf("%s type is %q, want %q", field, d.Type, wantType)
	}
	if d.SDP == "" {
		return fmt.Errorf("%s sdp is empty", field)
	}
	if len(d.SDP) > MaxSDPBytes {
		return fmt.Errorf("%s sdp is %d bytes, at most %d", field, len(d.SDP), MaxSDPBytes)
	}
	if !strings.HasPrefix(d.SDP, "v=0") {
		return fmt.Errorf("%s sdp does not start with v=0", field)
	}
	return nil
}

func validateMetadata(ms ...StreamMetadata) error {
	for _, m := range ms {
		if len(m) > MaxStreamsMetadata {
			return fmt.Errorf("%d streams in metadata, at most %d", len(m), MaxStreamsMetadata)
		}
	}
	return nil
}
