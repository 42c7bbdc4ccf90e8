package media

import (
	"context"
	"fmt"
	"image"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"
)

// StreamConfig configures a Stream. Zero fields take the defaults noted.
type StreamConfig struct {
	// ID is the MediaStream ID shared by the audio and video tracks, the
	// first token of a=msid and the sdp_stream_metadata key (MSC3077).
	// Default "doorcam"; track IDs are ID+"-video" and ID+"-audio".
	ID string
	// Video format; default 640x480 at 15 frames per second.
	Width, Height, FPS int
	// VideoBitrate and AudioBitrate are encoder targets in bits per second;
	// defaults 600 kb/s and 32 kb/s. VideoBitrate is where a call starts:
	// receivers' estimates (ReportBandwidth) then move the target within
	// [MinVideoBitrate, MaxVideoBitrate], default 150 kb/s to 1.5 Mb/s.
	VideoBitrate, AudioBitrate       int
	MinVideoBitrate, MaxVideoBitrate int
	// KeyFrameInterval is the periodic keyframe distance; default 3 s.
	KeyFrameInterval time.Duration
	// MinKeyFrameGap rate-limits forced keyframes per codec: requests that
	// come sooner are merged and served when the gap has passed. Default
	// 500 ms.
	MinKeyFrameGap time.Duration
	// OpenVideo opens the raw video source when the first video encoder
	// starts; it is closed when the last one stops. Default: NewTestPattern.
	OpenVideo func(VideoFormat) (VideoSource, error)
	// OpenAudio likewise for audio. Default: a 440 Hz tone at -12 dBFS.
	OpenAudio func() (AudioSource, error)
	// Encoders builds the encoders (media/codec.Encoders()). Codecs without
	// a constructor are not offered.
	Encoders Encoders
	Logger   *slog.Logger
}

func (c *StreamConfig) setDefaults() {
	if c.ID == "" {
		c.ID = "doorcam"
	}
	if c.Width == 0 && c.Height == 0 {
		c.Width, c.Height = 640, 480
	}
	if c.FPS == 0 {
		c.FPS = 15
	}
	if c.VideoBitrate == 0 {
		c.VideoBitrate = 600_000
	}
	if c.MinVideoBitrate == 0 {
		c.MinVideoBitrate = 150_000
	}
	if c.MaxVideoBitrate == 0 {
		c.MaxVideoBitrate = 1_500_000
	}
	if c.AudioBitrate == 0 {
		c.AudioBitrate = 32_000
	}
	if c.KeyFrameInterval == 0 {
		c.KeyFrameInterval = 3 * time.Second
	}
	if c.MinKeyFrameGap == 0 {
		c.MinKeyFrameGap = 500 * time.Millisecond
	}
	if c.OpenVideo == nil {
		c.OpenVideo = func(f VideoFormat) (VideoSource, error) { return NewTestPattern(f) }
	}
	if c.OpenAudio == nil {
		c.OpenAudio = func() (AudioSource, error) { return NewTone(440, 0.25), nil }
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// EncoderStats describes one codec's encoder for the status API.
type EncoderStats struct {
	Codec            Codec         `json:"codec"`
	Users            int           `json:"users"`              // peers using the codec now
	Running          bool          `json:"running"`            // an encoder instance exists
	Starts           uint64        `json:"starts"`             // encoder instances created so far
	Frames           uint64        `json:"frames"`             // encoded frames written to the track
	KeyFrames        uint64        `json:"key_frames"`         // of which keyframes
	KeyFrameRequests uint64        `json:"key_frame_requests"` // requests (new peer, PLI, FIR)
	ForcedKeyFrames  uint64        `json:"forced_key_frames"`  // keyframes forced by requests
	Bytes            uint64        `json:"bytes"`              // encoded bytes
	EncodeTime       time.Duration `json:"encode_time_ns"`     // total time spent in Encode
	Passthrough      uint64        `json:"passthrough"`        // frames the camera encoded, sent as they came
	Errors           uint64        `json:"errors"`             // encode or write errors
	LastError        string        `json:"last_error"`
	// Video rate control: the encoder's target now, how many receivers
	// report an estimate, and how many reports came. In H.264 passthrough
	// the target applies to the placeholder picture only.
	TargetBitrate     int    `json:"target_bitrate"`
	EstimateReceivers int    `json:"estimate_receivers"`
	EstimateReports   uint64 `json:"estimate_reports"`
}

// Stream encodes the door's audio and video once per codec and writes the
// samples to one shared track per codec, which every peer connection adds.
// An encoder runs only while at least one user holds its codec (Acquire).
// All methods are safe for concurrent use and never block on media.
type Stream struct {
	cfg    StreamConfig
	format VideoFormat
	log    *slog.Logger

	codecs map[Codec]*codecState
	video  *pipeline
	audio  *pipeline
	// urgent (capacity 1) wakes the video loop between frames for a
	// RequestKeyFrameNow, which it serves by encoding the last picture
	// again at once.
	urgent chan struct{}
	// voices selects which residents' audio is decoded, across every
	// receiver of the stream: the door has one speaker however many
	// residents listen (see MaxVoices).
	voices *voices

	mu     sync.Mutex // guards closed and every codecState's stats
	closed bool

	// input is the level of the last audio frame the encoder took (the
	// microphone after gain and echo cancellation): InputLevel.
	input atomic.Pointer[InputLevel]

	snapMu      sync.Mutex
	snapWaiters []chan snapResult // snapshots waiting for the next frame
	snapSince   time.Time         // when the oldest waiter came
	snapKeyAsk  bool              // a keyframe was asked of the camera for them
	lastIDR     []byte            // the camera's last IDR access unit in this run, immutable
}

// codecState is one codec: its shared track and its encoder's bookkeeping.
type codecState struct {
	codec  Codec
	track  *webrtc.TrackLocalStaticSample
	keyReq chan struct{} // capacity 1: a pending keyframe request
	// keyNow marks the pending request as exempt from MinKeyFrameGap.
	keyNow atomic.Bool
	rate   *rateControl // video codecs only
	// rateMu keeps a target and its hand-over to the encoder together, so
	// two peers' reports cannot apply their targets out of order.
	rateMu sync.Mutex
	stats  EncoderStats // guarded by Stream.mu
	// taps get every sample written to the track (Stream.Tap).
	tapMu sync.RWMutex
	taps  map[*tapFn]struct{}
}

type tapFn struct{ fn func(pionmedia.Sample) }

// tap hands a written sample to the codec's taps.
func (st *codecState) tap(smp pionmedia.Sample) {
	st.tapMu.RLock()
	defer st.tapMu.RUnlock()
	for t := range st.taps {
		t.fn(smp)
	}
}

// NewStream prepares a stream. No source is opened and no encoder runs
// until a codec is acquired.
func NewStream(cfg StreamConfig) (*Stream, error) {
	cfg.setDefaults()
	format := VideoFormat{Width: cfg.Width, Height: cfg.Height, FPS: cfg.FPS}
	if !format.valid() {
		return nil, fmt.Errorf("new stream %dx%d@%d: %w", cfg.Width, cfg.Height, cfg.FPS, ErrBadFormat)
	}
	if cfg.MinVideoBitrate <= 0 || cfg.MinVideoBitrate > cfg.MaxVideoBitrate {
		return nil, fmt.Errorf("new stream: video bitrate bounds %d..%d: %w", cfg.MinVideoBitrate, cfg.MaxVideoBitrate, ErrBadFormat)
	}
	cfg.VideoBitrate = clampRate(cfg.VideoBitrate, cfg.MinVideoBitrate, cfg.MaxVideoBitrate)
	s := &Stream{cfg: cfg, format: format, log: cfg.Logger, codecs: map[Codec]*codecState{}, urgent: make(chan struct{}, 1), voices: newVoices(MaxVoices)}
	add := func(c Codec, capab webrtc.RTPCodecCapability, trackID string) error {
		t, err := webrtc.NewTrackLocalStaticSample(capab, trackID, cfg.ID)
		if err != nil {
			return fmt.Errorf("create %s track: %w", c, err)
		}
		st := &codecState{codec: c, track: t, keyReq: make(chan struct{}, 1), stats: EncoderStats{Codec: c}}
		if c.IsVideo() {
			st.rate = newRateControl(cfg.MinVideoBitrate, cfg.MaxVideoBitrate, cfg.VideoBitrate, cfg.AudioBitrate)
		}
		s.codecs[c] = st
		return nil
	}
	if cfg.Encoders.H264 != nil {
		if err := add(H264, webrtc.RTPCodecCapability{MimeType: string(H264), ClockRate: 90000, SDPFmtpLine: H264FMTP}, cfg.ID+"-video"); err != nil {
			return nil, err
		}
	}
	if cfg.Encoders.VP8 != nil {
		if err := add(VP8, webrtc.RTPCodecCapability{MimeType: string(VP8), ClockRate: 90000}, cfg.ID+"-video"); err != nil {
			return nil, err
		}
	}
	if cfg.Encoders.Opus != nil {
		if err := add(Opus, webrtc.RTPCodecCapability{MimeType: string(Opus), ClockRate: 48000, Channels: 2, SDPFmtpLine: OpusFMTP}, cfg.ID+"-audio"); err != nil {
			return nil, err
		}
	}
	onErr := func(err error) { s.log.Error("media pipeline stopped", "err", err) }
	s.video = newPipeline(s.runVideo, cfg.VideoBitrate, onErr)
	s.audio = newPipeline(s.runAudio, cfg.AudioBitrate, onErr)
	return s, nil
}

// ID returns the MediaStream ID of the stream's tracks.
func (s *Stream) ID() string { return s.cfg.ID }

// Format returns the raw video format.
func (s *Stream) Format() VideoFormat { return s.format }

// MaxVideoBitrate is the most the video encoders are set to send, in
// bits per second (StreamConfig.MaxVideoBitrate).
func (s *Stream) MaxVideoBitrate() int { return s.cfg.MaxVideoBitrate }

// Has reports whether the stream can send codec c.
func (s *Stream) Has(c Codec) bool { return s.codecs[c] != nil }

// Track returns the shared track for codec c, or nil if the stream has no
// encoder for it. Add it to every peer connection that sends c.
func (s *Stream) Track(c Codec) *webrtc.TrackLocalStaticSample {
	if st := s.codecs[c]; st != nil {
		return st.track
	}
	return nil
}

// Tap calls fn with every sample of codec c as it is written to the
// shared track, on the encoder's goroutine: fn must be quick and must not
// keep smp.Data, which the encoder may reuse. It is how a user that needs
// other bytes than the shared track's (an SFU connection that encrypts
// each frame, once, for all its subscribers) follows the one encoder
// without a second encode. Tap does not start the encoder (Acquire
// does); the returned cancel is idempotent.
func (s *Stream) Tap(c Codec, fn func(smp pionmedia.Sample)) (cancel func(), err error) {
	st := s.codecs[c]
	if st == nil {
		return nil, fmt.Errorf("tap %s: %w", c, ErrNoEncoder)
	}
	t := &tapFn{fn: fn}
	st.tapMu.Lock()
	if st.taps == nil {
		st.taps = map[*tapFn]struct{}{}
	}
	st.taps[t] = struct{}{}
	st.tapMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			st.tapMu.Lock()
			delete(st.taps, t)
			st.tapMu.Unlock()
		})
	}, nil
}

// Acquire marks one more user of codec c, starting its encoder (and the
// source) if it was idle, and asks for a keyframe so the new user can start
// decoding. The returned release is idempotent; the encoder stops when the
// last user releases. Starting is asynchronous and cheap: the first frame
// follows within one frame interval plus the encoder's set-up.
func (s *Stream) Acquire(c Codec) (release func(), err error) {
	st := s.codecs[c]
	if st == nil {
		return nil, fmt.Errorf("acquire %s: %w", c, ErrNoEncoder)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	st.stats.Users++
	s.mu.Unlock()
	p := s.pipelineFor(c)
	p.acquire(c)
	s.RequestKeyFrame(c)
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			st.stats.Users--
			s.mu.Unlock()
			p.release(c)
			if s.cfg.Encoders.Idle != nil && !s.video.running() && !s.audio.running() {
				s.cfg.Encoders.Idle()
			}
		})
	}, nil
}

// warmUser is the pipeline's pseudo-codec for Warm's holders of codec c:
// they keep the video runner (source and encoder) up without encoding.
func warmUser(c Codec) Codec { return "warm:" + c }

// Warm readies codec c's encoder without sending anything: the source
// opens, the encoder is created and encodes one picture, which is
// dropped, and from then on the loop only keeps the latest picture until
// someone acquires c. An encoder's first frame costs several times a
// later one (OpenH264 here: 15–125 ms against 2–5 ms), and its start
// another 5–30 ms; a call that rings warms the codec it will most likely
// send, so that after the answer the keyframe the viewer waits for
// (RequestKeyFrameNow) is one quick encode of the latest picture. The
// first frame written after the warm-up is a keyframe. The returned
// release is idempotent.
func (s *Stream) Warm(c Codec) (release func(), err error) {
	st := s.codecs[c]
	if st == nil || !c.IsVideo() {
		return nil, fmt.Errorf("warm %s: %w", c, ErrNoEncoder)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	s.mu.Unlock()
	s.video.acquire(warmUser(c))
	var once sync.Once
	return func() {
		once.Do(func() {
			s.video.release(warmUser(c))
			if s.cfg.Encoders.Idle != nil && !s.video.running() && !s.audio.running() {
				s.cfg.Encoders.Idle()
			}
		})
	}, nil
}

// RequestKeyFrame asks codec c's encoder for a keyframe, e.g. for a new
// viewer or on a Picture Loss Indication (RFC 4585 §6.3.1) or Full Intra
// Request (RFC 5104 §3.5.1). It never blocks; requests are merged and
// rate-limited by MinKeyFrameGap.
func (s *Stream) RequestKeyFrame(c Codec) {
	st := s.codecs[c]
	if st == nil || !c.IsVideo() {
		return
	}
	s.mu.Lock()
	st.stats.KeyFrameRequests++
	s.mu.Unlock()
	select {
	case st.keyReq <- struct{}{}:
	default:
	}
}

// RequestKeyFrameNow is RequestKeyFrame for a viewer whose media has just
// started flowing (its connection reached "connected"): it is served on the
// next frame whatever MinKeyFrameGap says. Without it the keyframe the
// encoder made when the call was answered, which was lost because SRTP was
// not up yet, would hold the viewer's first picture back by up to the gap.
func (s *Stream) RequestKeyFrameNow(c Codec) {
	if st := s.codecs[c]; st != nil && c.IsVideo() {
		st.keyNow.Store(true)
	}
	s.RequestKeyFrame(c)
	select {
	case s.urgent <- struct{}{}:
	default:
	}
}

// Stats returns a snapshot of every codec's encoder.
func (s *Stream) Stats() []EncoderStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]EncoderStats, 0, len(s.codecs))
	for _, c := range []Codec{H264, VP8, Opus} {
		if st := s.codecs[c]; st != nil {
			e := st.stats
			if st.rate != nil {
				e.TargetBitrate, e.EstimateReceivers, e.EstimateReports = st.rate.state()
			}
			out = append(out, e)
		}
	}
	return out
}

// SetVideoBitrate changes the target of the running video encoders and of
// those started later, until the next change rate control makes.
func (s *Stream) SetVideoBitrate(bps int) {
	s.video.setBitrate(bps)
}

// ReportBandwidth records receiver from's estimate of the bitrate its path
// carries (bits per second, e.g. from REMB) for codec c's track, and moves
// that encoder's target if the estimates now ask for it (see bitrate.go).
// from is any comparable key unique to the receiver, e.g. its peer. It
// never blocks on media. In H.264 passthrough the camera's own rate
// control decides; the target then applies to the placeholder picture.
func (s *Stream) ReportBandwidth(c Codec, from any, bps int) {
	st := s.codecs[c]
	if st == nil || st.rate == nil || bps <= 0 {
		return
	}
	st.rateMu.Lock()
	defer st.rateMu.Unlock()
	if target, changed := st.rate.report(from, bps, time.Now()); changed {
		s.log.Debug("video bitrate", "codec", c, "target", target, "estimate", bps)
		s.video.setCodecBitrate(c, target)
	}
}

// ForgetBandwidth drops receiver from's estimate (it left the call).
func (s *Stream) ForgetBandwidth(c Codec, from any) {
	st := s.codecs[c]
	if st == nil || st.rate == nil {
		return
	}
	st.rateMu.Lock()
	defer st.rateMu.Unlock()
	if target, changed := st.rate.forget(from, time.Now()); changed {
		s.log.Debug("video bitrate", "codec", c, "target", target)
		s.video.setCodecBitrate(c, target)
	}
}

// Close stops every encoder and source and waits for them. Acquire fails
// afterwards; releases of earlier acquisitions stay harmless.
func (s *Stream) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.video.close()
	s.audio.close()
	return nil
}

func (s *Stream) pipelineFor(c Codec) *pipeline {
	if c.IsVideo() {
		return s.video
	}
	return s.audio
}

func (s *Stream) record(st *codecState, f func(*EncoderStats)) {
	s.mu.Lock()
	f(&st.stats)
	s.mu.Unlock()
}

func (s *Stream) recordError(st *codecState, err error) {
	s.record(st, func(e *EncoderStats) {
		e.Errors++
		e.LastError = err.Error()
	})
}

// runVideo owns the video source and the video encoders while any video
// codec (or a snapshot) has users. Each raw frame is encoded once per codec
// in use; an H.264 frame from the camera goes to the H.264 track as it is.
func (s *Stream) runVideo(ctx context.Context, p *pipeline) error {
	src, err := s.cfg.OpenVideo(s.format)
	if err != nil {
		err = fmt.Errorf("open video source: %w", err)
		s.failSnapshots(err)
		return err
	}
	defer src.Close()
	defer s.failSnapshots(errSourceStopped)
	s.forgetIDR()
	defer s.forgetIDR()

	type running struct {
		st        *codecState
		enc       VideoEncoder
		bitrate   int
		lastForce time.Time
		// idle: the encoder has written nothing since it was warmed
		// (Warm), so the first frame it writes must be a keyframe.
		idle bool
	}
	encs := map[Codec]*running{}
	// lastWrite is per track, shared by its encoder and by passthrough, so
	// sample durations stay right across a switch between the two.
	lastWrite := map[Codec]time.Time{}
	pt := passthrough{}
	stop := func(c Codec) {
		r := encs[c]
		if err := r.enc.Close(); err != nil {
			s.recordError(r.st, fmt.Errorf("close encoder: %w", err))
		}
		delete(encs, c)
		s.record(r.st, func(e *EncoderStats) { e.Running = false })
		s.log.Debug("encoder stopped", "codec", c)
	}
	defer func() {
		for c := range encs {
			stop(c)
		}
	}()
	write := func(st *codecState, frame *Frame, data []byte, took time.Duration, force bool) {
		dur := s.format.Interval()
		if lw := lastWrite[st.codec]; !lw.IsZero() && frame.Time.After(lw) {
			dur = frame.Time.Sub(lw)
		}
		lastWrite[st.codec] = frame.Time
		key := IsKeyFrame(st.codec, data)
		smp := pionmedia.Sample{Data: data, Duration: dur, Timestamp: frame.Time}
		werr := st.track.WriteSample(smp)
		st.tap(smp)
		if key || force {
			// A new viewer waits for one: the last door-side step of
			// answer → first frame (docs/ARCHITECTURE.md). Periodic ones
			// come every KeyFrameInterval.
			s.log.Debug("keyframe sent", "codec", st.codec, "key", key, "forced", force, "bytes", len(data), "took", took)
		}
		s.record(st, func(e *EncoderStats) {
			e.EncodeTime += took
			e.Frames++
			e.Bytes += uint64(len(data))
			if key {
				e.KeyFrames++
			}
			if force {
				e.ForcedKeyFrames++
			}
			if frame.H264 != nil {
				e.Passthrough++
			}
			if werr != nil {
				e.Errors++
				e.LastError = werr.Error()
			}
		})
	}

	// A reader goroutine hands the frames over one at a time and waits
	// until the loop is done with each (a source may reuse its buffer), so
	// that the loop can also wake between frames for an urgent keyframe.
	reads, ack, stopReader := readFrames(ctx, src)
	defer stopReader()    // before src.Close: the reader is out of ReadFrame
	var last *image.YCbCr // copy of the last raw picture, for urgent keyframes
	var frame *Frame      // the frame being handled, until it is acknowledged
	for {
		if frame != nil {
			// Done with the previous frame: keep its picture for an
			// urgent keyframe, then let the reader reuse its buffer.
			if frame.Image != nil && len(encs) > 0 {
				last = copyYCbCr(last, frame.Image)
			}
			frame = nil
			select {
			case ack <- struct{}{}:
			case <-ctx.Done():
				// The reader stops on the same context, perhaps
				// already: it would never take the ack.
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.urgent:
			// A viewer's media just started (RequestKeyFrameNow):
			// encode the last picture again as a keyframe now rather
			// than wait up to a frame interval for the next one.
			if last != nil {
				urgent := &Frame{Image: last, Time: time.Now()}
				wanted, _ := p.wanted()
				for c, r := range encs {
					if !r.st.keyNow.Load() || !wanted[c] {
						continue
					}
					select {
					case <-r.st.keyReq:
					default:
						continue
					}
					r.st.keyNow.Store(false)
					r.lastForce = urgent.Time
					r.idle = false
					t0 := time.Now()
					data, err := r.enc.Encode(urgent.Image, true)
					if err != nil {
						s.recordError(r.st, fmt.Errorf("encode %s: %w", c, err))
						continue
					}
					if len(data) > 0 {
						write(r.st, urgent, data, time.Since(t0), true)
					}
				}
			}
			continue
		case rd := <-reads:
			if ctx.Err() != nil {
				return nil
			}
			if rd.err != nil {
				return fmt.Errorf("read video frame: %w", rd.err)
			}
			frame = rd.frame
		}
		s.serveSnapshots(frame, src)
		wanted, bitrateOf := p.wanted()
		used := func(c Codec) bool { return wanted[c] || wanted[warmUser(c)] }
		for c := range encs {
			if !used(c) || (c == H264 && frame.H264 != nil) {
				// Unused, or the camera's own H.264 is back.
				stop(c)
			}
		}
		if frame.H264 != nil {
			if st := s.codecs[H264]; st != nil && wanted[H264] {
				if data, force := pt.next(s, st, src, frame); data != nil {
					write(st, frame, data, 0, force)
				}
			}
			// A VP8 viewer would need the camera's H.264 decoded: the
			// stream is built without VP8 when the camera passes H.264
			// through (see media/v4l2).
			continue
		}
		pt.synced = false // after raw frames, wait for the camera's next IDR
		for _, c := range []Codec{H264, VP8} {
			if !used(c) || encs[c] != nil || s.codecs[c] == nil {
				continue
			}
			st := s.codecs[c]
			newEnc := s.cfg.Encoders.H264
			if c == VP8 {
				newEnc = s.cfg.Encoders.VP8
			}
			if newEnc == nil {
				continue
			}
			t0 := time.Now()
			bitrate := bitrateOf(c)
			enc, err := newEnc(VideoEncoderConfig{VideoFormat: s.format, Bitrate: bitrate, KeyFrameInterval: s.cfg.KeyFrameInterval})
			if err != nil {
				s.recordError(st, fmt.Errorf("start encoder: %w", err))
				continue
			}
			// A fresh encoder starts with a keyframe: pending requests,
			// urgent ones too, are met.
			select {
			case <-st.keyReq:
			default:
			}
			st.keyNow.Store(false)
			encs[c] = &running{st: st, enc: enc, bitrate: bitrate, lastForce: frame.Time, idle: !wanted[c]}
			if !wanted[c] {
				// Warmed only: pay the first frame's cost now, send nothing.
				t0 := time.Now()
				if _, err := enc.Encode(frame.Image, true); err != nil {
					s.recordError(st, fmt.Errorf("encode %s: %w", c, err))
				}
				s.record(st, func(e *EncoderStats) { e.EncodeTime += time.Since(t0) })
			}
			s.record(st, func(e *EncoderStats) { e.Running = true; e.Starts++ })
			s.log.Debug("encoder started", "codec", c, "took", time.Since(t0))
		}
		for c, r := range encs {
			if bitrate := bitrateOf(c); r.bitrate != bitrate {
				if bs, ok := r.enc.(BitrateSetter); ok {
					if err := bs.SetBitrate(bitrate); err != nil {
						s.recordError(r.st, err)
					}
				}
				r.bitrate = bitrate
			}
			if !wanted[c] {
				continue // warmed only
			}
			force := false
			if r.idle {
				// The first frame after the warm-up: its encoder's last
				// output was dropped, so it must be a keyframe, which
				// meets every pending request.
				select {
				case <-r.st.keyReq:
				default:
				}
				r.st.keyNow.Store(false)
				r.idle, force, r.lastForce = false, true, frame.Time
			} else if r.st.keyNow.Load() || frame.Time.Sub(r.lastForce) >= s.cfg.MinKeyFrameGap {
				select {
				case <-r.st.keyReq:
					force = true
					r.lastForce = frame.Time
					r.st.keyNow.Store(false)
				default:
				}
			}
			t0 := time.Now()
			data, err := r.enc.Encode(frame.Image, force)
			took := time.Since(t0)
			if err != nil {
				s.recordError(r.st, fmt.Errorf("encode %s: %w", c, err))
				continue
			}
			if len(data) == 0 { // skipped by rate control
				s.record(r.st, func(e *EncoderStats) { e.EncodeTime += took })
				continue
			}
			write(r.st, frame, data, took, force)
		}
	}
}

// passthrough is the H.264 track's state while the camera's own access
// units are sent.
type passthrough struct {
	synced    bool      // an IDR has been sent since passthrough (re)started
	lastForce time.Time // last keyframe asked of the camera
}

// next returns the access unit to write, or nil to drop it: until the
// first IDR after a start or a switch from the encoder, inter frames
// reference pictures the viewers never got. Keyframe requests (new viewer,
// PLI, FIR) go to the camera, rate-limited like the encoder's.
func (pt *passthrough) next(s *Stream, st *codecState, src VideoSource, frame *Frame) (data []byte, forced bool) {
	ask := func() {
		if kr, ok := src.(KeyFrameRequester); ok {
			kr.RequestKeyFrame()
		}
		pt.lastForce = frame.Time
		st.keyNow.Store(false)
	}
	if st.keyNow.Load() || frame.Time.Sub(pt.lastForce) >= s.cfg.MinKeyFrameGap {
		select {
		case <-st.keyReq:
			ask()
			forced = true
		default:
		}
	}
	key := IsKeyFrame(H264, frame.H264)
	if len(frame.H264) == 0 {
		return nil, false
	}
	if !pt.synced {
		if !key {
			if frame.Time.Sub(pt.lastForce) >= s.cfg.MinKeyFrameGap {
				ask()
			}
			return nil, false
		}
		pt.synced = true
	}
	return frame.H264, forced && key
}

// runAudio owns the audio source and the Opus encoder while Opus has users.
func (s *Stream) runAudio(ctx context.Context, p *pipeline) error {
	st := s.codecs[Opus]
	src, err := s.cfg.OpenAudio()
	if err != nil {
		return fmt.Errorf("open audio source: %w", err)
	}
	defer src.Close()
	enc, err := s.cfg.Encoders.Opus(AudioEncoderConfig{Bitrate: s.cfg.AudioBitrate})
	if err != nil {
		return fmt.Errorf("start opus encoder: %w", err)
	}
	s.record(st, func(e *EncoderStats) { e.Running = true; e.Starts++ })
	defer func() {
		if err := enc.Close(); err != nil {
			s.recordError(st, err)
		}
		s.record(st, func(e *EncoderStats) { e.Running = false })
	}()
	for {
		pcm, err := src.ReadAudio(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read audio: %w", err)
		}
		t0 := time.Now()
		s.input.Store(levelOf(pcm, t0))
		data, err := enc.Encode(pcm)
		took := time.Since(t0)
		if err != nil {
			s.recordError(st, fmt.Errorf("encode opus: %w", err))
			continue
		}
		smp := pionmedia.Sample{Data: data, Duration: AudioFrame}
		werr := st.track.WriteSample(smp)
		st.tap(smp)
		s.record(st, func(e *EncoderStats) {
			e.EncodeTime += took
			e.Frames++
			e.Bytes += uint64(len(data))
			if werr != nil {
				e.Errors++
				e.LastError = werr.Error()
			}
		})
	}
}

// InputLevel is the level of one 20 ms frame of the door's audio as the
// encoder took it: what the residents hear of the door.
type InputLevel struct {
	PeakDBFS float64   `json:"peak_dbfs"` // loudest sample; -96 for digital silence
	RMSDBFS  float64   `json:"rms_dbfs"`  // 0 dBFS: a full-scale square wave
	At       time.Time `json:"at"`
}

// silenceDBFS is the floor of InputLevel: 16-bit audio's dynamic range.
const silenceDBFS = -96

func levelOf(pcm []int16, at time.Time) *InputLevel {
	peak, sum := 0, 0.0
	for _, v := range pcm {
		a := int(v)
		if a < 0 {
			a = -a
		}
		peak = max(peak, a)
		sum += float64(a) * float64(a)
	}
	dbfs := func(x float64) float64 {
		if x <= 0 {
			return silenceDBFS
		}
		return max(silenceDBFS, 20*math.Log10(x/32768))
	}
	l := &InputLevel{PeakDBFS: dbfs(float64(peak)), At: at}
	if len(pcm) > 0 {
		l.RMSDBFS = dbfs(math.Sqrt(sum / float64(len(pcm))))
	} else {
		l.RMSDBFS = silenceDBFS
	}
	return l
}

// InputLevel returns the level of the last audio frame encoded, and false
// when the audio encoder has not run yet. A frame older than a few tens of
// milliseconds means the encoder is not running (nobody holds Opus).
func (s *Stream) InputLevel() (InputLevel, bool) {
	l := s.input.Load()
	if l == nil {
		return InputLevel{}, false
	}
	return *l, true
}

// frameRead is one ReadFrame result.
type frameRead struct {
	frame *Frame
	err   error
}

// readFrames reads src on its own goroutine, handing each frame over on
// reads and waiting for ack before reading the next: the caller owns each
// frame until it acknowledges it. After an error it stops. stop ends the
// goroutine and waits for it, so the source can be closed after.
func readFrames(ctx context.Context, src VideoSource) (reads <-chan frameRead, ack chan<- struct{}, stop func()) {
	rctx, cancel := context.WithCancel(ctx)
	out := make(chan frameRead)
	acks := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			f, err := src.ReadFrame(rctx)
			select {
			case out <- frameRead{f, err}:
			case <-rctx.Done():
				return
			}
			if err != nil {
				return
			}
			select {
			case <-acks:
			case <-rctx.Done():
				return
			}
		}
	}()
	return out, acks, func() { cancel(); <-done }
}

// copyYCbCr copies src into dst, reusing dst's buffers when the geometry
// matches.
func copyYCbCr(dst, src *image.YCbCr) *image.YCbCr {
	if dst == nil || dst.Rect != src.Rect || dst.SubsampleRatio != src.SubsampleRatio ||
		dst.YStride != src.YStride || dst.CStride != src.CStride || len(dst.Y) != len(src.Y) || len(dst.Cb) != len(src.Cb) {
		dst = &image.YCbCr{Y: make([]byte, len(src.Y)), Cb: make([]byte, len(src.Cb)), Cr: make([]byte, len(src.Cr)),
			YStride: src.YStride, CStride: src.CStride, SubsampleRatio: src.SubsampleRatio, Rect: src.Rect}
	}
	copy(dst.Y, src.Y)
	copy(dst.Cb, src.Cb)
	copy(dst.Cr, src.Cr)
	return dst
}
