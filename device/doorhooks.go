package device

import (
	"slices"

	"github.com/doorbell/intercom/callengine"
)

// attachDoor lets the door report relay changes on /api/events.
func (d *Intercom) attachDoor() {
	if d.cfg.Door != nil {
		d.cfg.Door.setPublisher(d.doorEvent)
	}
}

// follow passes a call-engine status on to the notices and the door's
// call window. It never blocks.
func (d *Intercom) follow(st callengine.Status) {
	if d.cfg.Notices != nil {
		d.cfg.Notices.Follow(st)
	}
	d.followRing(st)
	if d.cfg.Door != nil {
		d.cfg.Door.callChanged(slices.ContainsFunc(st.Calls, func(c callengine.CallStatus) bool {
			return c.State == callengine.LegConnected
		}))
	}
}
