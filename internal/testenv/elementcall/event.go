package elementcall

import (
	"time"

	"github.com/doorbell/intercom/internal/testenv/nodeproc"
)

// Event names. Every event carries "ts", the emitting frame's Date.now()
// (one clock for the host page and Element Call's iframe).
const (
	// The driver serves the host page and Element Call: host, elementCall
	// (base URLs).
	EventServing = "serving"
	// Logged in and first sync done: userId, deviceId, encryption, cryptoMs.
	EventReady = "ready"
	// Autojoin joined a room: roomId.
	EventJoined = "joined"
	// A room member's membership changed in this client's view: roomId,
	// userId, membership ("invite", "join", "leave", …).
	EventRoomMember = "roomMember"
	// An org.matrix.msc4075.rtc.notification from someone else (MSC4075),
	// in cleartext: roomId, eventId, sender, notificationType, senderTs,
	// lifetime, serverTs (origin_server_ts), relatesTo, mentionsMe,
	// encrypted, live (false when it came with the first sync).
	EventRing = "ring"
	// An org.matrix.msc3401.call.member state event, anyone's: roomId,
	// eventId, stateKey, sender, self, deviceId, content ({} when left),
	// serverTs, live.
	EventMembership = "membership"
	// Join opened Element Call's iframe: roomId, intent, encrypted,
	// widgetId.
	EventWidgetOpened = "widgetOpened"
	// Element Call asked for capabilities (all are approved): requested.
	EventCapabilities = "capabilities"
	// The widget API is up (capabilities negotiated): roomId.
	EventWidgetReady = "widgetReady"
	// Element Call asked for an OpenID token (for its LiveKit token).
	EventOpenID = "openid"
	// Element Call said it joined the call (io.element.join): roomId.
	EventECJoin = "ecJoin"
	// Element Call said it left the call (im.vector.hangup from the
	// widget): roomId.
	EventECHangup = "ecHangup"
	// Element Call asked to be closed (io.element.close): roomId.
	EventECClose = "ecClose"
	// The iframe is gone: roomId, widgetId, reason.
	EventWidgetClosed = "widgetClosed"
	// Element Call sent to-device messages through the host: type,
	// encrypted, devices.
	EventToDeviceSent = "toDeviceSent"
	// First decoded remote video frame in a frame's peer connections
	// (framestats.js): origin, width, height, codec, and trackTs and
	// connectedTs (ms since the epoch) of the peer connection that decoded
	// it: see MediaReady.
	EventFirstFrame = "frameFirst"
	// Every ~250 ms while a frame has peer connections: see Stats.
	EventStats = "frameStats"
	// Element Call subscribed to a remote LiveKit track (from its console):
	// kind ("audio"/"video"), source, trackSid, participant (LiveKit
	// identity), encrypted (LiveKit frame encryption on that track).
	EventECSubscribed = "ecSubscribed"
	// Something failed: message (and roomId when about a room).
	EventError = "error"
)

// Event is one event from the host page or a frame, or a command's reply
// (Do): its Str, Bool, Num and Decode read its fields.
type Event = nodeproc.Event

// Stats is what a frame's peer connections receive and send (W3C
// webrtc-stats inbound-rtp and outbound-rtp), summed over its connections;
// the video fields are those of the remote video with most decoded frames.
type Stats struct {
	TS                   time.Time `json:"-"`
	Origin               string    `json:"origin"` // the frame's origin: Element Call's
	PeerConnections      int       `json:"peerConnections"`
	FramesDecoded        int       `json:"framesDecoded"`
	FrameWidth           int       `json:"frameWidth"`
	FrameHeight          int       `json:"frameHeight"`
	VideoCodec           string    `json:"videoCodec"`
	VideoPacketsReceived int       `json:"videoPacketsReceived"`
	TotalAudioEnergy     float64   `json:"totalAudioEnergy"`
	AudioPacketsReceived int       `json:"audioPacketsReceived"`
	AudioCodec           string    `json:"audioCodec"`
	AudioBytesSent       int       `json:"audioBytesSent"` // Element Call's microphone
	AudioPacketsSent     int       `json:"audioPacketsSent"`
	VideoFramesSent      int       `json:"videoFramesSent"` // Element Call's camera
}

// MediaReady returns when the peer connection behind a first-frame event
// had both its remote video track and a connected transport: from then on
// only the sender's key frame, the SFU's forwarding and the decoder stand
// between it and the frame. Zero if the event does not say.
func MediaReady(firstFrame Event) time.Time {
	track, conn := firstFrame.Num("trackTs"), firstFrame.Num("connectedTs")
	if track == 0 || conn == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(max(track, conn)))
}
