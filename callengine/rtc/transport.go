package rtc

// The intercom's own transport (the JWT service it names in
// foci_preferred) may be unknown when the runner starts: with
// matrixrtc.enabled alone, the daemon discovers it from the homeserver
// (matrix.DiscoverRTCTransport), perhaps only after the homeserver comes
// back or starts advertising one. Until then nothing is rung here.

// TransportChanged: the JWT service the intercom advertises is now
// ServiceURL. Calls already joined keep the one they joined with until
// their next membership refresh.
type TransportChanged struct{ ServiceURL string }

func (TransportChanged) event() {}

// SetTransport tells the machine the JWT service to advertise, for a
// transport learnt after NewRunner. It never blocks; a ring requested
// after it returns uses it.
func (r *Runner) SetTransport(serviceURL string) {
	r.push(item{ev: TransportChanged{ServiceURL: serviceURL}})
}
