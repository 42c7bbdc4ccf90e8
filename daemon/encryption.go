package daemon

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/matrix"
	"github.com/doorbell/intercom/provisioning"
)

// encryptionOptions turns matrix.encryption into the session's options:
// the crypto store lives in the state directory, beside the credentials
// it belongs to (a backup of one without the other is refused at start).
func encryptionOptions(cfg *provisioning.Config) *matrix.EncryptionOptions {
	if !cfg.Matrix.Encryption {
		return nil
	}
	return &matrix.EncryptionOptions{Dir: cfg.StateDir, ShareWith: matrix.KeyRecipients(cfg.Matrix.ShareKeys)}
}

// prepareEncryption shares the room keys of the residents' rooms ahead of
// the first press. A failure is only logged: the first send shares them
// itself, a little slower.
func prepareEncryption(ctx context.Context, s *matrix.Session, rooms map[callengine.UserID]callengine.RoomID, log *slog.Logger) {
	start := time.Now()
	list := slices.Sorted(maps.Values(rooms))
	if err := s.PrepareEncryption(ctx, list...); err != nil {
		log.Warn("share room keys ahead of the first ring", "err", err)
		return
	}
	if s.CryptoStatus().Enabled {
		log.Info("room keys shared ahead", "rooms", len(list), "took", time.Since(start).Round(time.Millisecond))
	}
}

// encryptionStatus is matrix.encryption in /api/status.
type encryptionStatus struct {
	DeviceID      string       `json:"device_id"`
	Ed25519       string       `json:"ed25519"`
	CrossSigned   bool         `json:"cross_signed"`
	Undecryptable int          `json:"undecryptable"`
	Waiting       []keyProblem `json:"waiting_for_keys"`
	LastFailure   *keyProblem  `json:"last_failure,omitempty"`
}

// keyProblem is an event that did not decrypt (yet): which room and
// sender, so that an installer knows whose device to look at.
type keyProblem struct {
	Room      string    `json:"room"`
	Sender    string    `json:"sender"`
	EventID   string    `json:"event_id"`
	SessionID string    `json:"session_id"`
	Since     time.Time `json:"since"`
	Reason    string    `json:"reason"`
}

func newEncryptionStatus(st matrix.CryptoStatus) *encryptionStatus {
	if !st.Enabled {
		return nil
	}
	out := &encryptionStatus{DeviceID: st.DeviceID, Ed25519: st.Ed25519, CrossSigned: st.CrossSigned,
		Undecryptable: st.Undecryptable, Waiting: []keyProblem{}}
	for _, w := range st.Waiting {
		out.Waiting = append(out.Waiting, keyProblem(w))
	}
	if st.LastFailure != nil {
		f := keyProblem(*st.LastFailure)
		out.LastFailure = &f
	}
	return out
}
