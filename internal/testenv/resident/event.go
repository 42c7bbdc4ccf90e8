package resident

import (
	"math"
	"slices"
	"time"

	"github.com/doorbell/intercom/internal/testenv/nodeproc"
)

// Event names the page emits (page/resident.js). Every event carries "ts",
// the page's Date.now(); call events also carry "callId" and "roomId".
const (
	// First sync done, listening for calls: userId, deviceId, turnServers,
	// encryption (bool). With encryption also: crossSigned (this device is
	// signed by its user's self-signing key), masterKey (the user's master
	// cross-signing key, "" without one), ed25519 and curve25519 (the
	// device's identity keys) and cryptoTimings {initMs (initRustCrypto),
	// crossSignMs, keysUploadedMs (until /keys/query lists the device)}.
	EventReady = "ready"

	EventIncoming   = "incoming"    // an invite rings: callId, roomId, sender, video, inviteTs (origin_server_ts), syncedTs
	EventAnswered   = "answered"    // answer() was called (before the SDK answers): callId, roomId
	EventPlacing    = "placing"     // placeCall started a call: callId, roomId
	EventState      = "state"       // every js-sdk CallState change: callId, roomId, state, oldState
	EventConnected  = "connected"   // the call reached CallState.Connected: callId, roomId
	EventFirstFrame = "first_frame" // first remote video frame decoded: callId, roomId, width, height, via, receiveTs (its last packet's arrival, Unix ms; 0 if unknown)
	EventStats      = "stats"       // every ~250 ms during a call: callId, roomId and the Stats fields
	EventHangup     = "hangup"      // the call ended: callId, roomId, reason, party ("local" or "remote")
	EventLocalMedia = "local_media" // the camera and microphone are open for a call: callId, roomId, audio, video, width, height
	EventJoined     = "joined"      // autojoin joined a room: roomId
	EventError      = "error"       // message, and callId/roomId/code when about a call
	EventNegotiate  = "negotiate"   // an m.call.negotiate from someone else: callId, roomId, sender, partyId, type ("offer"/"answer"), ufrag, directions, serverTs
	EventHold       = "hold"        // js-sdk's hold state changed: callId, roomId, side ("local": we are held, "remote": we hold them), onHold
	EventICE        = "ice"         // the ICE connection state changed: callId, roomId, state, localUfrag, remoteUfrag
	EventPCState    = "pc_state"    // the peer connection state (ICE and DTLS) changed: callId, roomId, state
	// An m.call.answer PUT left the page (the client's fetch was called):
	// callId. Unencrypted rooms only.
	EventAnswerSent = "answer_sent"
	// One per remote video frame presented (classic and MatrixRTC calls):
	// the intercom test pattern's glass code read from it (see Glass).
	// Kept out of the event log: Resident.Glass returns them.
	EventGlass = "glass"
	// One per tone-burst onset heard in a remote audio track (with
	// Options.Bursts; classic and MatrixRTC calls). Kept out of the event
	// log: Resident.Bursts returns them.
	EventBurst = "burst"

	// Messages and encryption (page/e2ee.js, page/media.js).

	// An m.room.message from someone else, in cleartext (after decryption
	// when it was encrypted), once per event: roomId, eventId, sender,
	// serverTs, msgtype, body, url (a plain attachment), file (an encrypted
	// attachment's EncryptedFile: url, key, iv, hashes, v; else null),
	// mimetype, size, width, height (info.w, info.h), encrypted, and for an
	// encrypted one the shield Element shows beside it: shieldColour
	// ("NONE", "GREY", "RED") and shieldReason (e.g. "UNSIGNED_DEVICE",
	// "UNVERIFIED_IDENTITY"; "" with none).
	EventMessage = "message"
	// An m.reaction (m.annotation) from someone else, in cleartext: roomId,
	// eventId, sender, serverTs, relatesTo (the annotated event), key,
	// encrypted.
	EventReaction = "reaction"
	// A room event could not be decrypted: roomId, eventId, sender,
	// serverTs, reason (matrix-js-sdk's DecryptionFailureCode, e.g.
	// "MEGOLM_UNKNOWN_INBOUND_SESSION_ID", or "RESIDENT_ENCRYPTION_DISABLED"
	// for an encrypted event reaching a resident without Encryption) and
	// message. js-sdk retries when a missing key arrives, so a "message"
	// for the same event may follow.
	EventUndecryptable = "undecryptable"

	// MatrixRTC (page/rtc.js). Events seen in sync carry "live": false when
	// they came with the first sync.

	// An org.matrix.msc4075.rtc.notification from someone else: roomId,
	// eventId, sender, notificationType ("ring"/"notification"), lifetime,
	// senderTs, serverTs, mentionsMe, mentions ({room, userIds}: its
	// m.mentions), relatesTo ({rel_type, event_id}),
	// callIntent, slotId, and sdkValid/sdkReason: whether matrix-js-sdk's own
	// parseCallNotificationContent accepts it (it wants an open
	// org.matrix.msc4143.rtc.slot state event since 43.x).
	EventRTCRing = "rtcRing"
	// An org.matrix.msc3401.call.member state event, anyone's: roomId,
	// eventId, stateKey, sender, self, content ({} when left), serverTs.
	EventRTCMembership = "rtcMembership"
	// The memberships matrix-js-sdk's MatrixRTCSession counts changed:
	// roomId, memberships [{sender, deviceId, memberId, eventId, callIntent,
	// serviceUrl, expiresInMs}].
	EventRTCSession = "rtcSession"
	// An org.matrix.msc4310.rtc.decline from someone else: roomId, eventId,
	// sender, relatesTo, serverTs.
	EventRTCDeclined = "rtcDeclined"
	// RTCJoin finished: roomId, identity (LiveKit), livekitRoom, livekitUrl,
	// serviceUrl, membershipEventId, stateKey, participants, timings (ms
	// after the command: membership, token, connected, published).
	EventRTCJoined = "rtcJoined"
	// A remote LiveKit track was subscribed: roomId, kind, source,
	// participant, trackSid, ms (after the rtcJoin command).
	EventRTCTrack = "rtcTrack"
	// The first remote video frame was decoded: roomId, participant, width,
	// height, via, ms (after the rtcJoin command).
	EventRTCFirstFrame = "rtcFirstFrame"
	// Every ~250 ms while in a LiveKit room: see RTCStats.
	EventRTCStats = "rtcStats"
	// A remote LiveKit participant came or went: roomId, identity, joined.
	EventRTCParticipant = "rtcParticipant"
	// The LiveKit room disconnected by itself: roomId, reason.
	EventRTCDisconnected = "rtcDisconnected"
	// RTCLeave finished: roomId.
	EventRTCLeft = "rtcLeft"
)

// Event is one event from the page, or a command's reply (Do): its Str,
// Bool, Num, CallID and Decode read its fields.
type Event = nodeproc.Event

// Stats is what the resident receives in a call, from the W3C webrtc-stats
// of its peer connection (inbound-rtp, codec, selected candidate pair).
type Stats struct {
	TS                   time.Time `json:"-"`
	CallID               string    `json:"callId"`
	FramesDecoded        int       `json:"framesDecoded"`
	FrameWidth           int       `json:"frameWidth"`
	FrameHeight          int       `json:"frameHeight"`
	FramesPerSecond      float64   `json:"framesPerSecond"`
	VideoCodec           string    `json:"videoCodec"` // mimeType[;fmtp], e.g. "video/VP8"
	VideoPacketsReceived int       `json:"videoPacketsReceived"`
	// Cumulative receive-side timings of the video (webrtc-stats
	// inbound-rtp, seconds): differences over a call give the mean jitter
	// buffer delay per emitted frame, decode time and first packet →
	// decoded per frame.
	JitterBufferDelay        float64 `json:"jitterBufferDelay"`
	JitterBufferEmittedCount int     `json:"jitterBufferEmittedCount"`
	TotalDecodeTime          float64 `json:"totalDecodeTime"`
	TotalProcessingDelay     float64 `json:"totalProcessingDelay"`
	AudioCodec               string  `json:"audioCodec"` // e.g. "audio/opus"
	TotalAudioEnergy         float64 `json:"totalAudioEnergy"`
	AudioPacketsReceived     int     `json:"audioPacketsReceived"`
	// The audio jitter buffer's cumulative delay (s) over the samples it
	// emitted (webrtc-stats inbound-rtp).
	AudioJitterBufferDelay        float64 `json:"audioJitterBufferDelay"`
	AudioJitterBufferEmittedCount int     `json:"audioJitterBufferEmittedCount"`
	// What a bad network costs (webrtc-stats inbound-rtp, cumulative):
	// the video's freezes as Chromium counts them (a frame later than
	// max(3 × the mean frame interval, that + 150 ms); seconds), the
	// NACK, PLI and FIR this side sent, packets and bytes; the audio's
	// samples NetEq concealed out of all it played, and packets lost.
	FreezeCount          int     `json:"freezeCount"`
	TotalFreezesDuration float64 `json:"totalFreezesDuration"`
	NackCount            int     `json:"nackCount"`
	PliCount             int     `json:"pliCount"`
	FirCount             int     `json:"firCount"`
	VideoPacketsLost     int     `json:"videoPacketsLost"`
	VideoBytesReceived   int64   `json:"videoBytesReceived"`
	// Keyframes decoded, and frames received but never decoded (dropped
	// before or by the decoder, e.g. while it waits for a keyframe).
	KeyFramesDecoded     int    `json:"keyFramesDecoded"`
	FramesDropped        int    `json:"framesDropped"`
	ConcealedSamples     int64  `json:"concealedSamples"`
	TotalSamplesReceived int64  `json:"totalSamplesReceived"`
	AudioPacketsLost     int    `json:"audioPacketsLost"`
	LocalAddress         string `json:"localAddress"`  // selected pair, "addr:port/proto/type"
	RemoteAddress        string `json:"remoteAddress"` // selected pair, "addr:port/proto/type"
	LocalUfrag           string `json:"localUfrag"`    // selected pair's local candidate's ICE ufrag
	RemoteUfrag          string `json:"remoteUfrag"`   // selected pair's remote candidate's ICE ufrag
	ConnectionState      string `json:"connectionState"`
	ICEConnectionState   string `json:"iceConnectionState"`
}

// RTCStats is what the resident receives and sends in a MatrixRTC call,
// from the W3C webrtc-stats of its LiveKit tracks' receivers and senders.
// The video fields are those of the remote video with the most decoded
// frames; audio energy and packets are summed over every remote audio track.
type RTCStats struct {
	TS                   time.Time `json:"-"`
	RoomID               string    `json:"roomId"`
	ConnectionState      string    `json:"connectionState"` // livekit-client's Room state, e.g. "connected"
	Participants         int       `json:"participants"`    // remote LiveKit participants
	FramesDecoded        int       `json:"framesDecoded"`
	FrameWidth           int       `json:"frameWidth"`
	FrameHeight          int       `json:"frameHeight"`
	FramesPerSecond      float64   `json:"framesPerSecond"`
	VideoCodec           string    `json:"videoCodec"`
	VideoPacketsReceived int       `json:"videoPacketsReceived"`
	VideoParticipant     string    `json:"videoParticipant"` // whose video the fields above describe
	// Cumulative receive-side timings of that video (webrtc-stats
	// inbound-rtp, seconds): differences over a call give the mean jitter
	// buffer delay per emitted frame, decode time and first packet →
	// decoded per frame.
	JitterBufferDelay        float64 `json:"jitterBufferDelay"`
	JitterBufferEmittedCount int     `json:"jitterBufferEmittedCount"`
	TotalDecodeTime          float64 `json:"totalDecodeTime"`
	TotalProcessingDelay     float64 `json:"totalProcessingDelay"`
	AudioCodec               string  `json:"audioCodec"`
	TotalAudioEnergy         float64 `json:"totalAudioEnergy"`
	AudioPacketsReceived     int     `json:"audioPacketsReceived"`
	// Cumulative over the remote audio tracks (webrtc-stats inbound-rtp,
	// seconds and samples): NetEq's jitter buffer delay.
	AudioJitterBufferDelay        float64 `json:"audioJitterBufferDelay"`
	AudioJitterBufferEmittedCount int     `json:"audioJitterBufferEmittedCount"`
	AudioBytesSent                int     `json:"audioBytesSent"` // our published microphone
	AudioPacketsSent              int     `json:"audioPacketsSent"`
	VideoBytesSent                int     `json:"videoBytesSent"` // our published camera
	VideoFramesSent               int     `json:"videoFramesSent"`
	LocalAddress                  string  `json:"localAddress"`  // subscriber's selected pair, "addr:port/proto/type"
	RemoteAddress                 string  `json:"remoteAddress"` // the SFU's end of it
	Remote                        []struct {
		Identity             string  `json:"identity"`
		FramesDecoded        int     `json:"framesDecoded"`
		FrameWidth           int     `json:"frameWidth"`
		FrameHeight          int     `json:"frameHeight"`
		TotalAudioEnergy     float64 `json:"totalAudioEnergy"`
		AudioPacketsReceived int     `json:"audioPacketsReceived"`
	} `json:"remote"` // per remote participant
}

// Glass is one presented remote video frame and the glass code read from
// it (../nodeproc/page/glass.js, media/glasscode.go). Times are Unix
// milliseconds on the page's wall clock, which is the intercom's when
// both run on one machine, as in the tests.
type Glass struct {
	CallID      string `json:"callId"`      // classic calls
	RoomID      string `json:"roomId"`      // both
	Participant string `json:"participant"` // MatrixRTC: whose video
	// OK: the code read; otherwise Reason says why not ("contrast",
	// "ambiguous", "checksum", "size").
	OK     bool   `json:"ok"`
	Reason string `json:"reason"`
	// LatencyMs is DisplayMs − CaptureMs: capture → expected display
	// (requestVideoFrameCallback's expectedDisplayTime, or when the
	// callback ran, if later: see LateMs).
	LatencyMs float64 `json:"latencyMs"`
	CaptureMs float64 `json:"captureMs"`
	DisplayMs float64 `json:"displayMs"`
	// ReceiveMs is when the frame's last packet arrived (Chromium's
	// receiveTime for WebRTC video); 0 when the browser gave none.
	ReceiveMs float64 `json:"receiveMs"`
	Width     int     `json:"width"`
	Height    int     `json:"height"`
	// Dropped counts frames presented since the previous callback that
	// the page never saw (the callback fires at most once per display
	// refresh).
	Dropped int `json:"dropped"`
	// LateMs is how far past the frame's expected display time the
	// page's callback ran: by then the element may show a newer frame
	// than the one described, and the code read is that frame's. RTP is
	// the RTP timestamp of the frame described (-1: none), against which
	// a reader checks the code (GlassMatched).
	LateMs float64 `json:"lateMs"`
	RTP    int64   `json:"rtpTimestamp"`
}

// Burst is one onset of the door's tone bursts (media/burst.go) that the
// page heard in a remote audio track (../nodeproc/page/bursts.js). Times
// are Unix milliseconds on the page's wall clock, which is the
// intercom's when both run on one machine, as in the tests.
type Burst struct {
	CallID      string `json:"callId"`      // classic calls
	RoomID      string `json:"roomId"`      // both
	Participant string `json:"participant"` // MatrixRTC: whose audio
	// AtMs is the onset on the page's render clock: when WebAudio
	// rendered the onset's sample (the audio thread's Date.now() for its
	// frame, pinned to continuous rendering).
	AtMs float64 `json:"atMs"`
	// K names the burst (it started at StartMs = K·1000 + phase); 0 and
	// Refused set when it was not attributed.
	K         int64   `json:"k"`
	StartMs   float64 `json:"startMs"`
	LatencyMs float64 `json:"latencyMs"` // AtMs − StartMs
	Freq      float64 `json:"freq"`
	Refused   string  `json:"refused"`
	// OutMs is the onset on the output device's clock as the browser
	// estimates it (AudioContext.getOutputTimestamp): rendered plus the
	// output's latency. OutputLatency and BaseLatency are the
	// AudioContext's, in seconds.
	OutMs         float64 `json:"outMs"`
	OutputLatency float64 `json:"outputLatency"`
	BaseLatency   float64 `json:"baseLatency"`
}

// GlassMatched splits glass events of one stream (a call's video) into
// those whose code belongs to the frame the page's callback described and
// the others. The sender's RTP clock follows its capture clock (90 kHz),
// so capture time minus RTP time is the same for every frame; a frame
// whose code gives another offset than the median by more than tolerance
// was a newer picture than the one described (a late callback), or a
// keyframe re-sent with a new timestamp. Events without a code or an RTP
// timestamp are left out of both.
func GlassMatched(gs []Glass, tolerance float64) (matched, mismatched []Glass) {
	var first int64 = -1
	offsets := make([]float64, 0, len(gs))
	idx := make([]int, 0, len(gs))
	for i, g := range gs {
		if !g.OK || g.RTP < 0 {
			continue
		}
		if first < 0 {
			first = g.RTP
		}
		// RTP timestamps are 32 bits and wrap.
		rtpMs := float64(int32(uint32(g.RTP)-uint32(first))) / 90
		offsets = append(offsets, g.CaptureMs-rtpMs)
		idx = append(idx, i)
	}
	if len(offsets) == 0 {
		return nil, nil
	}
	sorted := slices.Clone(offsets)
	slices.Sort(sorted)
	median := sorted[len(sorted)/2]
	for k, off := range offsets {
		if math.Abs(off-median) <= tolerance {
			matched = append(matched, gs[idx[k]])
		} else {
			mismatched = append(mismatched, gs[idx[k]])
		}
	}
	return matched, mismatched
}
