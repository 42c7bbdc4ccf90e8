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
	// ErrCryptoStore is returned by Login when the crypto store cannot be
	// used for the logged-in device: unreadable, of another device, or
	// not the one whose keys the homeserver has. The intercom then refuses
	// to start rather than take on a new identity silently.
	ErrCryptoStore = errors.New("matrix: crypto store")
	// ErrCryptoOff: something that must be end-to-end encrypted was asked
	// of a session with matrix.encryption off.
	ErrCryptoOff = errors.New("matrix: end-to-end encryption is off")
	// ErrDeviceChanged is returned when a new login got another device
	// than the one the crypto store belongs to.
	ErrDeviceChanged = errors.New("matrix: login changed the device of the crypto store")
	// ErrNoRTCTransport: every source of MatrixRTC transport discovery
	// answered (rtctransports.go), and none advertises a LiveKit
	// transport.
	ErrNoRTCTransport = errors.New("matrix: the homeserver advertises no MatrixRTC LiveKit transport")
	// ErrRTCUnreachable: discovery found nothing, and the homeserver
	// itself could not be asked (no answer, or a 5xx from a proxy in
	// front of it).
	ErrRTCUnreachable = errors.New("matrix: homeserver unreachable for MatrixRTC transport discovery")
)
