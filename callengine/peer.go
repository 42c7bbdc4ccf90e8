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
	// SetAnswer applies the remote answer SDP.
	SetAnswer(sdp string) error
	// AddCandidates applies trickled remote candidates.
	AddCandidates(cands []Candidate) error
	// StreamID is the MediaStream ID shared by the audio and video tracks
	// (the first token of a=msid), used as the sdp_stream_metadata key.
	StreamID() string
	// Close tears the connection down; it is idempotent.
	Close() error
}

// PeerFactory creates peers with a prepared local offer. Events of the new
// peer are delivered to sink, which never blocks.
type PeerFactory interface {
	NewPeer(ctx context.Context, sink func(PeerEvent)) (Peer, error)
}
