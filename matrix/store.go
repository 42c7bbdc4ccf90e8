package matrix

// Credentials are what the intercom keeps between runs to resume its
// Matrix session. The password is never part of them.
type Credentials struct {
	Homeserver  string
	UserID      string
	DeviceID    string
	AccessToken string
}

// Store is the part of the state directory this package uses. The
// provisioning package implements it (cmd adapts its Credentials type);
// tests use an in-memory map. Methods may be called from several
// goroutines.
type Store interface {
	Credentials() (Credentials, bool, error)
	SaveCredentials(Credentials) error
	NextBatch() (string, error)
	SaveNextBatch(string) error
	FilterID() (string, error)
	SaveFilterID(string) error
	DirectRoom(user string) (room string, ok bool, err error)
	SaveDirectRoom(user, room string) error
}
