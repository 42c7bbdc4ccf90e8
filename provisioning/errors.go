package provisioning

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrInvalidConfig is matched (with errors.Is) by every Problems value, so
	// callers can tell a bad configuration from an I/O failure without a type
	// assertion.
	ErrInvalidConfig = errors.New("provisioning: invalid configuration")

	// ErrCorruptState is wrapped by every error about a state file that
	// exists but cannot be decoded. The intercom should not silently start
	// over in that case: a lost access token means a new device and a new
	// login, which residents see.
	ErrCorruptState = errors.New("provisioning: corrupt state file")

	// ErrIncompleteCredentials is returned when credentials lacking a
	// homeserver, user ID, device ID or access token are saved.
	ErrIncompleteCredentials = errors.New("provisioning: incomplete credentials")
)

// Problem is one thing wrong with a configuration file, located by file and
// line so that an installer can go straight to it.
type Problem struct {
	File string
	Line int
	Key  string // dotted key path such as "ring.timeout"; empty for syntax errors
	Msg  string
}

// String formats the problem as FILE:LINE: key.path: problem, the form
// editors and compilers use, so that editors can jump to it.
func (p Problem) String() string {
	if p.Key == "" {
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
	}
	return fmt.Sprintf("%s:%d: %s: %s", p.File, p.Line, p.Key, p.Msg)
}

// Problems is every problem found in a configuration. It is an error so that
// Load and Parse can return it directly.
type Problems []Problem

// Error lists one problem per line.
func (ps Problems) Error() string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// Is reports whether target is ErrInvalidConfig.
func (ps Problems) Is(target error) bool { return target == ErrInvalidConfig }
