package provisioning

import (
	"strings"
	"testing"
)

func TestHouseholdKeys(t *testing.T) {
	for _, c := range []struct {
		yaml, room, mode, problem string
	}{
		{"", "", "off", ""},
		{"household:\n  room: \"#home:example.org\"\n  group_call: mesh\n", "#home:example.org", "mesh", ""},
		{"household:\n  room: \"!abc:example.org\"\n", "!abc:example.org", "off", ""},
		{"household:\n  group_call: mesh\n", "", "mesh", "needs household.room"},
		{"household:\n  room: home\n", "", "off", "neither a room ID"},
		{"household:\n  room: \"#home:example.org\"\n  group_call: sfu\n", "", "", "household.group_call"},
	} {
		cfg, err := Parse("intercom.yaml", []byte(minimal+c.yaml), "/etc/intercom")
		if c.problem != "" {
			if err == nil || !strings.Contains(err.Error(), c.problem) {
				t.Errorf("%q: err %v, want %q", c.yaml, err, c.problem)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.yaml, err)
			continue
		}
		if cfg.Household.Room != c.room || cfg.Household.GroupCall != c.mode {
			t.Errorf("%q: household %+v", c.yaml, cfg.Household)
		}
	}
}

// TestHouseholdLimits: the mesh's caps (issue 19, finding 5) default to
// callengine/group's and stay within their bounds.
func TestHouseholdLimits(t *testing.T) {
	for _, c := range []struct {
		yaml           string
		devices, calls int
		problem        string
	}{
		{"", 4, 16, ""},
		{"household:\n  max_devices_per_user: 2\n  max_calls: 8\n", 2, 8, ""},
		{"household:\n  max_devices_per_user: 0\n", 0, 0, "household.max_devices_per_user"},
		{"household:\n  max_devices_per_user: 17\n", 0, 0, "household.max_devices_per_user"},
		{"household:\n  max_calls: 0\n", 0, 0, "household.max_calls"},
		{"household:\n  max_calls: 65\n", 0, 0, "household.max_calls"},
	} {
		cfg, err := Parse("intercom.yaml", []byte(minimal+c.yaml), "/etc/intercom")
		if c.problem != "" {
			if err == nil || !strings.Contains(err.Error(), c.problem) {
				t.Errorf("%q: err %v, want %q", c.yaml, err, c.problem)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.yaml, err)
			continue
		}
		if cfg.Household.MaxDevicesPerUser != c.devices || cfg.Household.MaxCalls != c.calls {
			t.Errorf("%q: household %+v", c.yaml, cfg.Household)
		}
	}
}
