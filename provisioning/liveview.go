package provisioning

// LiveView is who may call the intercom to see and hear the door.
type LiveView struct {
	// Allowed lists the users whose calls the intercom answers by itself;
	// empty means every resident. Calls from anyone else are rejected.
	Allowed []string
}

// LiveViewAllowed returns the users who may watch the door: the
// configured list, or the residents when none is configured.
func (c *Config) LiveViewAllowed() []string {
	if len(c.LiveView.Allowed) > 0 {
		return c.LiveView.Allowed
	}
	return c.Residents
}
