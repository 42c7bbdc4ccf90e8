package provisioning

import (
	"errors"
	"fmt"
	"strings"
)

// Household is the household room's group call (callengine/group):
// household devices holding a famedly com.famedly.call.member membership
// there are connected to the door when the bell rings.
type Household struct {
	// Room is the household room, a room ID or an alias. The intercom
	// joins it at start.
	Room string
	// GroupCall is "off" or "mesh" (to-device signalled peer connections,
	// matrix-voip.md §4.4–4.5).
	GroupCall string
	// MaxDevicesPerUser bounds the devices of one member the door
	// connects to; further devices are ignored (issue 19, finding 5).
	MaxDevicesPerUser int
	// MaxCalls bounds the mesh's calls, one PeerConnection each, at
	// once; further invites are rejected.
	MaxCalls int
}

// roomIDOrAlias checks the shape "!opaque:server" or "#alias:server".
func roomIDOrAlias(s string) error {
	if s == "" {
		return nil
	}
	if len(s) > 255 {
		return errors.New("longer than 255 bytes")
	}
	if !strings.HasPrefix(s, "!") && !strings.HasPrefix(s, "#") {
		return fmt.Errorf("%q is neither a room ID (!id:server) nor an alias (#alias:server)", s)
	}
	local, server, ok := strings.Cut(s[1:], ":")
	if !ok || local == "" || server == "" {
		return fmt.Errorf("%q is missing its :server part", s)
	}
	return nil
}

func init() {
	crossChecks = append(crossChecks, checkHousehold)
}

// checkHousehold: a group call needs a room.
func checkHousehold(c *Config, at lineOf) []Problem {
	if c.Household.GroupCall != "off" && c.Household.GroupCall != "" && c.Household.Room == "" {
		return []Problem{{File: c.Path, Line: max(at("household.group_call"), 1), Key: "household.room",
			Msg: "household.group_call: " + c.Household.GroupCall + " needs household.room"}}
	}
	return nil
}
