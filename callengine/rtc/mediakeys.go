package rtc

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/group"
)

// Media keys of encrypted rooms (matrix-voip.md §5.3, §9).
//
// In an encrypted room Element Call encrypts every media frame with
// LiveKit's frame encryption, under a key each participant makes for its
// own media and sends to every other member device of the call as an
// Olm-encrypted to-device event. The rules below follow matrix-js-sdk 43
// (lib/matrixrtc/RTCEncryptionManager.js, ToDeviceKeyTransport.js):
//   - a member's first key has index 0 and is used at once;
//   - a new joiner gets the current key when it is younger than
//     KeyGrace, otherwise the key is rotated (index+1 mod 256) and the new
//     one sent to everyone;
//   - a leaver always rotates the key;
//   - a rotated key is sent at once but used for the member's own media
//     only KeyUseDelay later, so every receiver has it first;
//   - a key received before its sender's membership waits for it.
//
// One deliberate difference: the intercom's first key is made when it
// rings, long before anyone answers, and js-sdk's rule would rotate it
// for the first joiner once it is older than KeyGrace, leaving the
// resident without a picture for KeyUseDelay and a keyframe. The intercom
// shares a key that nobody has received yet with the first joiners
// instead. Rotating on join protects what was sent before the joiner came
// from the joiner; before the first joiner nobody but the SFU received
// the door's media, and the first joiner is the resident it rang for.

// TypeEncryptionKeys is Element Call's to-device media key event
// (js-sdk EventType.CallEncryptionKeysPrefix).
const TypeEncryptionKeys = "io.element.call.encryption_keys"

// Key sizes accepted from others: Element Call makes 16 random bytes,
// famedly's SDK 32; LiveKit derives its AES key from either with HKDF.
const (
	MediaKeyBytes    = 16
	maxMediaKeyBytes = 64
	// MaxEncryptionKeysBytes bounds an encryption keys event's content;
	// a real one is about 300 bytes.
	MaxEncryptionKeysBytes = 4 << 10
)

// EncryptionKeys is the content of a TypeEncryptionKeys event as js-sdk's
// ToDeviceKeyTransport.sendKey writes it: one key, not a list.
type EncryptionKeys struct {
	Keys    KeyEntry          `json:"keys"`
	Member  KeyMember         `json:"member"`
	RoomID  callengine.RoomID `json:"room_id"`
	Session KeySession        `json:"session"`
	SentTS  int64             `json:"sent_ts"`
}

// KeyEntry is one media key: its index and the base64 of its bytes
// (js-sdk encodeBase64: standard alphabet, padded).
type KeyEntry struct {
	Index int    `json:"index"`
	Key   string `json:"key"`
}

// KeyMember names the sending membership.
type KeyMember struct {
	ID              string `json:"id"`
	ClaimedDeviceID string `json:"claimed_device_id"`
}

// KeySession names the call the key is for.
type KeySession struct {
	Application string `json:"application"`
	CallID      string `json:"call_id"`
	Scope       string `json:"scope"`
}

// NewEncryptionKeys is the content the intercom sends for its key in
// room's call.
func NewEncryptionKeys(self Device, room callengine.RoomID, index uint8, key []byte, now time.Time) EncryptionKeys {
	return EncryptionKeys{
		Keys:    KeyEntry{Index: int(index), Key: base64.StdEncoding.EncodeToString(key)},
		Member:  KeyMember{ID: self.Identity(), ClaimedDeviceID: self.DeviceID},
		RoomID:  room,
		Session: KeySession{Application: group.ApplicationCall, CallID: "", Scope: group.ScopeRoom},
		SentTS:  now.UnixMilli(),
	}
}

// MediaKey is a decoded, checked key of another member.
type MediaKey struct {
	Room  callengine.RoomID
	From  Device
	Index uint8
	Key   []byte
}

// DecodeEncryptionKeys reads a TypeEncryptionKeys event that arrived
// Olm-encrypted from sender's device. The device the content claims must
// be the one that encrypted it: the homeserver, or another device of the
// sender, must not plant a key in a third device's name (js-sdk trusts
// the claim; the intercom does not need to).
func DecodeEncryptionKeys(sender callengine.UserID, device string, content []byte) (MediaKey, error) {
	if len(content) > MaxEncryptionKeysBytes {
		return MediaKey{}, fmt.Errorf("%w: encryption keys event is %d bytes", ErrMalformed, len(content))
	}
	var c struct {
		Keys *struct {
			Index *float64 `json:"index"`
			Key   string   `json:"key"`
		} `json:"keys"`
		Member *struct {
			ClaimedDeviceID string `json:"claimed_device_id"`
		} `json:"member"`
		RoomID string `json:"room_id"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return MediaKey{}, fmt.Errorf("%w: encryption keys: %v", ErrMalformed, err)
	}
	switch {
	case c.RoomID == "":
		return MediaKey{}, fmt.Errorf("%w: encryption keys without room_id", ErrMalformed)
	case c.Keys == nil || c.Keys.Index == nil || c.Keys.Key == "":
		return MediaKey{}, fmt.Errorf("%w: encryption keys without keys.index and keys.key", ErrMalformed)
	case c.Member == nil || c.Member.ClaimedDeviceID == "":
		return MediaKey{}, fmt.Errorf("%w: encryption keys without member.claimed_device_id", ErrMalformed)
	case device == "" || c.Member.ClaimedDeviceID != device:
		return MediaKey{}, fmt.Errorf("%w: encryption keys claim device %q, encrypted by %q", ErrMalformed, c.Member.ClaimedDeviceID, device)
	}
	idx := *c.Keys.Index
	if idx != float64(int(idx)) || idx < 0 || idx > 255 {
		return MediaKey{}, fmt.Errorf("%w: key index %v is not 0–255", ErrMalformed, idx)
	}
	key, err := decodeKey(c.Keys.Key)
	if err != nil {
		return MediaKey{}, err
	}
	return MediaKey{Room: callengine.RoomID(c.RoomID), From: Device{User: sender, DeviceID: device}, Index: uint8(idx), Key: key}, nil
}

// decodeKey decodes a media key: js-sdk writes padded standard base64,
// other clients may leave the padding out.
func decodeKey(s string) ([]byte, error) {
	if len(s) > 2*maxMediaKeyBytes {
		return nil, fmt.Errorf("%w: media key of %d characters", ErrMalformed, len(s))
	}
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		if key, err = base64.RawStdEncoding.DecodeString(s); err != nil {
			return nil, fmt.Errorf("%w: media key is not base64", ErrMalformed)
		}
	}
	if len(key) < MediaKeyBytes || len(key) > maxMediaKeyBytes {
		return nil, fmt.Errorf("%w: media key of %d bytes", ErrMalformed, len(key))
	}
	return key, nil
}

// maxEarlyKeys bounds the keys kept per room for senders whose
// membership has not arrived yet.
const maxEarlyKeys = 16

// legKeys is one encrypted room's media keys as the machine tracks them.
type legKeys struct {
	index   uint8  // the current key's index: the one given to joiners
	key     []byte // the current key
	created time.Time
	// shared: the member identities the current key went to. everShared:
	// some key of this leg went to someone (see the package comment on
	// the first joiners).
	shared     map[string]bool
	everShared bool
	early      []MediaKey // keys that came before their sender's membership
}

func newLegKeys(key []byte, now time.Time) *legKeys {
	return &legKeys{key: key, created: now, shared: map[string]bool{}}
}

// newKey makes a media key with Config.NewKey, else crypto/rand.
func (m *Machine) newKey() []byte {
	if m.cfg.NewKey != nil {
		return m.cfg.NewKey()
	}
	return randomKey()
}

// distributeKeys follows a change of room's members with the key rules
// of the package comment: share with joiners, or rotate.
func (m *Machine) distributeKeys(now time.Time, room callengine.RoomID, l *leg) []Effect {
	k := l.keys
	if k == nil {
		return nil
	}
	var out []Effect
	// Keys that waited for a membership that is now here.
	kept := k.early[:0]
	for _, mk := range k.early {
		if _, ok := l.members[mk.From.Identity()]; ok {
			out = append(out, remoteKeys(room, l, mk)...)
		} else {
			kept = append(kept, mk)
		}
	}
	k.early = kept
	var joined, all []Device
	anyLeft := false
	for id := range k.shared {
		if _, ok := l.members[id]; !ok {
			anyLeft = true
		}
	}
	for _, id := range slices.Sorted(maps.Keys(l.members)) {
		all = append(all, l.members[id].Device)
		if !k.shared[id] {
			joined = append(joined, l.members[id].Device)
		}
	}
	rotate := anyLeft || (len(joined) > 0 && k.everShared && now.Sub(k.created) >= m.cfg.KeyGrace)
	switch {
	case rotate:
		k.index++ // mod 256, as js-sdk's nextKeyIndex
		k.key, k.created, k.shared = m.newKey(), now, map[string]bool{}
		out = append(out, StartTimer{ID: TimerID{Kind: TimerKeyUse, Room: room}, After: m.cfg.KeyUseDelay})
		joined = all
	case len(joined) == 0:
		return out
	}
	if len(joined) == 0 {
		return out // everyone left: the new key waits for the next joiner
	}
	for _, d := range joined {
		k.shared[d.Identity()] = true
	}
	if !k.everShared {
		// The grace counts from when the key first left the door.
		k.created, k.everShared = now, true
	}
	return append(out, ShareMediaKey{Room: room, Index: k.index, Key: k.key, To: joined})
}

// mediaKey takes a member's key: it applies at once when the sender is a
// member of that room's call, later when its membership arrives.
func (m *Machine) mediaKey(mk MediaKey) []Effect {
	l := m.legs[mk.Room]
	switch {
	case l == nil:
		return []Effect{Ignored{Room: mk.Room, Sender: mk.From.User, What: TypeEncryptionKeys, Reason: "not in a call there"}}
	case l.keys == nil:
		return []Effect{Ignored{Room: mk.Room, Sender: mk.From.User, What: TypeEncryptionKeys, Reason: "the room is not encrypted"}}
	case mk.From == m.cfg.Self:
		return nil
	}
	if _, ok := l.members[mk.From.Identity()]; ok {
		return remoteKeys(mk.Room, l, mk)
	}
	if len(l.keys.early) == maxEarlyKeys {
		l.keys.early = slices.Delete(l.keys.early, 0, 1)
	}
	l.keys.early = append(l.keys.early, mk)
	return nil
}

// remoteKeys gives a member's key to every LiveKit identity it may have
// at the SFU: "<user>:<device>", which Element Call pairs with a session
// membership, and the /get_token hash (identity.go), under which a client
// that took its token there appears.
func remoteKeys(room callengine.RoomID, l *leg, mk MediaKey) []Effect {
	id := mk.From.Identity()
	out := []Effect{RemoteMediaKey{Room: room, Identity: id, Index: mk.Index, Key: mk.Key}}
	for _, other := range l.identities[id] {
		if other != id {
			out = append(out, RemoteMediaKey{Room: room, Identity: other, Index: mk.Index, Key: mk.Key})
		}
	}
	return out
}
