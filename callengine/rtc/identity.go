package rtc

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"

	"github.com/doorbell/intercom/callengine/group"
)

// A member's device can sit at an SFU under one of two LiveKit
// identities, depending on how it got its token from lk-jwt-service
// (matrix-voip.md §5.2; lk-jwt-service helper.go LiveKitIdentityFor):
// "<user>:<device>" through /sfu/get, or a hash of user, device and
// member ID through /get_token. The member ID of a session membership
// (the shape the intercom reads) is its membershipID, or
// "<user>:<device>" without one (js-sdk CallMembership.memberId).
//
// Element Call 0.26.1 publishes on its own SFU through /sfu/get, so it
// is "<user>:<device>" there; on an SFU where it only subscribes it asks
// /get_token with a random member ID of its own (CallViewModel's
// ownMembershipIdentity) that no membership carries: nobody else can
// compute that identity, so its presence counts only where it
// publishes.

// Identities are the LiveKit identities under which d, whose membership
// names memberID ("" for none), may appear at an SFU: "<user>:<device>"
// first, then the /get_token hash.
func Identities(d Device, memberID string) []string {
	if memberID == "" {
		memberID = d.Identity()
	}
	return []string{d.Identity(), HashedIdentity(d, memberID)}
}

// HashedIdentity is the identity /get_token gives d for memberID:
// unpadded standard base64 of sha256 over the JSON array
// [user, device, memberID], as lk-jwt-service and js-sdk's
// computeRtcIdentityRaw compute it.
func HashedIdentity(d Device, memberID string) string {
	b, _ := json.Marshal([]string{string(d.User), d.DeviceID, memberID}) // strings always marshal
	sum := sha256.Sum256(b)
	return base64.RawStdEncoding.EncodeToString(sum[:])
}

// MemberID is the membershipID of a session membership event, "" when it
// has none (or is not an object). DecodeMember has bounded the content's
// size before the machine asks.
func MemberID(ev group.MemberEvent) string {
	var c struct {
		MembershipID string `json:"membershipID"`
	}
	if json.Unmarshal(ev.Content, &c) != nil {
		return ""
	}
	return c.MembershipID
}

// setIdentities records the identities of the member known as id (its
// "<user>:<device>"); nil forgets them.
func (l *leg) setIdentities(id string, ids []string) {
	if ids == nil {
		delete(l.identities, id)
		return
	}
	if l.identities == nil {
		l.identities = map[string][]string{}
	}
	l.identities[id] = ids
}

// memberPresent reports whether the member known as id is at the SFU
// under any of its identities.
func (l *leg) memberPresent(id string) bool {
	if l.present[id] {
		return true
	}
	for _, i := range l.identities[id] {
		if l.present[i] {
			return true
		}
	}
	return false
}
