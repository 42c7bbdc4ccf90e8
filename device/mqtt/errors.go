package mqtt

import "errors"

var (
	// ErrBrokerURL is a broker that is not an mqtt:// or mqtts:// URL
	// of a host.
	ErrBrokerURL = errors.New("not an mqtt:// or mqtts:// URL of a host")
	// ErrNoCertificates is a CA file without a PEM certificate in it.
	ErrNoCertificates = errors.New("no PEM certificate in it")
)
