package daemon

import (
	"testing"

	"github.com/doorbell/intercom/callengine/group"
	"github.com/doorbell/intercom/provisioning"
	"github.com/doorbell/intercom/provisioning/provisioningtest"
)

// TestHouseholdLimitDefaults: provisioning cannot import callengine/group,
// so the defaults of household.max_devices_per_user and
// household.max_calls are written twice; they must agree.
func TestHouseholdLimitDefaults(t *testing.T) {
	cfg, err := provisioning.Parse("intercom.yaml", []byte(provisioningtest.Minimal), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Household.MaxDevicesPerUser != group.DefaultMaxDevicesPerUser || cfg.Household.MaxCalls != group.DefaultMaxCalls {
		t.Fatalf("provisioning defaults %d devices, %d calls; callengine/group's %d, %d",
			cfg.Household.MaxDevicesPerUser, cfg.Household.MaxCalls, group.DefaultMaxDevicesPerUser, group.DefaultMaxCalls)
	}
}
