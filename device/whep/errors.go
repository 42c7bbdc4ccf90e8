package whep

import "errors"

var (
	// ErrBadOffer marks an offer the door cannot answer: the client's
	// fault, a 400. Peers wraps it into its own refusals.
	ErrBadOffer = errors.New("whep: bad offer")
)
