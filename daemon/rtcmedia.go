package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/rtc"
	"github.com/doorbell/intercom/media"
	mlivekit "github.com/doorbell/intercom/media/livekit"
)

// sfuJoin connects to one room's SFU with tok and publishes the door's
// camera and microphone. presence reports remote participants arriving
// and leaving; lost reports the connection ending by itself. Closing the
// returned Closer leaves the SFU.
// keys is nil in an unencrypted room; otherwise every frame is encrypted
// and decrypted with the call's keys.
type sfuJoin func(ctx context.Context, tok mlivekit.Token, keys *rtc.CallKeys, presence func(identity string, present bool), lost func(error)) (io.Closer, error)

// tokenSource gives the intercom a LiveKit token for a Matrix room's call:
// mlivekit.ServiceTokens or mlivekit.MintedTokens.
type tokenSource interface {
	Token(ctx context.Context, room callengine.RoomID) (mlivekit.Token, error)
}

// livekitSFU is the MatrixRTC runner's SFU (rtc.SFU): a token for the
// room's call from tokens, then join.
type livekitSFU struct {
	tokens tokenSource
	join   sfuJoin
	// remote gets tokens from other members' JWT services (multi-SFU:
	// /get_token first, as Element Call does for SFUs it only subscribes
	// on); listen joins those SFUs without publishing.
	remote *mlivekit.ServiceTokens
	listen sfuJoin
	log    *slog.Logger
}

func (s livekitSFU) Join(ctx context.Context, room callengine.RoomID, keys *rtc.CallKeys, presence func(string, bool), lost func(error)) (io.Closer, error) {
	tok, err := s.tokens.Token(ctx, room)
	if err != nil {
		return nil, err
	}
	c, err := s.join(ctx, tok, keys, presence, lost)
	if err != nil {
		return nil, err
	}
	s.log.Info("joined SFU", "room_id", room, "url", tok.URL, "encrypted", keys != nil)
	return c, nil
}

// Subscribe joins the SFU behind another member's transport, to listen.
func (s livekitSFU) Subscribe(ctx context.Context, room callengine.RoomID, serviceURL string, keys *rtc.CallKeys, presence func(string, bool), lost func(error)) (io.Closer, error) {
	if s.remote == nil || s.listen == nil {
		return nil, fmt.Errorf("join the SFU of %s: no way to get tokens there", serviceURL)
	}
	tok, err := s.remote.TokenFrom(ctx, serviceURL, room, mlivekit.EndpointAuto)
	if err != nil {
		return nil, err
	}
	c, err := s.listen(ctx, tok, keys, presence, lost)
	if err != nil {
		return nil, err
	}
	s.log.Info("joined a resident's SFU to listen", "room_id", room, "service_url", serviceURL, "url", tok.URL, "encrypted", keys != nil)
	return c, nil
}

// livekitJoin joins SFUs as a media/livekit Publisher: the stream's own
// encoders (no second encode), residents' audio to the speaker and the
// shared meter. The Publisher's events become presence and loss reports;
// the forwarding goroutine ends when the Publisher closes its events.
// With subscribeOnly it publishes nothing (another member's SFU).
func livekitJoin(stream *media.Stream, speaker media.Speaker, meter *media.AudioMeter, log *slog.Logger, subscribeOnly bool) sfuJoin {
	return func(ctx context.Context, tok mlivekit.Token, keys *rtc.CallKeys, presence func(string, bool), lost func(error)) (io.Closer, error) {
		cfg := mlivekit.Config{Stream: stream, Speaker: speaker, Meter: meter, Logger: log, SubscribeOnly: subscribeOnly}
		if keys != nil {
			cfg.Crypto = mlivekit.NewCallCrypto(keys, log)
		}
		p, err := mlivekit.Join(ctx, tok.URL, tok.JWT, cfg)
		if err != nil {
			return nil, err
		}
		go func() {
			for ev := range p.Events() {
				switch ev.Kind {
				case mlivekit.ParticipantJoined:
					presence(ev.Identity, true)
				case mlivekit.ParticipantLeft:
					presence(ev.Identity, false)
				case mlivekit.Disconnected:
					lost(fmt.Errorf("SFU disconnected: %s", ev.Reason))
				}
			}
		}()
		return p, nil
	}
}
