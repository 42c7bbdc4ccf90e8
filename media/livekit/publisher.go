// Package livekit publishes the door's media.Stream to a LiveKit SFU room,
// the media path of MatrixRTC calls (MSC4143, MSC4195) that Element Call
// and Element X place, and plays the residents' voices on the speaker.
//
// The participant publishes the stream's own shared tracks, the same
// webrtc.TrackLocalStaticSample objects every 1:1 peer adds: nothing is
// encoded twice, and the SFU does the fan-out to however many residents
// watch. It subscribes to remote audio only: the door has no screen, and
// each resident's camera would cost download bandwidth for nothing.
//
// It is built on LiveKit's Go SDK (github.com/livekit/server-sdk-go/v2),
// which is itself pion. Keyframe requests reach the stream through an
// interceptor (see rtcpTap); the first subscriber of our video gets one at
// once (RequestKeyFrameNow), later ones through the SFU's PLI.
//
// Not done here:
//   - Bitrate: livekit-server v1.13.5 sends publishers no REMB (it reads
//     REMB from subscribers only) but transport-wide congestion control
//     feedback, for the sender to run its own estimator on; we run none,
//     so the encoder keeps the stream's target (REMB from the 1:1 peers
//     still moves it). A REMB, should an SFU send one, is honoured.
//
// End-to-end encryption (Config.Crypto, encrypted rooms): Element Call
// encrypts every frame with LiveKit's frame encryption under per
// participant keys sent over Matrix. The shared tracks carry plain frames
// for the 1:1 peers, so an encrypted participant publishes tracks of its
// own, fed by a tap on the stream (Stream.Tap): each frame the one
// encoder makes is encrypted once, and the SFU forwards those bytes to
// every subscriber. The residents' audio is decrypted before the decoder.
//   - The SDK's pion logs go to its package logger (lksdk.SetLogger).
package livekit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/doorbell/intercom/media"
	"github.com/go-logr/logr"
	"github.com/livekit/protocol/livekit"
	protologger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"
)

// Config configures Join.
type Config struct {
	// Stream is the door's camera and microphone; it must have Opus.
	Stream *media.Stream
	// Codec is the video codec to publish: default media.H264 when the
	// stream has it (LiveKit and browsers take constrained baseline), else
	// media.VP8.
	Codec media.Codec
	// Speaker plays the decoded audio of every resident, each through an
	// input of its own; may be nil.
	Speaker media.Speaker
	// Meter receives the residents' audio level and counters; Join makes
	// one when nil (see Publisher.ReceivedAudio).
	Meter *media.AudioMeter
	// ReconnectTimeout bounds how long a broken connection may stay
	// Reconnecting before the Publisher gives up with Disconnected
	// ("RECONNECT_TIMEOUT"). The SDK by itself retries for about a minute
	// (ten attempts, quadratic back-off), which for a door means a minute
	// of a call nobody sees. Default 15 s.
	ReconnectTimeout time.Duration
	// SubscribeOnly joins without publishing: the connection to another
	// member's SFU in a multi-SFU call (Element Call's default), where
	// the door only listens to the participants who publish there; its
	// own media stay on its own SFU, encoded and encrypted once.
	SubscribeOnly bool
	// Crypto, when set, encrypts every frame published and decrypts every
	// frame received (an encrypted room's call); nil publishes the shared
	// tracks as they are.
	Crypto FrameCrypto
	// Logger receives the Publisher's and the SDK room's log. The SDK logs
	// its peer connections (pion) through its package logger, which only
	// lksdk.SetLogger changes, once, for the whole process.
	Logger *slog.Logger
}

// FrameCrypto is LiveKit frame encryption for one call: Encrypt seals one
// encoded frame of the door's (an H.264 access unit, a VP8 frame, an Opus
// packet) under the door's current key, Decrypt opens one frame of the
// participant with that LiveKit identity. Both are called from media
// goroutines, concurrently; an error drops that frame.
type FrameCrypto interface {
	Encrypt(c media.Codec, frame []byte) ([]byte, error)
	Decrypt(c media.Codec, identity string, frame []byte) ([]byte, error)
}

// Participant is a remote participant present in the room.
type Participant struct {
	// Identity is the LiveKit identity; for MatrixRTC it is what the
	// focus's JWT service put in the token (Element Call:
	// "@user:server:DEVICEID").
	Identity string
	Joined   time.Time // when the Publisher learned of them
	// Audio: we are receiving their microphone.
	Audio bool
}

// Publisher is the door's participant in one LiveKit room.
type Publisher struct {
	stream *media.Stream
	codec  media.Codec
	meter  *media.AudioMeter
	sink   media.Speaker
	crypto FrameCrypto
	log    *slog.Logger

	reconnectTimeout time.Duration

	events chan Event
	queue  *eventQueue
	done   chan struct{} // closed by Close: the event dispatcher stops

	// videoSubscribed: someone subscribed to our video. LiveKit tells a
	// publisher that once per track (TrackSubscribed), not who or how
	// many, so it is not known per participant.
	videoSubscribed atomic.Bool

	mu        sync.Mutex
	room      *lksdk.Room
	connected bool // the join succeeded: leaving means telling the SFU
	present   map[string]*Participant
	giveUp    *time.Timer    // running while Reconnecting
	stopping  bool           // teardown began: no new goroutines, no events but Disconnected
	wg        sync.WaitGroup // audio readers
	releases  []func()

	teardownOnce sync.Once
	closeOnce    sync.Once
	bg           sync.WaitGroup // the dispatcher and a teardown after Disconnected
	stopCtx      func() bool    // under mu: unregisters the ctx watch
}

// Join connects to the SFU at url (ws:// or wss://, LiveKit's signalling)
// with a join token, publishes the camera (Config.Codec) and microphone
// from the stream, and subscribes to the other participants' audio. It
// returns once both tracks are published. ctx bounds the join and the
// Publisher's life: when it ends, the Publisher closes.
func Join(ctx context.Context, url, token string, cfg Config) (*Publisher, error) {
	if cfg.Stream == nil {
		return nil, ErrNoStream
	}
	if !cfg.Stream.Has(media.Opus) {
		return nil, fmt.Errorf("join livekit: opus: %w", media.ErrNoEncoder)
	}
	if cfg.Codec == "" {
		cfg.Codec = media.H264
		if !cfg.Stream.Has(media.H264) {
			cfg.Codec = media.VP8
		}
	}
	if !cfg.Codec.IsVideo() || !cfg.Stream.Has(cfg.Codec) {
		return nil, fmt.Errorf("join livekit: video %s: %w", cfg.Codec, media.ErrNoEncoder)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Meter == nil {
		cfg.Meter = media.NewAudioMeter()
	}
	if cfg.ReconnectTimeout <= 0 {
		cfg.ReconnectTimeout = 15 * time.Second
	}
	p := &Publisher{
		reconnectTimeout: cfg.ReconnectTimeout,
		stream:           cfg.Stream,
		codec:            cfg.Codec,
		meter:            cfg.Meter,
		sink:             cfg.Speaker,
		crypto:           cfg.Crypto,
		log:              cfg.Logger,
		events:           make(chan Event, 16),
		queue:            newEventQueue(),
		done:             make(chan struct{}),
		present:          map[string]*Participant{},
	}
	p.bg.Go(func() { p.queue.run(p.events, p.done) })

	tap := &rtcpTap{
		keyFrame: func(mime string) {
			if strings.EqualFold(mime, string(p.codec)) {
				p.stream.RequestKeyFrame(p.codec)
			}
		},
		bandwidth: func(mime string, bps int) {
			if strings.EqualFold(mime, string(p.codec)) {
				p.stream.ReportBandwidth(p.codec, p, bps)
			}
		},
	}
	room := lksdk.NewRoom(p.callbacks())
	p.mu.Lock()
	p.room = room
	p.mu.Unlock()
	err := room.JoinWithContextAndToken(ctx, url, token,
		// Subscriptions are chosen per track (audio only): see callbacks.
		lksdk.WithAutoSubscribe(false),
		lksdk.WithInterceptors([]interceptor.Factory{tap}),
		lksdk.WithIncludeDefaultInterceptors(true),
		lksdk.WithLogger(protologger.LogRLogger(logr.FromSlogHandler(p.log.Handler()))),
	)
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("join livekit room at %s: %w", url, redact(err, token))
	}
	p.mu.Lock()
	p.connected = true
	p.mu.Unlock()
	if !cfg.SubscribeOnly {
		if err := p.publish(room); err != nil {
			p.Close()
			return nil, err
		}
	}
	// Participants already in the room: the SDK reports them as part of
	// the join, not as arrivals.
	for _, rp := range room.GetRemoteParticipants() {
		p.joined(rp.Identity())
	}
	// Under mu: if ctx has already ended, Close runs at once on another
	// goroutine and reads stopCtx.
	p.mu.Lock()
	p.stopCtx = context.AfterFunc(ctx, func() { p.Close() })
	p.mu.Unlock()
	return p, nil
}

// publish adds the stream's shared tracks to the room and starts their
// encoders.
func (p *Publisher) publish(room *lksdk.Room) error {
	f := p.stream.Format()
	video, audio := p.stream.Track(p.codec), p.stream.Track(media.Opus)
	enc := livekit.Encryption_NONE
	if p.crypto != nil {
		var err error
		if video, err = p.encryptedTrack(p.codec); err != nil {
			return err
		}
		if audio, err = p.encryptedTrack(media.Opus); err != nil {
			return err
		}
		enc = livekit.Encryption_GCM
	}
	if _, err := room.LocalParticipant.PublishTrack(video, &lksdk.TrackPublicationOptions{
		Name: "camera", Source: livekit.TrackSource_CAMERA, VideoWidth: f.Width, VideoHeight: f.Height, Encryption: enc,
	}); err != nil {
		return fmt.Errorf("publish %s camera: %w", p.codec, err)
	}
	if _, err := room.LocalParticipant.PublishTrack(audio, &lksdk.TrackPublicationOptions{
		Name: "microphone", Source: livekit.TrackSource_MICROPHONE, Encryption: enc,
	}); err != nil {
		return fmt.Errorf("publish microphone: %w", err)
	}
	for _, c := range []media.Codec{p.codec, media.Opus} {
		release, err := p.stream.Acquire(c)
		if err != nil {
			return fmt.Errorf("start %s: %w", c, err)
		}
		p.mu.Lock()
		p.releases = append(p.releases, release)
		p.mu.Unlock()
	}
	p.log.Debug("livekit: published", "video", string(p.codec), "width", f.Width, "height", f.Height)
	return nil
}

// encryptedTrack is a track of codec c for this participant alone, fed
// with the stream's frames encrypted once each by p.crypto (the tap ends
// at teardown with the encoders' releases).
func (p *Publisher) encryptedTrack(c media.Codec) (*webrtc.TrackLocalStaticSample, error) {
	shared := p.stream.Track(c)
	t, err := webrtc.NewTrackLocalStaticSample(shared.Codec(), shared.ID(), shared.StreamID())
	if err != nil {
		return nil, fmt.Errorf("encrypted %s track: %w", c, err)
	}
	var logged atomic.Bool
	cancel, err := p.stream.Tap(c, func(smp pionmedia.Sample) {
		data, err := p.crypto.Encrypt(c, smp.Data)
		if err != nil {
			// Never send a frame in the clear: drop it.
			if !logged.Swap(true) {
				p.log.Warn("livekit: frame not encrypted, dropped", "codec", string(c), "err", err)
			}
			return
		}
		smp.Data = data
		_ = t.WriteSample(smp)
	})
	if err != nil {
		return nil, fmt.Errorf("encrypted %s track: %w", c, err)
	}
	p.mu.Lock()
	p.releases = append(p.releases, cancel)
	p.mu.Unlock()
	return t, nil
}

// callbacks translates the SDK's room callbacks into events, audio
// subscriptions and keyframe requests. They run on the SDK's goroutines
// and never block.
func (p *Publisher) callbacks() *lksdk.RoomCallback {
	cb := lksdk.NewRoomCallback()
	cb.OnParticipantConnected = func(rp *lksdk.RemoteParticipant) { p.joined(rp.Identity()) }
	cb.OnParticipantDisconnected = func(rp *lksdk.RemoteParticipant) { p.left(rp.Identity()) }
	cb.OnTrackPublished = func(pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		if pub.Kind() != lksdk.TrackKindAudio {
			return
		}
		if err := pub.SetSubscribed(true); err != nil {
			p.log.Warn("livekit: subscribe to audio", "identity", rp.Identity(), "err", err)
		}
	}
	cb.OnTrackSubscribed = func(t *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		if t.Kind() != webrtc.RTPCodecTypeAudio {
			// Not asked for; read it anyway so the SDK's interceptors
			// keep reporting, and drop it.
			p.goRun(func() { discard(t) })
			return
		}
		id := rp.Identity()
		p.setAudio(id, true)
		var levelExt uint8
		if r := pub.Receiver(); r != nil {
			levelExt = media.AudioLevelExtension(r.GetParameters())
		}
		p.goRun(func() {
			p.readAudio(t, id, levelExt)
			p.setAudio(id, false)
		})
	}
	cb.OnLocalTrackSubscribed = func(pub *lksdk.LocalTrackPublication, _ *lksdk.LocalParticipant) {
		if pub.Kind() != lksdk.TrackKindVideo {
			return
		}
		// The first subscriber of our video: its downtrack needs a
		// keyframe now, not after MinKeyFrameGap (the SFU sends a PLI as
		// well, which the gap would delay). Later subscribers are only
		// announced by the SFU's PLI.
		p.videoSubscribed.Store(true)
		p.stream.RequestKeyFrameNow(p.codec)
	}
	cb.OnReconnecting = p.reconnecting
	cb.OnReconnected = p.reconnected
	cb.OnDisconnected = func() {
		reason := "UNKNOWN_REASON"
		if room := p.roomOf(); room != nil {
			reason = room.DisconnectReason().String()
		}
		p.end(reason, false)
	}
	return cb
}

func (p *Publisher) roomOf() *lksdk.Room {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.room
}

// reconnecting reports the loss and arms the give-up timer.
func (p *Publisher) reconnecting() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return
	}
	p.emit(Event{Kind: Reconnecting})
	if p.giveUp == nil {
		// Leave when it fires: that stops the SDK's own retrying.
		p.giveUp = time.AfterFunc(p.reconnectTimeout, func() { p.end("RECONNECT_TIMEOUT", true) })
	}
}

func (p *Publisher) reconnected() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return
	}
	if p.giveUp != nil {
		p.giveUp.Stop()
		p.giveUp = nil
	}
	p.emit(Event{Kind: Reconnected})
}

// end handles the end of the connection that Close did not ask for: the
// SDK gave up or was told to leave (leave false), or reconnecting took too
// long (leave true: we tell the SDK to stop).
func (p *Publisher) end(reason string, leave bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		// Our own Close, or the SDK's reconnect loop reporting its end
		// after Close stopped it.
		return
	}
	// From here on no participant event and no new reader: Disconnected
	// is the last event.
	p.stopping = true
	p.log.Info("livekit: disconnected", "reason", reason)
	p.emit(Event{Kind: Disconnected, Reason: reason})
	// Not on this goroutine: the SDK closes the peer connections after
	// its callback returns, and teardown waits for the audio readers those
	// closes end. Started under mu, so Close (whose teardown takes mu)
	// cannot be waiting on bg yet.
	p.bg.Go(func() { p.teardown(leave) })
}

// joined records a participant and reports it if it is new.
func (p *Publisher) joined(id string) {
	p.mu.Lock()
	if _, ok := p.present[id]; ok || p.stopping {
		p.mu.Unlock()
		return
	}
	p.present[id] = &Participant{Identity: id, Joined: time.Now()}
	p.mu.Unlock()
	p.emit(Event{Kind: ParticipantJoined, Identity: id})
}

// left forgets a participant and reports it if it was present.
func (p *Publisher) left(id string) {
	p.mu.Lock()
	if _, ok := p.present[id]; !ok || p.stopping {
		p.mu.Unlock()
		return
	}
	delete(p.present, id)
	p.mu.Unlock()
	p.emit(Event{Kind: ParticipantLeft, Identity: id})
}

func (p *Publisher) setAudio(id string, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pt := p.present[id]; pt != nil {
		pt.Audio = on
	}
}

func (p *Publisher) emit(ev Event) {
	ev.At = time.Now()
	p.queue.push(ev)
}

// Events returns the room's changes in order: participants joining and
// leaving, connection loss and recovery, and Disconnected last when the
// SFU connection ended by itself. It is closed by Close. Events wait in an
// unbounded queue for the reader, so a slow reader loses none and never
// stalls the SDK.
func (p *Publisher) Events() <-chan Event { return p.events }

// Participants returns the remote participants present now, sorted by
// identity.
func (p *Publisher) Participants() []Participant {
	p.mu.Lock()
	out := make([]Participant, 0, len(p.present))
	for _, pt := range p.present {
		out = append(out, *pt)
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b Participant) int { return strings.Compare(a.Identity, b.Identity) })
	return out
}

// VideoSubscribed reports whether anyone has subscribed to our video since
// Join (see Publisher.videoSubscribed for why not per participant).
func (p *Publisher) VideoSubscribed() bool { return p.videoSubscribed.Load() }

// ReceivedAudio returns the meter's snapshot of the residents' audio.
func (p *Publisher) ReceivedAudio() media.ReceivedAudio { return p.meter.Snapshot() }

// Close leaves the room, waits for the Publisher's goroutines, releases its
// encoders and closes Events. It is idempotent and safe to call from any
// goroutine, also after Disconnected.
func (p *Publisher) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		stop := p.stopCtx
		p.mu.Unlock()
		if stop != nil {
			stop()
		}
		p.teardown(true)
		close(p.done)
		p.bg.Wait()
	})
	return nil
}

// teardown leaves the room (when we are the ones leaving), waits for the
// audio readers and releases the encoders. It runs once, whether Close or
// the SFU ended the connection.
func (p *Publisher) teardown(leave bool) {
	p.teardownOnce.Do(func() {
		p.mu.Lock()
		p.stopping = true
		if p.giveUp != nil {
			p.giveUp.Stop()
			p.giveUp = nil
		}
		room, connected := p.room, p.connected
		releases := p.releases
		p.releases = nil
		p.mu.Unlock()
		if leave && connected {
			room.Disconnect() // tells the SFU at once, rather than on timeout
		}
		if room != nil {
			// The SDK closes its peer connections in the background, and
			// only after a reconnect attempt in progress gave up (tens of
			// seconds). Closing them here ends the audio readers now and
			// unbinds the shared tracks before their encoders are
			// released.
			lp := room.LocalParticipant
			for _, pc := range []*webrtc.PeerConnection{lp.GetSubscriberPeerConnection(), lp.GetPublisherPeerConnection()} {
				if pc != nil {
					_ = pc.Close()
				}
			}
		}
		p.wg.Wait()
		p.stream.ForgetBandwidth(p.codec, p)
		for _, r := range releases {
			r()
		}
	})
}

// goRun starts a goroutine that teardown waits for, unless it began.
func (p *Publisher) goRun(fn func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return
	}
	p.wg.Go(fn)
}

// readAudio decodes a resident's Opus track to the meter and the speaker
// until the track ends, as media/webrtc's peers do.
func (p *Publisher) readAudio(t *webrtc.TrackRemote, id string, levelExt uint8) {
	// LiveKit strips RED (RFC 2198) for subscribers like this one, but a
	// server that forwards it still carries Opus as the primary block.
	red := strings.EqualFold(t.Codec().MimeType, "audio/red")
	if !red && !strings.EqualFold(t.Codec().MimeType, webrtc.MimeTypeOpus) {
		p.log.Warn("livekit: remote audio not opus", "identity", id, "codec", t.Codec().MimeType)
		discard(t)
		return
	}
	rx, err := p.stream.NewOpusReceiver(p.meter, p.sink)
	if err != nil {
		p.log.Error("livekit: remote audio", "identity", id, "err", err)
		discard(t)
		return
	}
	defer rx.Close()
	var logged bool
	var opened, failed uint64
	if p.crypto != nil {
		defer func() {
			p.log.Debug("livekit: remote audio decryption", "identity", id, "frames", opened, "failed", failed)
		}()
	}
	for {
		pkt, _, err := t.ReadRTP()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				p.log.Debug("livekit: remote audio ended", "identity", id, "err", err)
			}
			return
		}
		payload := pkt.Payload
		if red {
			if payload, _, err = media.PrimaryFromRED(payload); err != nil {
				continue
			}
		}
		if p.crypto != nil {
			if payload, err = p.crypto.Decrypt(media.Opus, id, payload); err != nil {
				failed++
				if !logged {
					logged = true
					p.log.Warn("livekit: remote audio not decrypted", "identity", id, "err", err)
				}
				continue
			}
			opened++
		}
		if err := rx.WriteRTP(pkt.SequenceNumber, pkt.Timestamp, payload, media.LevelOf(&pkt.Header, levelExt), time.Now()); err != nil && !logged {
			logged = true // one line per track: a broken stream repeats
			p.log.Warn("livekit: remote audio", "identity", id, "err", err)
		}
	}
}

// discard reads a remote track until it ends.
func discard(t *webrtc.TrackRemote) {
	buf := make([]byte, 1500)
	for {
		if _, _, err := t.Read(buf); err != nil {
			return
		}
	}
}

// SetProcessLogger routes the SDK's process-wide log, which carries its
// pion peer connections' messages, to log instead of the standard logger.
// The SDK keeps it in a package variable: call this once, at start-up.
func SetProcessLogger(log *slog.Logger) {
	lksdk.SetLogger(protologger.LogRLogger(logr.FromSlogHandler(log.Handler())))
}
