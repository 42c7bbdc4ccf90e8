package callengine

import "context"

// Candidate is one ICE candidate as carried in m.call.candidates. An empty
// Candidate string marks the end of candidates (Matrix spec, VoIP:
// m.call.candidates).
type Candidate struct {
	Candidate     string  `json:"candidate"`
	SDPMid        *string `json:"sdpMid,omitempty"`
	SDPMLineIndex *uint16 `json:"sdpMLineIndex,omitempty"`
}

// IsEnd reports whether c is the end-of-candidates marker.
func (c Candidate) IsEnd() bool { return c.Candidate == "" }

// PeerState is the coarse connection state of a Peer, derived from the
// WebRTC peer connection state.
type PeerState int

const (
	PeerNew PeerState = iota
	PeerConnecting
	PeerConnected
	PeerDisconnected // transient: may recover without action
	PeerFailed
	PeerClosed
)

func (s PeerState) String() string {
	switch s {
	case PeerNew:
		return "new"
	case PeerConnecting:
		return "connecting"
	case PeerConnected:
		return "connected"
	case PeerDisconnected:
		return "disconnected"
	case PeerFailed:
		return "failed"
	case PeerClosed:
		return "closed"
	}
	return "unknown"
}

// PeerEvent is what a Peer reports asynchronously. Exactly one of the fields
// is meaningful: a gathered Candidate (Candidate.IsEnd() when gathering is
// complete), or a State change.
type PeerEvent struct {
	Candidate *Candidate
	State     *PeerState
}

// Peer is one WebRTC peer connection carrying the door's media to one
// remote party. Implementations (media/webrtc) must not block in their
// callbacks: the sink passed to PeerFactory.NewPeer is non-blocking.
type Peer interface {
	// Offer returns the local offer SDP. It is prepared before the call
	// starts so that the invite can leave at once (pre-warm).
	Offer() string
	// SetAnswer applies the remote answer SDP: the first one of an
	// outbound call, and the answers to later local offers.
	SetAnswer(sdp string) error
	// AddCandidates applies trickled remote candidates.
	AddCandidates(cands []Candidate) error
	// StreamID is the MediaStream ID shared by the audio and video tracks
	// (the first token of a=msid), used as the sdp_stream_metadata key.
	StreamID() string
	// AnswerOffer applies a renegotiation offer from the far end (hold, ICE
	// restart) and returns the local answer.
	AnswerOffer(sdp string) (string, error)
	// RestartICE creates and applies a local offer with new ICE
	// credentials; its answer comes back through SetAnswer.
	RestartICE() (string, error)
	// Close tears the connection down; it is idempotent.
	Close() error
}

// PeerFactory creates peers. Events of a new peer are delivered to sink,
// which never blocks.
type PeerFactory interface {
	// NewPeer returns a peer whose local offer is ready (for rings).
	NewPeer(ctx context.Context, sink func(PeerEvent)) (Peer, error)
	// AcceptOffer returns a peer answering a resident's offer (live view)
	// and its answer SDP.
	AcceptOffer(ctx context.Context, offer string, sink func(PeerEvent)) (Peer, string, error)
}
