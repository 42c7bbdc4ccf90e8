// Package householdpeer is a household device for tests: a Matrix client
// written from famedly's documented group-call behaviour
// (../shared/matrix-voip.md §4.4, §4.5, §6), with a pion peer connection.
// It publishes a com.famedly.call.member membership (state key = user ID,
// mesh focus, its own session), places the mesh call to members whose
// "user:device" sorts after its own and answers invites from the others,
// over com.famedly.call.member.* to-device events, answers the caller's
// renegotiation offers (ICE restarts) as dart-sdk does, and counts the
// video frames it receives and when they came. It deliberately shares no code with
// callengine/group or the intercom's matrix package, so that they check
// each other.
//
// With Options.Crypto it also has end-to-end encryption, as a famedly
// client in an encrypted room (crypto.go, mautrix's crypto): it uploads
// device keys, Olm-decrypts the to-device events it gets, decrypts the
// room's Megolm events (the ring), and sends its own call signalling
// Olm-encrypted when the room has m.room.encryption (dart-sdk's
// sendToDeviceEncrypted). It counts the call events it got encrypted and
// in the clear, so that a test can check the intercom encrypted them all.
package householdpeer

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media/samplebuilder"
)

// Options configure a device.
type Options struct {
	Homeserver  string // base URL
	UserID      string
	AccessToken string
	DeviceID    string
	Room        string // household room ID
	Logf        func(format string, args ...any)
	// Crypto gives the device end-to-end encryption, with its crypto
	// store (SQLite) in CryptoDir, or in a temporary directory that
	// Close removes if CryptoDir is empty. The device's keys are
	// uploaded before it joins the room. Without Crypto the device
	// sends and reads everything in the clear and ignores
	// m.room.encrypted.
	Crypto    bool
	CryptoDir string
	// ICEAddress, when set, is the one IPv4 address the device gathers
	// host candidates on (a veth address of the test's network
	// namespace, which a test can take down); empty means 127.0.0.1.
	ICEAddress string
	// OnVideo, when set, is asked once per received video track (mime:
	// webrtc.MimeTypeH264 or MimeTypeVP8) for a function that then gets
	// every complete frame from the first keyframe on (an Annex B access
	// unit or a VP8 frame) and when its last RTP packet came (not when the
	// sample builder released it, one frame later), on the track's
	// reading goroutine: the glass-to-glass benchmark decodes them. It
	// must not keep frame after it returns.
	OnVideo func(mime string) func(frame []byte, arrived time.Time)
	// OnAudio, when set, is asked once per received audio track for a
	// function that then gets every RTP packet and when it came, on the
	// track's reading goroutine (the mouth-to-ear benchmark decodes the
	// door's Opus). It must not keep the packet after it returns.
	OnAudio func() func(p *rtp.Packet, arrived time.Time)
	// Audio, when set, is sent to the door in every call (added to each
	// peer connection; one track may serve several), as a household
	// tablet sends its microphone. Without it the device only receives.
	Audio webrtc.TrackLocal
}

// Device is a running household device.
type Device struct {
	o       Options
	session string
	http    *http.Client
	olm     *olm // nil without Options.Crypto

	cancel    context.CancelFunc
	wg        sync.WaitGroup // the sync loop and the calls it places
	sendMu    sync.Mutex     // one send at a time, in seq order
	closeOnce sync.Once

	mu        sync.Mutex
	members   map[string]member // "user:device" → member
	calls     map[string]*call  // by call_id
	txn       atomic.Int64
	txnPrefix [4]byte   // random per Device
	joinedAt  time.Time // own membership published
	firstAt   time.Time // first complete video frame
	frames    atomic.Int64
	rings     atomic.Int64
	keyframes atomic.Int64
	// frameTimes holds when the last len(frameTimes) frames arrived, a
	// ring indexed by the frame count (guarded by mu).
	frameTimes [512]time.Time
	// renegotiations counts the negotiate offers (ICE restarts) the
	// device answered.
	renegotiations atomic.Int64

	// Call signalling exchanged with each user (guarded by mu).
	signalling map[string]*Counts
	// Rings that came Megolm-encrypted; encrypted events (to-device or
	// room) that did not decrypt.
	ringsEncrypted, undecryptable atomic.Int64
}

type member struct {
	user, device, session string
}

type call struct {
	id        string
	remote    member
	pc        *webrtc.PeerConnection
	seq       int64
	pending   []webrtc.ICECandidateInit
	remoteSet bool
}

// Start joins the room, publishes the membership and runs the device
// until ctx ends or Close.
func Start(ctx context.Context, o Options) (_ *Device, err error) {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	d := &Device{o: o, session: base64.StdEncoding.EncodeToString(b), http: &http.Client{},
		members: map[string]member{}, calls: map[string]*call{}, signalling: map[string]*Counts{}}
	_, _ = rand.Read(d.txnPrefix[:])
	if o.Crypto {
		// Keys first: the intercom may call the device as soon as its
		// membership is published.
		if d.olm, err = openOlm(ctx, o); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				d.olm.close()
			}
		}()
	}
	if err := d.do(ctx, http.MethodPost, "/_matrix/client/v3/join/"+url.PathEscape(o.Room), map[string]any{}, nil); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	var first struct {
		NextBatch string `json:"next_batch"`
	}
	if err := d.do(ctx, http.MethodGet, "/_matrix/client/v3/sync?timeout=0", nil, &first); err != nil {
		return nil, fmt.Errorf("first sync: %w", err)
	}
	// Current memberships from the room state.
	var state []json.RawMessage
	if err := d.do(ctx, http.MethodGet, "/_matrix/client/v3/rooms/"+url.PathEscape(o.Room)+"/state", nil, &state); err != nil {
		return nil, err
	}
	for _, raw := range state {
		d.stateEvent(ctx, raw)
	}
	if err := d.publish(ctx, true); err != nil {
		return nil, err
	}
	ctx, d.cancel = context.WithCancel(ctx)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.loop(ctx, first.NextBatch)
	}()
	return d, nil
}

// Frames is the number of complete video frames received.
func (d *Device) Frames() int64 { return d.frames.Load() }

// FirstFrameAfter returns when the first complete video frame after t
// arrived; false if none has yet, or if so many came since that it is no
// longer known (the last 512 are).
func (d *Device) FirstFrameAfter(t time.Time) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.frames.Load()
	size := int64(len(d.frameTimes))
	var first time.Time
	for i := n; i > 0 && i > n-size; i-- {
		at := d.frameTimes[i%size]
		if !at.After(t) {
			return first, !first.IsZero()
		}
		first = at
	}
	// Every frame known came after t: the first one is only known if
	// no frame was forgotten.
	return first, !first.IsZero() && n <= size
}

// Renegotiations counts the negotiate offers the device answered (the
// intercom's ICE restarts).
func (d *Device) Renegotiations() int64 { return d.renegotiations.Load() }

// Rings counts ring notifications seen.
func (d *Device) Rings() int64 { return d.rings.Load() }

// Keyframes counts received keyframes.
func (d *Device) Keyframes() int64 { return d.keyframes.Load() }

// Counts are call signalling events (to-device, com.famedly.call.member.*
// or m.call.*) a device exchanged, by how they travelled. Received events
// count whether or not the device then took them; sent ones once the
// homeserver accepted them.
type Counts struct {
	ReceivedEncrypted, ReceivedClear int64
	SentEncrypted, SentClear         int64
}

func (c Counts) String() string {
	return fmt.Sprintf("received %d encrypted, %d in the clear; sent %d encrypted, %d in the clear",
		c.ReceivedEncrypted, c.ReceivedClear, c.SentEncrypted, c.SentClear)
}

// Signalling returns the call events exchanged with user's devices; with
// user "", with everyone (household devices call each other too).
func (d *Device) Signalling(user string) Counts {
	d.mu.Lock()
	defer d.mu.Unlock()
	var sum Counts
	for u, c := range d.signalling {
		if user == "" || u == user {
			sum.ReceivedEncrypted += c.ReceivedEncrypted
			sum.ReceivedClear += c.ReceivedClear
			sum.SentEncrypted += c.SentEncrypted
			sum.SentClear += c.SentClear
		}
	}
	return sum
}

// count records one call event exchanged with user.
func (d *Device) count(user string, f func(*Counts)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.signalling[user]
	if c == nil {
		c = &Counts{}
		d.signalling[user] = c
	}
	f(c)
}

// EncryptedRings counts the ring notifications that came Megolm-encrypted
// (included in Rings).
func (d *Device) EncryptedRings() int64 { return d.ringsEncrypted.Load() }

// Undecryptable counts encrypted events that did not decrypt: malformed
// to-device ones and room events whose key never came. (To-device events
// mautrix fails to decrypt are only logged.)
func (d *Device) Undecryptable() int64 { return d.undecryptable.Load() }

// Connected is the number of calls whose peer connection is connected.
func (d *Device) Connected() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.calls {
		if c.pc.ConnectionState() == webrtc.PeerConnectionStateConnected {
			n++
		}
	}
	return n
}

// MembershipToFirstFrame is the time from publishing the membership to the
// first complete frame; 0 before one.
func (d *Device) MembershipToFirstFrame() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.firstAt.IsZero() {
		return 0
	}
	return d.firstAt.Sub(d.joinedAt)
}

// Leave clears the membership and hangs up, as dart-sdk's leave does.
func (d *Device) Leave(ctx context.Context) error {
	d.mu.Lock()
	calls := d.calls
	d.calls = map[string]*call{}
	d.mu.Unlock()
	for _, c := range calls {
		d.send(ctx, c, "hangup", map[string]any{"reason": "userHangup"})
		_ = c.pc.Close()
	}
	return d.publish(ctx, false)
}

func (d *Device) self() string { return d.o.UserID + ":" + d.o.DeviceID }

func (d *Device) publish(ctx context.Context, join bool) error {
	list := []any{}
	if join {
		list = append(list, map[string]any{
			"call_id": d.o.Room, "application": "m.call", "scope": "m.room",
			"foci_active": []any{map[string]any{"type": "mesh"}},
			"device_id":   d.o.DeviceID, "expires_ts": time.Now().Add(6 * time.Minute).UnixMilli(),
			"membershipID": d.session, "feeds": []any{map[string]any{"purpose": "m.usermedia"}},
		})
	}
	d.mu.Lock()
	d.joinedAt = time.Now()
	d.mu.Unlock()
	return d.do(ctx, http.MethodPut, "/_matrix/client/v3/rooms/"+url.PathEscape(d.o.Room)+"/state/com.famedly.call.member/"+url.PathEscape(d.o.UserID),
		map[string]any{"memberships": list}, nil)
}

func (d *Device) loop(ctx context.Context, since string) {
	for ctx.Err() == nil {
		var resp struct {
			NextBatch string `json:"next_batch"`
			ToDevice  struct {
				Events []json.RawMessage `json:"events"`
			} `json:"to_device"`
			DeviceLists json.RawMessage `json:"device_lists"`
			OTKCount    json.RawMessage `json:"device_one_time_keys_count"`
			Rooms       struct {
				Join map[string]struct {
					State    struct{ Events []json.RawMessage } `json:"state"`
					Timeline struct{ Events []json.RawMessage } `json:"timeline"`
				} `json:"join"`
			} `json:"rooms"`
		}
		if err := d.do(ctx, http.MethodGet, "/_matrix/client/v3/sync?timeout=5000&since="+url.QueryEscape(since), nil, &resp); err != nil {
			if ctx.Err() == nil {
				d.o.Logf("sync: %v", err)
				time.Sleep(200 * time.Millisecond)
			}
			continue
		}
		since = resp.NextBatch
		var events []toDeviceEvent
		if d.olm != nil {
			// Crypto before the room: room keys arrive Olm-encrypted,
			// and the ring in the timeline may need one.
			var failed int
			events, failed = d.olm.handleSync(ctx, resp.ToDevice.Events, resp.DeviceLists, resp.OTKCount)
			d.undecryptable.Add(int64(failed))
			types, gaveUp := d.olm.retryWaiting(ctx)
			d.undecryptable.Add(int64(gaveUp))
			for _, t := range types {
				d.roomEvent(t, true)
			}
		} else {
			for _, raw := range resp.ToDevice.Events {
				var e toDeviceEvent
				if json.Unmarshal(raw, &e) == nil && e.Type != "" {
					events = append(events, e)
				}
			}
		}
		// State next: an invite may come in the same response as the
		// membership of its sender.
		if j, ok := resp.Rooms.Join[d.o.Room]; ok {
			for _, raw := range append(j.State.Events, j.Timeline.Events...) {
				d.stateEvent(ctx, raw)
			}
		}
		for _, e := range events {
			d.toDevice(ctx, e)
		}
	}
}

// roomEvent counts a timeline event of the room by its (decrypted) type.
func (d *Device) roomEvent(eventType string, encrypted bool) {
	if eventType == "org.matrix.msc4075.rtc.notification" {
		d.rings.Add(1)
		if encrypted {
			d.ringsEncrypted.Add(1)
		}
	}
}

func (d *Device) stateEvent(ctx context.Context, raw json.RawMessage) {
	var e struct {
		Type     string          `json:"type"`
		Sender   string          `json:"sender"`
		StateKey *string         `json:"state_key"`
		Content  json.RawMessage `json:"content"`
	}
	if json.Unmarshal(raw, &e) != nil {
		return
	}
	if d.olm != nil {
		if e.StateKey != nil {
			d.olm.updateState(ctx, d.o.Room, raw)
		} else if e.Type == "m.room.encrypted" {
			t, ok, gaveUp := d.olm.decryptRoomEvent(ctx, d.o.Room, raw)
			if gaveUp {
				d.undecryptable.Add(1)
			}
			if ok {
				d.roomEvent(t, true)
			}
			return
		}
	}
	if e.StateKey == nil {
		d.roomEvent(e.Type, false)
		return
	}
	if e.Type != "com.famedly.call.member" || e.StateKey == nil || *e.StateKey != e.Sender || e.Sender == d.o.UserID {
		return
	}
	var c struct {
		Memberships []struct {
			CallID       string `json:"call_id"`
			DeviceID     string `json:"device_id"`
			ExpiresTS    int64  `json:"expires_ts"`
			MembershipID string `json:"membershipID"`
			Foci         []struct {
				Type string `json:"type"`
			} `json:"foci_active"`
		} `json:"memberships"`
	}
	if json.Unmarshal(e.Content, &c) != nil {
		return
	}
	d.mu.Lock()
	for k, m := range d.members {
		if m.user == e.Sender {
			delete(d.members, k)
		}
	}
	var fresh []member
	for _, m := range c.Memberships {
		if m.CallID != d.o.Room || len(m.Foci) == 0 || m.Foci[0].Type != "mesh" || m.ExpiresTS < time.Now().Add(-6*time.Minute).UnixMilli() {
			continue
		}
		mb := member{user: e.Sender, device: m.DeviceID, session: m.MembershipID}
		d.members[mb.user+":"+mb.device] = mb
		fresh = append(fresh, mb)
	}
	d.mu.Unlock()
	for _, mb := range fresh {
		// dart-sdk setupP2PCallWithNewMember: the lower "user:device" calls.
		if d.self() < mb.user+":"+mb.device && !d.hasCallWith(mb) {
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				d.placeCall(ctx, mb)
			}()
		}
	}
}

func (d *Device) hasCallWith(m member) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.calls {
		if c.remote == m {
			return true
		}
	}
	return false
}

func (d *Device) newPC(c *call) (*webrtc.PeerConnection, error) {
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	se := webrtc.SettingEngine{}
	if a := net.ParseIP(d.o.ICEAddress); a != nil {
		se.SetIPFilter(func(ip net.IP) bool { return ip.Equal(a) })
	} else {
		se.SetIncludeLoopbackCandidate(true)
		se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() && ip.To4() != nil })
	}
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	pc.OnTrack(func(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if t.Kind() != webrtc.RTPCodecTypeVideo {
			var sink func(*rtp.Packet, time.Time)
			if d.o.OnAudio != nil && t.Kind() == webrtc.RTPCodecTypeAudio {
				sink = d.o.OnAudio()
			}
			go func() {
				for {
					p, _, err := t.ReadRTP()
					if err != nil {
						return
					}
					if sink != nil {
						sink(p, time.Now())
					}
				}
			}()
			return
		}
		go d.readVideo(t)
	})
	return pc, nil
}

// readVideo assembles RTP into frames and counts them.
func (d *Device) readVideo(t *webrtc.TrackRemote) {
	var sink func([]byte, time.Time)
	if d.o.OnVideo != nil {
		sink = d.o.OnVideo(t.Codec().MimeType)
	}
	var sb *samplebuilder.SampleBuilder
	h264 := false
	switch t.Codec().MimeType {
	case webrtc.MimeTypeH264:
		sb, h264 = samplebuilder.New(128, &codecs.H264Packet{}, 90000), true
	default:
		sb = samplebuilder.New(128, &codecs.VP8Packet{}, 90000)
	}
	// When the last packet of each recent frame (by RTP timestamp) came:
	// the sample builder hands a frame over only once the next frame's
	// first packet is in, a frame interval later, so OnVideo gets this
	// time instead of the pop's.
	var lastPacket [16]struct {
		ts uint32
		at time.Time
	}
	next := 0 // lastPacket's slot for the latest timestamp
	for {
		p, _, err := t.ReadRTP()
		if err != nil {
			return
		}
		if sink != nil {
			if cur := &lastPacket[next%len(lastPacket)]; cur.at.IsZero() || cur.ts != p.Timestamp {
				next++
			}
			lp := &lastPacket[next%len(lastPacket)]
			lp.ts, lp.at = p.Timestamp, time.Now()
		}
		sb.Push(p)
		for s := sb.Pop(); s != nil; s = sb.Pop() {
			if len(s.Data) == 0 {
				continue
			}
			key := false
			if h264 {
				key = bytes.Contains(s.Data, []byte{0, 0, 1, 0x65}) || bytes.Contains(s.Data, []byte{0, 0, 1, 0x67})
			} else {
				key = s.Data[0]&1 == 0
			}
			if key {
				d.keyframes.Add(1)
			}
			// Count frames from the first keyframe on: what a decoder
			// could show.
			if d.keyframes.Load() == 0 {
				continue
			}
			now := time.Now()
			d.mu.Lock()
			n := d.frames.Add(1)
			if n == 1 {
				d.firstAt = now
			}
			d.frameTimes[n%int64(len(d.frameTimes))] = now
			d.mu.Unlock()
			if sink != nil {
				arrived := now
				for _, lp := range lastPacket {
					if lp.ts == s.PacketTimestamp && !lp.at.IsZero() {
						arrived = lp.at
					}
				}
				sink(s.Data, arrived)
			}
		}
	}
}

func (d *Device) placeCall(ctx context.Context, m member) {
	id := fmt.Sprintf("%d%s", time.Now().UnixMilli(), d.o.DeviceID)
	c := &call{id: id, remote: m}
	pc, err := d.newPC(c)
	if err != nil {
		d.o.Logf("peer connection: %v", err)
		return
	}
	c.pc = pc
	if d.o.Audio != nil {
		if _, err := pc.AddTrack(d.o.Audio); err != nil {
			d.o.Logf("audio track: %v", err)
		}
	} else {
		_, _ = pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly})
	}
	_, _ = pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly})
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return
	}
	done := webrtc.GatheringCompletePromise(pc)
	_ = pc.SetLocalDescription(offer)
	<-done
	d.mu.Lock()
	d.calls[id] = c
	d.mu.Unlock()
	d.send(ctx, c, "invite", map[string]any{
		"lifetime": 60000, "offer": map[string]any{"type": "offer", "sdp": pc.LocalDescription().SDP},
		"org.matrix.msc3077.sdp_stream_metadata": map[string]any{},
	})
}

// send sends one call event to the call's remote device: Olm-encrypted if
// the device has crypto and the room is encrypted, as dart-sdk does,
// else in the clear.
func (d *Device) send(ctx context.Context, c *call, name string, content map[string]any) {
	d.sendMu.Lock()
	defer d.sendMu.Unlock()
	d.mu.Lock()
	seq := c.seq
	c.seq++
	d.mu.Unlock()
	content["call_id"], content["party_id"], content["version"] = c.id, d.o.DeviceID, "1"
	content["room_id"], content["conf_id"] = d.o.Room, d.o.Room
	content["sender_session_id"], content["dest_session_id"], content["seq"] = d.session, c.remote.session, seq
	if name == "invite" {
		content["device_id"] = d.o.DeviceID // dart-sdk: on the invite only
	}
	eventType := "com.famedly.call.member." + name
	if d.olm != nil && d.olm.roomEncrypted(ctx, d.o.Room) {
		// dart-sdk skips a device whose keys it does not know; this
		// one says so in the log.
		if err := d.olm.sendToDevice(ctx, c.remote.user, c.remote.device, eventType, content); err != nil {
			d.o.Logf("send %s encrypted: %v", name, err)
			return
		}
		d.count(c.remote.user, func(n *Counts) { n.SentEncrypted++ })
		return
	}
	body := map[string]any{"messages": map[string]any{c.remote.user: map[string]any{c.remote.device: content}}}
	// Transaction IDs are scoped to the access token: a second Device on
	// the same token (a restarted app) must not reuse the first one's,
	// or the homeserver takes its sends for retries and drops them.
	path := fmt.Sprintf("/_matrix/client/v3/sendToDevice/%s/hp%x.%d", eventType, d.txnPrefix, d.txn.Add(1))
	if err := d.do(ctx, http.MethodPut, path, body, nil); err != nil {
		d.o.Logf("send %s: %v", name, err)
		return
	}
	d.count(c.remote.user, func(n *Counts) { n.SentClear++ })
}

// isCallEvent reports whether a to-device type is call signalling of
// either family (matrix-voip.md §4.5).
func isCallEvent(t string) bool {
	return strings.HasPrefix(t, "com.famedly.call.member.") || strings.HasPrefix(t, "m.call.")
}

func (d *Device) toDevice(ctx context.Context, ev toDeviceEvent) {
	if !isCallEvent(ev.Type) {
		return
	}
	d.count(ev.Sender, func(n *Counts) {
		if ev.encrypted {
			n.ReceivedEncrypted++
		} else {
			n.ReceivedClear++
		}
	})
	var e struct {
		Type    string
		Sender  string
		Content struct {
			CallID          string                     `json:"call_id"`
			RoomID          string                     `json:"room_id"`
			ConfID          string                     `json:"conf_id"`
			DeviceID        string                     `json:"device_id"`
			SenderSessionID string                     `json:"sender_session_id"`
			DestSessionID   string                     `json:"dest_session_id"`
			Offer           *webrtc.SessionDescription `json:"offer"`
			Answer          *webrtc.SessionDescription `json:"answer"`
			Description     *webrtc.SessionDescription `json:"description"`
			Candidates      []struct {
				Candidate     string  `json:"candidate"`
				SDPMid        *string `json:"sdpMid"`
				SDPMLineIndex *uint16 `json:"sdpMLineIndex"`
			} `json:"candidates"`
		}
	}
	e.Type, e.Sender = ev.Type, ev.Sender
	if json.Unmarshal(ev.Content, &e.Content) != nil {
		return
	}
	c := e.Content
	// dart-sdk voip.dart: room_id and conf_id required, dest_session_id
	// must be the current session.
	if c.RoomID != d.o.Room || c.ConfID == "" || c.DestSessionID != d.session {
		d.o.Logf("dropped %s: room %q conf %q dest %q", e.Type, c.RoomID, c.ConfID, c.DestSessionID)
		return
	}
	d.mu.Lock()
	cl := d.calls[c.CallID]
	d.mu.Unlock()
	switch e.Type {
	case "com.famedly.call.member.invite":
		d.mu.Lock()
		m, ok := d.members[e.Sender+":"+c.DeviceID]
		d.mu.Unlock()
		if !ok || m.session != c.SenderSessionID || c.Offer == nil {
			d.o.Logf("invite from a non-member or stale session %s %s", e.Sender, c.DeviceID)
			return
		}
		cl = &call{id: c.CallID, remote: m}
		pc, err := d.newPC(cl)
		if err != nil {
			return
		}
		cl.pc = pc
		d.mu.Lock()
		d.calls[c.CallID] = cl
		d.mu.Unlock()
		if err := pc.SetRemoteDescription(*c.Offer); err != nil {
			d.o.Logf("offer: %v", err)
			return
		}
		d.applyPending(cl)
		if d.o.Audio != nil {
			// After the offer: the offered audio transceiver takes the
			// track and becomes sendrecv.
			if _, err := pc.AddTrack(d.o.Audio); err != nil {
				d.o.Logf("audio track: %v", err)
			}
		}
		ans, err := pc.CreateAnswer(nil)
		if err != nil {
			return
		}
		done := webrtc.GatheringCompletePromise(pc)
		_ = pc.SetLocalDescription(ans)
		<-done
		d.send(ctx, cl, "answer", map[string]any{"answer": map[string]any{"type": "answer", "sdp": pc.LocalDescription().SDP}})
	case "com.famedly.call.member.answer":
		if cl == nil || c.Answer == nil {
			return
		}
		if err := cl.pc.SetRemoteDescription(*c.Answer); err != nil {
			d.o.Logf("answer: %v", err)
			return
		}
		d.applyPending(cl)
		d.send(ctx, cl, "select_answer", map[string]any{"selected_party_id": c.DeviceID})
	case "com.famedly.call.member.candidates":
		if cl == nil {
			return
		}
		for _, x := range c.Candidates {
			if x.Candidate == "" {
				continue
			}
			ci := webrtc.ICECandidateInit{Candidate: x.Candidate, SDPMid: x.SDPMid, SDPMLineIndex: x.SDPMLineIndex}
			d.mu.Lock()
			if cl.pc.RemoteDescription() == nil {
				cl.pending = append(cl.pending, ci)
				d.mu.Unlock()
				continue
			}
			d.mu.Unlock()
			_ = cl.pc.AddICECandidate(ci)
		}
	case "com.famedly.call.member.negotiate":
		// The caller's ICE restart (or any renegotiation): answered as
		// dart-sdk does, with a negotiate answer. This device never
		// restarts itself, so an answer here has no offer of its own.
		if cl == nil || c.Description == nil || c.Description.Type != webrtc.SDPTypeOffer {
			return
		}
		if err := cl.pc.SetRemoteDescription(*c.Description); err != nil {
			d.o.Logf("negotiate offer: %v", err)
			return
		}
		ans, err := cl.pc.CreateAnswer(nil)
		if err != nil {
			d.o.Logf("negotiate answer: %v", err)
			return
		}
		done := webrtc.GatheringCompletePromise(cl.pc)
		_ = cl.pc.SetLocalDescription(ans)
		<-done
		d.renegotiations.Add(1)
		d.send(ctx, cl, "negotiate", map[string]any{"lifetime": 10000,
			"description": map[string]any{"type": "answer", "sdp": cl.pc.LocalDescription().SDP}})
	case "com.famedly.call.member.hangup":
		if cl != nil {
			_ = cl.pc.Close()
			d.mu.Lock()
			delete(d.calls, c.CallID)
			d.mu.Unlock()
		}
	}
}

func (d *Device) applyPending(c *call) {
	d.mu.Lock()
	p := c.pending
	c.pending = nil
	d.mu.Unlock()
	for _, ci := range p {
		_ = c.pc.AddICECandidate(ci)
	}
}

// Close stops the device: its sync loop and the calls it was placing
// end, every peer connection is closed, and the crypto store too.
func (d *Device) Close() { d.closeOnce.Do(d.close) }

func (d *Device) close() {
	d.cancel()
	d.wg.Wait()
	d.mu.Lock()
	for _, c := range d.calls {
		_ = c.pc.Close()
	}
	d.mu.Unlock()
	if d.olm != nil {
		d.olm.close()
	}
}

func (d *Device) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.o.Homeserver+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+d.o.AccessToken)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}
