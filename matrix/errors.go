package matrix

import "errors"

var (
	// ErrNotLoggedIn is returned by methods that need a session when Login
	// has not succeeded yet.
	ErrNotLoggedIn = errors.New("matrix: not logged in")
	// ErrNoCredentials is returned by Login when there are no stored
	// credentials and neither a password nor an access token was given.
	ErrNoCredentials = errors.New("matrix: no stored credentials, password or access token")
	// ErrTokenRejected is returned by Login when the homeserver rejects the
	// access token (M_UNKNOWN_TOKEN) and no password is available to log in
	// again.
	ErrTokenRejected = errors.New("matrix: access token rejected and no password to log in again")
	// ErrRunning is returned by Run while another Run is active.
	ErrRunning = errors.New("matrix: sync loop already running")
	// ErrWrongAccount is returned by Login when an access token belongs to
	// another user than the configured one.
	ErrWrongAccount = errors.New("matrix: access token belongs to another user")
)
