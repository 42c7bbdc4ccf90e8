package livekit

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/doorbell/intercom/callengine/rtc"
	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/framecrypt"
)

// CallCrypto is the FrameCrypto of one encrypted room's call: the door's
// key ring and one ring per participant, kept in step with the call's
// keys as the MatrixRTC runner hands them out (rtc.CallKeys). Frames of a
// participant whose key has not arrived fail to decrypt and are dropped.
type CallCrypto struct {
	own *framecrypt.KeyRing
	enc map[media.Codec]*framecrypt.Encryptor

	log *slog.Logger

	mu     sync.Mutex
	remote map[string]*participantKeys // by LiveKit identity
}

type participantKeys struct {
	ring *framecrypt.KeyRing
	mu   sync.Mutex // the decryptors reuse their buffers
	dec  map[media.Codec]*framecrypt.Decryptor
}

// NewCallCrypto follows keys from now on (and every key given so far);
// a key that cannot be used is logged to log.
func NewCallCrypto(keys *rtc.CallKeys, log *slog.Logger) *CallCrypto {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &CallCrypto{own: framecrypt.NewKeyRing(), enc: map[media.Codec]*framecrypt.Encryptor{}, remote: map[string]*participantKeys{}, log: log}
	for mc, fc := range cryptoCodecs {
		c.enc[mc] = framecrypt.NewEncryptor(c.own, fc)
	}
	keys.Watch(c.update)
	return c
}

// cryptoCodecs maps the stream's codecs to the cryptor's.
var cryptoCodecs = map[media.Codec]framecrypt.Codec{media.H264: framecrypt.H264, media.VP8: framecrypt.VP8, media.Opus: framecrypt.Opus}

// update takes one key from the runner (under the CallKeys lock).
func (c *CallCrypto) update(u rtc.KeyUpdate) {
	if u.Own {
		if err := c.own.SetKey(u.Index, u.Key); err != nil {
			c.fail(err)
			return
		}
		if err := c.own.SetCurrent(u.Index); err != nil {
			c.fail(err)
		}
		return
	}
	c.mu.Lock()
	p := c.remote[u.Identity]
	if p == nil {
		p = &participantKeys{ring: framecrypt.NewKeyRing(), dec: map[media.Codec]*framecrypt.Decryptor{}}
		for mc, fc := range cryptoCodecs {
			p.dec[mc] = framecrypt.NewDecryptor(p.ring, fc)
		}
		c.remote[u.Identity] = p
	}
	c.mu.Unlock()
	if err := p.ring.SetKey(u.Index, u.Key); err != nil {
		c.fail(fmt.Errorf("key of %s: %w", u.Identity, err))
	}
}

func (c *CallCrypto) fail(err error) { c.log.Warn("livekit: media key not usable", "err", err) }

// Encrypt seals one of the door's frames with its current key. The
// result is valid until the next Encrypt of that codec: the one caller
// per codec (the stream's encoder goroutine, through the track's tap)
// hands it to WriteSample, which copies it.
func (c *CallCrypto) Encrypt(mc media.Codec, frame []byte) ([]byte, error) {
	e := c.enc[mc]
	if e == nil {
		return nil, fmt.Errorf("encrypt %s: %w", mc, framecrypt.ErrCodec)
	}
	return e.Encrypt(frame)
}

// Decrypt opens one frame of the participant with that identity into a
// new slice.
func (c *CallCrypto) Decrypt(mc media.Codec, identity string, frame []byte) ([]byte, error) {
	c.mu.Lock()
	p := c.remote[identity]
	c.mu.Unlock()
	if p == nil {
		return nil, fmt.Errorf("decrypt %s of %s: %w", mc, identity, framecrypt.ErrNoKey)
	}
	d := p.dec[mc]
	if d == nil {
		return nil, fmt.Errorf("decrypt %s: %w", mc, framecrypt.ErrCodec)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	out, err := d.Decrypt(frame)
	if err != nil {
		return nil, err
	}
	// A copy: the decryptor's buffer is reused, the receiver may keep
	// the frame (an Opus packet: about a hundred bytes).
	return append([]byte(nil), out...), nil
}
