package webrtc

import (
	"fmt"
	"reflect"
	"time"
	"unsafe"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
)

// iceCheckInterval is how often the door's ICE agent runs its checks
// while connecting, instead of pion's 200 ms.
//
// As the offerer the door is the controlling agent (RFC 8445 §6.1.1) and
// must nominate a pair before ICE, then DTLS, can complete. pion/ice
// (v4.4.8) nominates only when its check timer fires, or when the far end
// checks a pair that has already succeeded; it does not nominate when the
// success response itself arrives (RFC 8445 §8.1.1 leaves the moment to
// the agent). On loopback the best pair's check succeeds soon after the
// answer and then waits for the next tick: measured by BenchmarkEndToEnd,
// answer applied → pair selected took 234 ms (median of 10 calls) at
// 200 ms, 88 ms at 50 ms (docs/ARCHITECTURE.md, "Answer to first frame").
//
// pion/webrtc v4.2 has no setting for it (pion/ice has WithCheckInterval),
// so setICECheckInterval writes the agent's field. Each tick pings every
// pair still in progress (pairs that succeeded are not pinged again), so
// while connecting the door sends four times pion's check traffic: a
// handful of pairs on a LAN, for the fraction of a second it takes. Once
// connected the agent runs on its keepalive interval as before.
const iceCheckInterval = 50 * time.Millisecond

// iceMaxBindingRequests keeps the time after which an unanswered pair
// counts as failed where pion's defaults put it (7 requests at 200 ms,
// about 1.4 s): a relay pair across the internet needs that long.
const iceMaxBindingRequests = 28

// setICECheckInterval sets the check interval of pc's ICE agent, which
// exists once the local description is set, and the number of requests
// after which an unanswered pair fails. It must run before the remote
// description is applied: the agent's check loop starts then, and reads
// the fields from then on. Only the door's offering peers call it (the
// peers that answer are the controlled agent, which does not nominate).
func setICECheckInterval(pc *webrtc.PeerConnection, d time.Duration, maxRequests uint16) error {
	g := reflect.ValueOf(pc).Elem().FieldByName("iceGatherer")
	if !g.IsValid() || g.Kind() != reflect.Pointer || g.IsNil() {
		return fmt.Errorf("peer connection's ICE gatherer: %w", errICEInternals)
	}
	a := g.Elem().FieldByName("agent")
	if !a.IsValid() || a.Type() != reflect.TypeFor[*ice.Agent]() || a.IsNil() {
		return fmt.Errorf("ICE gatherer's agent: %w", errICEInternals)
	}
	f := a.Elem().FieldByName("checkInterval")
	if !f.IsValid() || f.Type() != reflect.TypeFor[time.Duration]() {
		return fmt.Errorf("ICE agent's check interval: %w", errICEInternals)
	}
	m := a.Elem().FieldByName("maxBindingRequests")
	if !m.IsValid() || m.Type() != reflect.TypeFor[uint16]() {
		return fmt.Errorf("ICE agent's binding request limit: %w", errICEInternals)
	}
	*(*time.Duration)(unsafe.Pointer(f.UnsafeAddr())) = d
	*(*uint16)(unsafe.Pointer(m.UnsafeAddr())) = maxRequests
	return nil
}
