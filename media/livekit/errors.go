package livekit

import (
	"errors"
	"strings"
)

// ErrNoStream is returned by Join when Config.Stream is nil.
var ErrNoStream = errors.New("livekit: no media stream")

// redactedError hides a secret (the join token, which the SDK quotes in
// its "invalid token" errors) from an error's text, so that logging the
// error does not hand out a credential; errors.Is and As still see err.
type redactedError struct {
	err    error
	secret string
}

func redact(err error, secret string) error {
	if err == nil || secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return &redactedError{err: err, secret: secret}
}

func (e *redactedError) Error() string {
	return strings.ReplaceAll(e.err.Error(), e.secret, "[token]")
}

func (e *redactedError) Unwrap() error { return e.err }
