package daemon

import (
	"maps"
	"slices"
	"sync/atomic"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/ring"
	"github.com/doorbell/intercom/provisioning"
)

// ringPaths is which paths ring which resident (residents[].paths), read
// by the ring coordinator at every press and replaced by a reload.
type ringPaths struct {
	p atomic.Pointer[map[string][]string] // provisioning.Config.ResidentPaths
}

func newRingPaths(cfg *provisioning.Config) *ringPaths {
	r := &ringPaths{}
	r.set(cfg.ResidentPaths)
	return r
}

func (r *ringPaths) set(paths map[string][]string) {
	m := maps.Clone(paths)
	r.p.Store(&m)
}

// rings reports whether a press rings user on path. The household mesh is
// not a per-resident choice: it rings the household room's devices.
func (r *ringPaths) rings(path ring.Path, user callengine.UserID) bool {
	want := ""
	switch path {
	case ring.Direct:
		want = provisioning.PathClassic
	case ring.MatrixRTC:
		want = provisioning.PathMatrixRTC
	default:
		return true
	}
	paths, ok := (*r.p.Load())[string(user)]
	return !ok || slices.Contains(paths, want)
}

// rtcRooms are the residents' rooms MatrixRTC rings: a classic-only
// resident's room gets none of its chores (power level for call
// memberships, the open slot).
func (r *ringPaths) rtcRooms(rooms map[callengine.UserID]callengine.RoomID) map[callengine.UserID]callengine.RoomID {
	out := map[callengine.UserID]callengine.RoomID{}
	for u, room := range rooms {
		if r.rings(ring.MatrixRTC, u) {
			out[u] = room
		}
	}
	return out
}
