package matrix

import (
	"net/http"
	"time"
)

// serverClock is one reading of the homeserver's clock: it read server
// at local time at.
type serverClock struct{ server, at time.Time }

// ServerTime returns the homeserver's clock as the last successful /sync
// response showed it (its Date header), and the local time that response
// arrived; both zero until one did. Called from the handler Run delivers
// events to, it is the clock of the response that carried the event.
//
// The door judges origin_server_ts against this clock, never against the
// board's, which may be hours behind or years ahead without an RTC or NTP
// (issue 19, finding 3). The Date header comes from the homeserver the
// intercom logs in to, on every response (RFC 9110 §6.6.1: an origin
// server with a clock must send it). An event's origin_server_ts plus its
// unsigned.age would estimate the same clock, but for a federated event
// both come from the sending server, which may be anyone's, and Dendrite
// sends no age at all.
//
// Date names a whole second, truncated, and the response then travels:
// the server's clock when it arrived is at least Date, so Date is taken as
// it is, a lower bound up to a second (and a trip) behind. Taking the end
// of that second instead dated the intercom's start up to a second late
// in the end-to-end tests, and refused a resident's command sent just
// after it as sent before; a lower bound never does. A command sent in
// the second before the start is then met by the ring window, which no
// ring of the new run has opened yet.
func (s *Session) ServerTime() (server, at time.Time) {
	c := s.clock.Load()
	if c == nil {
		return time.Time{}, time.Time{}
	}
	return c.server, c.at
}

// sawServerTime records the Date of a /sync response that just arrived.
func (s *Session) sawServerTime(resp *http.Response) {
	if resp == nil {
		return
	}
	date, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return
	}
	s.clock.Store(&serverClock{server: date, at: s.now()})
}
