package daemon

import (
	"errors"
	"fmt"
	"io"

	"github.com/doorbell/intercom/provisioning"
)

// LoadConfig loads and validates the config; on any problem it prints them
// all and returns a nil config and the exit status, so the daemon never
// starts half-way.
func LoadConfig(path string, stderr io.Writer) (*provisioning.Config, int) {
	cfg, err := provisioning.Load(path)
	if err != nil {
		var ps provisioning.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				fmt.Fprintln(stderr, p)
			}
			fmt.Fprintf(stderr, "%s: %d problem(s)\n", path, len(ps))
		} else {
			fmt.Fprintln(stderr, "intercom:", err)
		}
		return nil, 1
	}
	return cfg, 0
}
