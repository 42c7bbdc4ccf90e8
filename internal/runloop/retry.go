package runloop

import (
	"context"
	"errors"
	"time"
)

// Retry calls op until it succeeds, returns a [Permanent] error, or ctx
// ends, waiting b.Next() between attempts. onErr, if not nil, hears of
// each failure that will be retried and of the wait before the retry, so
// the caller decides what is worth logging. b is reset on success, so a
// Backoff kept across calls starts afresh after each.
//
// It returns nil on success, op's error if it is permanent, and op's last
// error joined with ctx's cause if ctx ended (errors.Is finds both).
func Retry(ctx context.Context, b *Backoff, op func() error, onErr func(err error, wait time.Duration)) error {
	for {
		err := op()
		if err == nil {
			b.Reset()
			return nil
		}
		if IsPermanent(err) {
			return err
		}
		if cause := context.Cause(ctx); cause != nil {
			return errors.Join(err, cause)
		}
		wait := b.Next()
		if onErr != nil {
			onErr(err, wait)
		}
		if serr := Sleep(ctx, wait); serr != nil {
			return errors.Join(err, serr)
		}
	}
}

// RetryAll is Retry for a loop that must not give up, such as joining a
// room at start-up: every error is retried, even one marked [Permanent]
// for the request that failed (a room creation the session will not
// repeat by itself: an installer may still fix the room while the
// intercom runs). It returns nil on success, else ctx's error.
func RetryAll(ctx context.Context, b *Backoff, op func() error, onErr func(err error, wait time.Duration)) error {
	err := Retry(ctx, b, func() error {
		if err := op(); err != nil {
			return retried{err}
		}
		return nil
	}, onErr)
	if err != nil {
		return ctx.Err()
	}
	return nil
}

// retried hides a Permanent mark from Retry: it has the error's message
// but does not unwrap to it.
type retried struct{ error }

// Permanent marks err as not worth retrying (a 403, a malformed request):
// Retry returns it at once. The mark is transparent: the result has err's
// message and errors.Is and errors.As see through it. Permanent(nil) is
// nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err, or an error it wraps, was marked by
// [Permanent].
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }
