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
