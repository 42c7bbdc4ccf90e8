package webrtc

import "errors"

var (
	// ErrClosed is returned by a Peer that has been closed.
	ErrClosed = errors.New("webrtc: peer closed")
	// ErrAnswered is returned when a second answer is applied.
	ErrAnswered = errors.New("webrtc: answer already applied")
	// ErrNoRelay is returned for a new peer when ICE is relay-only and
	// no TURN server is known (yet): it could gather no candidate.
	ErrNoRelay = errors.New("webrtc: relay-only ICE and no TURN server")
	// ErrBadOffer is returned for an offer that cannot be answered: it
	// does not parse, pion refuses it, or it asks for nothing the door
	// can send.
	ErrBadOffer = errors.New("webrtc: offer cannot be answered")
	// errICEInternals says pion's ICE agent no longer has the shape
	// setICECheckInterval expects (a pion upgrade); TestICECheckInterval
	// fails then.
	errICEInternals = errors.New("webrtc: pion ICE agent internals changed")
	// errUnknownSSRC: the pacer got a packet of a stream never added.
	errUnknownSSRC = errors.New("webrtc: pacer: unknown ssrc")
	// errPacerClosed: the pacer got a packet after its peer closed.
	errPacerClosed = errors.New("webrtc: pacer closed")
)
