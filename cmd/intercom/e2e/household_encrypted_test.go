package e2e

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/householdpeer"
)

// encryptionStatus is matrix.encryption of /api/status.
type encryptionStatus struct {
	DeviceID      string `json:"device_id"`
	Undecryptable int    `json:"undecryptable"`
	LastFailure   *struct {
		Sender string `json:"sender"`
		Reason string `json:"reason"`
	} `json:"last_failure"`
}

func (e *e2e) encryptionStatus() *encryptionStatus {
	e.t.Helper()
	s, err := e.status()
	if err != nil {
		e.t.Fatal(err)
	}
	var m struct {
		Encryption *encryptionStatus `json:"encryption"`
	}
	if err := json.Unmarshal(s.Matrix, &m); err != nil {
		e.t.Fatal(err)
	}
	return m.Encryption
}

// TestHouseholdMeshEncrypted: the intercom with matrix.encryption on, and
// household devices with crypto (householdpeer.Options.Crypto, mautrix's
// Olm as a famedly client has it). In an encrypted household room every
// call event between them goes Olm-encrypted, both ways: alice's device
// ("@alice…" < "@intercom…") places its call, so the intercom must
// decrypt her invite and answer encrypted; the intercom places the call
// to zoe's, so its invite goes encrypted. Nothing the intercom sends
// reaches a device in the clear, the ring is Megolm-encrypted, both calls
// connect and carry video. (alice's device also calls zoe's, famedly's
// mesh: the counters checked are those between each device and the
// intercom.)
// In a household room without m.room.encryption the same devices and the
// same intercom signal in the clear, as dart-sdk does.
func TestHouseholdMeshEncrypted(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: needs Dendrite")
	}
	for _, tc := range []struct {
		name      string
		encrypted bool
	}{
		{"encrypted room", true},
		{"room in the clear", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
			defer cancel()
			started := time.Now()
			sys := startHouseholdWith(ctx, t, householdOptions{Encryption: true, EncryptedRoom: tc.encrypted},
				[]string{"alice", "zoe"}, []string{"carol"}, "")
			e := sys.e
			devs := map[string]*householdpeer.Device{"alice": sys.deviceWith("alice", true), "zoe": sys.deviceWith("zoe", true)}
			e.householdStatus(ctx, "both memberships read", func(s householdStatus) bool { return len(s.Matrix.Household.Members) == 2 })

			pressed := e.press()
			for _, n := range []string{"alice", "zoe"} {
				sys.waitFrames(n, devs[n], 10)
			}
			t.Logf("press → both devices' 10th frame %v", time.Since(pressed).Round(time.Millisecond))
			e.householdStatus(ctx, "two connected calls", func(s householdStatus) bool {
				n := 0
				for _, c := range s.Matrix.Household.Calls {
					if c.State == "connected" {
						n++
					}
				}
				return n == 2
			})
			// The ring travels in the room timeline, beside the calls.
			waitCond(ctx, t, "the ring seen by both devices", func() bool {
				return devs["alice"].Rings() > 0 && devs["zoe"].Rings() > 0
			})

			for n, d := range devs {
				// Only what went between the device and the intercom: the
				// devices call each other too (famedly's mesh).
				c := d.Signalling(sys.bot.UserID)
				t.Logf("%s ↔ intercom: %v; rings %d (%d encrypted); with everyone: %v", n, c, d.Rings(), d.EncryptedRings(), d.Signalling(""))
				if tc.encrypted {
					if c.ReceivedEncrypted == 0 || c.ReceivedClear != 0 {
						t.Errorf("%s received %d call events from the intercom in the clear (%d encrypted), want all encrypted", n, c.ReceivedClear, c.ReceivedEncrypted)
					}
					// The device's own events went encrypted, and the
					// intercom took them: the call connected.
					if c.SentEncrypted == 0 || c.SentClear != 0 {
						t.Errorf("%s sent the intercom %d call events encrypted, %d in the clear", n, c.SentEncrypted, c.SentClear)
					}
					if d.EncryptedRings() == 0 {
						t.Errorf("%s: the ring was not Megolm-encrypted", n)
					}
				} else {
					if c.ReceivedEncrypted != 0 || c.ReceivedClear == 0 || c.SentEncrypted != 0 || c.SentClear == 0 {
						t.Errorf("%s ↔ intercom in a room in the clear: %v", n, c)
					}
					if d.EncryptedRings() != 0 {
						t.Errorf("%s: %d rings encrypted in a room without encryption", n, d.EncryptedRings())
					}
				}
				if d.Undecryptable() != 0 {
					t.Errorf("%s: %d events did not decrypt", n, d.Undecryptable())
				}
			}
			if st := e.encryptionStatus(); st == nil {
				t.Error("no matrix.encryption in the status: encryption is off")
			} else if st.Undecryptable != 0 {
				t.Errorf("the intercom gave up on %d events, last %+v", st.Undecryptable, st.LastFailure)
			}

			for _, d := range devs {
				if err := d.Leave(ctx); err != nil {
					t.Fatal(err)
				}
			}
			e.householdStatus(ctx, "intercom left", func(s householdStatus) bool {
				return s.Matrix.Household.Phase == "idle" && !s.Matrix.Household.Joined
			})
			t.Logf("%s: %v in all", tc.name, time.Since(started).Round(time.Millisecond))
		})
	}
}
