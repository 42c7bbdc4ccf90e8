package daemon

import (
	"github.com/doorbell/intercom/matrix"
	"github.com/doorbell/intercom/provisioning"
)

// stateStore adapts the state directory to the Matrix adapter's Store,
// keeping the two packages free of each other.
type stateStore struct{ *provisioning.State }

func (s stateStore) Credentials() (matrix.Credentials, bool, error) {
	c, ok, err := s.State.Credentials()
	return matrix.Credentials(c), ok, err
}

func (s stateStore) SaveCredentials(c matrix.Credentials) error {
	return s.State.SaveCredentials(provisioning.Credentials(c))
}
