package dendrite

import (
	"errors"
	"fmt"
)

var (
	// ErrStopped is returned by Restart after Stop: a stopped Server may
	// have lost its data directory and is never started again.
	ErrStopped = errors.New("dendrite: server stopped")

	// ErrExited is returned (wrapped) by Stop and Restart when the Dendrite
	// process had already exited by itself, i.e. it crashed during the test.
	ErrExited = errors.New("dendrite: process exited unexpectedly")

	// ErrUserInUse matches a registration refused because the user exists
	// (Matrix errcode M_USER_IN_USE).
	ErrUserInUse = errors.New("dendrite: user ID already taken")

	// ErrWeakPassword matches a registration refused for the password
	// (M_WEAK_PASSWORD); Dendrite wants at least 8 characters.
	ErrWeakPassword = errors.New("dendrite: password refused as weak")

	// ErrForbidden matches M_FORBIDDEN, e.g. a login with a wrong password.
	ErrForbidden = errors.New("dendrite: forbidden")
)

// MatrixError is an error response of the client-server API: "Matrix spec,
// Client-Server API, Standard error response". errors.Is maps the errcodes
// above to their sentinels.
type MatrixError struct {
	StatusCode int    // HTTP status
	ErrCode    string `json:"errcode"`
	Message    string `json:"error"`
}

func (e *MatrixError) Error() string {
	return fmt.Sprintf("dendrite: HTTP %d %s: %s", e.StatusCode, e.ErrCode, e.Message)
}

// Is reports whether target is the sentinel for e's errcode.
func (e *MatrixError) Is(target error) bool {
	switch target {
	case ErrUserInUse:
		return e.ErrCode == "M_USER_IN_USE"
	case ErrWeakPassword:
		return e.ErrCode == "M_WEAK_PASSWORD"
	case ErrForbidden:
		return e.ErrCode == "M_FORBIDDEN"
	}
	return false
}
