package matrix

import (
	"context"
	"errors"
	"fmt"

	"maunium.net/go/mautrix/id"
)

// CrossSigning is what EnsureCrossSigning found or did.
type CrossSigning struct {
	// MasterKey is the intercom user's identity (its cross-signing master
	// key), as residents' clients show it.
	MasterKey string
	// Created: a new identity was made now; RecoveryKey is its recovery
	// key (the key of the secret storage that holds the private
	// cross-signing keys), shown this once.
	Created     bool
	RecoveryKey string
	// Signed: this device was signed now by an identity that existed
	// (with the recovery key given).
	Signed bool
}

// ErrIdentityLocked is returned by EnsureCrossSigning when the account has
// a cross-signing identity, this device is not signed by it, and no
// recovery key was given to unlock it.
var ErrIdentityLocked = errors.New("matrix: the account has a cross-signing identity that does not sign this device, and no recovery key was given")

// EnsureCrossSigning makes the intercom's device cross-signed by its own
// identity, so that residents' clients show it as verified, not as an
// "unverified device" of the intercom's user:
//   - if the device is signed already, nothing changes;
//   - if the account has no identity yet, one is created (master,
//     self-signing and user-signing keys, uploaded with the account
//     password through user-interactive auth), its private keys are put in
//     the account's secret storage under a new recovery key, and the device
//     and the master key are signed;
//   - if an identity exists but does not sign this device (a new device
//     after the crypto store was lost), recoveryKey unlocks its private keys
//     from secret storage to sign the device; without it the result is
//     ErrIdentityLocked. The identity is never replaced silently: residents
//     would see the intercom's identity change.
//
// It needs encryption on, and the password for a new identity.
func (s *Session) EnsureCrossSigning(ctx context.Context, recoveryKey string) (CrossSigning, error) {
	e := s.crypt.Load()
	if e == nil {
		return CrossSigning{}, errors.New("matrix: cross-signing needs encryption (matrix.encryption)")
	}
	var out CrossSigning
	if _, err := e.mach.FetchKeys(ctx, []id.UserID{e.cli.UserID}, true); err != nil {
		return out, fmt.Errorf("fetch own keys: %w", err)
	}
	pub, err := e.mach.GetOwnCrossSigningPublicKeys(ctx)
	if err != nil {
		return out, fmt.Errorf("own cross-signing keys: %w", err)
	}
	if pub != nil {
		out.MasterKey = string(pub.MasterKey)
		if signed, err := e.ownDeviceSigned(ctx); err != nil {
			return out, err
		} else if signed {
			return out, nil
		}
		if recoveryKey == "" {
			return out, ErrIdentityLocked
		}
		if err := e.mach.VerifyWithRecoveryKey(ctx, recoveryKey); err != nil {
			return out, fmt.Errorf("sign this device with the recovery key: %w", err)
		}
		out.Signed = true
		e.setCrossSigned(true)
		return out, nil
	}
	if s.opts.Password == "" {
		return out, errors.New("matrix: creating a cross-signing identity needs the account password (matrix.password_file)")
	}
	key, keys, err := e.mach.GenerateAndUploadCrossSigningKeysWithPassword(ctx, s.opts.Password, "")
	if err != nil {
		return out, fmt.Errorf("create cross-signing identity: %w", err)
	}
	out.Created, out.RecoveryKey, out.MasterKey = true, key, string(keys.MasterKey.PublicKey())
	if err := e.mach.SignOwnDevice(ctx, e.mach.OwnIdentity()); err != nil {
		return out, fmt.Errorf("sign own device: %w", err)
	}
	if err := e.mach.SignOwnMasterKey(ctx); err != nil {
		return out, fmt.Errorf("sign own master key: %w", err)
	}
	e.setCrossSigned(true)
	return out, nil
}

// ownDeviceSigned reports whether the device is signed by the user's
// self-signing key, as far as the store knows (after FetchKeys).
func (e *e2ee) ownDeviceSigned(ctx context.Context) (bool, error) {
	pub, err := e.mach.GetOwnCrossSigningPublicKeys(ctx)
	if err != nil || pub == nil {
		return false, err
	}
	signed, err := e.store.IsKeySignedBy(ctx, e.cli.UserID, e.mach.OwnIdentity().SigningKey, e.cli.UserID, pub.SelfSigningKey)
	if err != nil {
		return false, fmt.Errorf("check own device signature: %w", err)
	}
	return signed, nil
}

func (e *e2ee) setCrossSigned(v bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.status.CrossSigned = v
}
