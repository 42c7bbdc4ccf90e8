package matrix

import (
	"testing"

	"github.com/doorbell/intercom/provisioning"
)

// stateStore adapts provisioning.State to Store, as cmd does: the two
// Credentials types have the same fields, so they convert.
type stateStore struct{ *provisioning.State }

func (s stateStore) Credentials() (Credentials, bool, error) {
	c, ok, err := s.State.Credentials()
	return Credentials(c), ok, err
}

func (s stateStore) SaveCredentials(c Credentials) error {
	return s.State.SaveCredentials(provisioning.Credentials(c))
}

var _ Store = stateStore{}

func openState(t *testing.T, dir string) Store {
	t.Helper()
	st, err := provisioning.OpenState(dir)
	if err != nil {
		t.Fatal(err)
	}
	return stateStore{st}
}
