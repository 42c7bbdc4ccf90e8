package matrix

import (
	"context"
	"errors"
	"fmt"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// Login establishes the session. In order of preference it
//   - resumes the stored credentials, checked with /account/whoami;
//   - logs in with the password if there are none or the homeserver rejects
//     the stored token (M_UNKNOWN_TOKEN), reusing the stored device ID so
//     that the intercom stays one device;
//   - adopts the configured access token.
//
// The resulting credentials are stored (never the password). Transient
// failures (homeserver unreachable, 5xx, 429) are retried with backoff
// until ctx ends, so an intercom that boots before its network comes up
// waits instead of failing.
func (s *Session) Login(ctx context.Context) error {
	if err := s.login(ctx); err != nil {
		return err
	}
	if s.opts.Encryption == nil || s.crypt.Load() != nil {
		return nil
	}
	c, err := s.client()
	if err != nil {
		return err
	}
	e, err := openE2EE(ctx, s, c, *s.opts.Encryption)
	if err != nil {
		return err
	}
	s.crypt.Store(e)
	s.log.Info("end-to-end encryption ready", "device_id", c.DeviceID, "ed25519", e.status.Ed25519)
	return nil
}

func (s *Session) login(ctx context.Context) error {
	stored, ok, err := s.store.Credentials()
	if err != nil {
		return fmt.Errorf("read stored credentials: %w", err)
	}
	if ok && s.opts.UserID != "" && stored.UserID != string(s.opts.UserID) {
		s.log.Warn("stored credentials are for another user, ignoring them",
			"user_id", stored.UserID, "configured_user_id", s.opts.UserID)
		ok = false
		stored = Credentials{}
	}
	if ok && stored.AccessToken != "" {
		err := s.adoptToken(ctx, id.UserID(stored.UserID), id.DeviceID(stored.DeviceID), stored.AccessToken)
		if err == nil {
			s.log.Info("resumed matrix session", "user_id", s.UserID(), "device_id", s.DeviceID())
			return nil
		}
		if !isUnknownToken(err) {
			return fmt.Errorf("resume session of %s: %w", stored.UserID, err)
		}
		s.log.Warn("stored access token rejected", "user_id", stored.UserID, "device_id", stored.DeviceID, "err", err)
	}
	switch {
	case s.opts.Password != "":
		return s.loginPassword(ctx, id.DeviceID(stored.DeviceID))
	case s.opts.AccessToken != "" && s.opts.AccessToken != stored.AccessToken:
		if err := s.adoptToken(ctx, id.UserID(s.opts.UserID), "", s.opts.AccessToken); err != nil {
			return fmt.Errorf("check configured access token: %w", err)
		}
		s.log.Info("using configured access token", "user_id", s.UserID(), "device_id", s.DeviceID())
		return nil
	case ok:
		return ErrTokenRejected
	}
	return ErrNoCredentials
}

// relogin replaces a rejected token with a password login, if a password
// is available. The sync loop calls it on M_UNKNOWN_TOKEN.
func (s *Session) relogin(ctx context.Context) error {
	if s.opts.Password == "" {
		return ErrTokenRejected
	}
	return s.loginPassword(ctx, id.DeviceID(s.DeviceID()))
}

// adoptToken checks token with /account/whoami and, if the homeserver
// accepts it, installs and stores it.
func (s *Session) adoptToken(ctx context.Context, userID id.UserID, deviceID id.DeviceID, token string) error {
	c := s.newClient(userID, deviceID, token)
	var who *mautrix.RespWhoami
	err := s.do(ctx, "whoami", loopPolicy, func(ctx context.Context) (err error) {
		who, err = c.Whoami(ctx)
		return err
	})
	if err != nil {
		return err
	}
	if who == nil || who.UserID == "" {
		return errors.New("whoami: empty user_id")
	}
	if userID != "" && who.UserID != userID {
		return fmt.Errorf("%w: token is for %s, expected %s", ErrWrongAccount, who.UserID, userID)
	}
	c.UserID = who.UserID
	if who.DeviceID != "" {
		c.DeviceID = who.DeviceID
	}
	return s.install(c)
}

func (s *Session) loginPassword(ctx context.Context, deviceID id.DeviceID) error {
	c := s.newClient("", "", "")
	req := &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypePassword,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: string(s.opts.UserID)},
		Password:                 s.opts.Password,
		DeviceID:                 deviceID,
		InitialDeviceDisplayName: s.opts.DeviceName,
	}
	var resp *mautrix.RespLogin
	err := s.do(ctx, "login", loopPolicy, func(ctx context.Context) (err error) {
		resp, err = c.Login(ctx, req)
		return err
	})
	if err != nil {
		return fmt.Errorf("log in as %s: %w", s.opts.UserID, err)
	}
	if resp == nil || resp.AccessToken == "" || resp.UserID == "" {
		return fmt.Errorf("log in as %s: response without user_id or access_token", s.opts.UserID)
	}
	c.UserID, c.DeviceID, c.AccessToken = resp.UserID, resp.DeviceID, resp.AccessToken
	if err := s.install(c); err != nil {
		return err
	}
	s.log.Info("logged in to matrix", "user_id", c.UserID, "device_id", c.DeviceID)
	return nil
}

// install makes c the session's client and stores its credentials.
func (s *Session) install(c *mautrix.Client) error {
	if e := s.crypt.Load(); e != nil && e.device != c.DeviceID {
		// The homeserver gave another device than the one asked for:
		// the crypto store's identity is not this device's.
		return fmt.Errorf("%w: device %s, crypto store of %s", ErrDeviceChanged, c.DeviceID, e.device)
	}
	s.cli.Store(c)
	err := s.store.SaveCredentials(Credentials{
		Homeserver:  s.opts.Homeserver,
		UserID:      string(c.UserID),
		DeviceID:    string(c.DeviceID),
		AccessToken: c.AccessToken,
	})
	if err != nil {
		return fmt.Errorf("save credentials: %w", err)
	}
	return nil
}
