package livekit

import (
	"sync"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
)

// rtcpTap is an interceptor factory that watches the RTCP arriving on the
// SDK's peer connections for feedback about the streams we send. The SDK
// adds a shared track with PeerConnection.AddTrack and drains its
// RTPSender's RTCP in a goroutine of its own (publication.go readRTCP)
// without exposing it, so a second reader would steal half the packets;
// an interceptor sees every packet on the way, in order, and is the one
// seam lksdk offers (WithInterceptors).
type rtcpTap struct {
	// keyFrame is called for a Picture Loss Indication (RFC 4585 §6.3.1)
	// or Full Intra Request (RFC 5104 §3.5.1) about a stream of mime type.
	keyFrame func(mime string)
	// bandwidth is called with a receiver's estimate (REMB,
	// draft-alvestrand-rmcat-remb) covering a stream of mime type.
	bandwidth func(mime string, bps int)
}

// NewInterceptor implements interceptor.Factory: one per peer connection.
func (f *rtcpTap) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &tapInterceptor{f: f, local: map[uint32]string{}}, nil
}

type tapInterceptor struct {
	interceptor.NoOp
	f *rtcpTap

	mu    sync.Mutex
	local map[uint32]string // SSRC of a stream we send → its mime type
}

func (t *tapInterceptor) BindLocalStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	t.mu.Lock()
	t.local[info.SSRC] = info.MimeType
	t.mu.Unlock()
	return w
}

func (t *tapInterceptor) UnbindLocalStream(info *interceptor.StreamInfo) {
	t.mu.Lock()
	delete(t.local, info.SSRC)
	t.mu.Unlock()
}

func (t *tapInterceptor) mime(ssrc uint32) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.local[ssrc]
}

func (t *tapInterceptor) BindRTCPReader(r interceptor.RTCPReader) interceptor.RTCPReader {
	return interceptor.RTCPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		n, a, err := r.Read(b, a)
		if err != nil {
			return n, a, err
		}
		if a == nil {
			a = interceptor.Attributes{}
		}
		// GetRTCPPackets caches the parse in the attributes, so the
		// interceptors after us do not parse again.
		pkts, perr := a.GetRTCPPackets(b[:n])
		if perr != nil {
			return n, a, nil
		}
		for _, pkt := range pkts {
			t.handle(pkt)
		}
		return n, a, nil
	})
}

func (t *tapInterceptor) handle(pkt rtcp.Packet) {
	switch pkt := pkt.(type) {
	case *rtcp.PictureLossIndication:
		if m := t.mime(pkt.MediaSSRC); m != "" {
			t.f.keyFrame(m)
		}
	case *rtcp.FullIntraRequest:
		for _, e := range pkt.FIR {
			if m := t.mime(e.SSRC); m != "" {
				t.f.keyFrame(m)
				return
			}
		}
	case *rtcp.ReceiverEstimatedMaximumBitrate:
		for _, ssrc := range pkt.SSRCs {
			if m := t.mime(ssrc); m != "" {
				t.f.bandwidth(m, int(min(pkt.Bitrate, 1<<30)))
				return
			}
		}
	}
}
