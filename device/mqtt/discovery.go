package mqtt

import "fmt"

// Home Assistant MQTT discovery: one retained config per entity at
// <discovery prefix>/<component>/<node id>/<object id>/config, which
// Home Assistant's MQTT integration reads at start and whenever one
// arrives. Every entity only reads the intercom's topics: none has a
// command topic, so nothing in Home Assistant (or anyone else on the
// broker) can ring, hang up or open the door through MQTT.

// Entity is one discovery config: its topic and its JSON payload.
type Entity struct {
	Topic  string
	Config map[string]any
}

// DeviceInfo describes the intercom as a Home Assistant device.
type DeviceInfo struct {
	Name    string // shown as the device's name, e.g. matrix.device_name
	Version string // the build's version
}

// entities returns the discovery configs for the intercom whose topics
// are under prefix, named node (the slug: unique per homeserver).
func entities(discoveryPrefix, prefix, node string, dev DeviceInfo) []Entity {
	avail := prefix + "/" + topicAvailability
	device := map[string]any{
		"identifiers":  []string{"intercom_" + node},
		"name":         dev.Name,
		"manufacturer": "doorbell/intercom",
		"model":        "Matrix video intercom",
		"sw_version":   dev.Version,
	}
	origin := map[string]any{"name": "intercom", "sw_version": dev.Version}
	mk := func(component, object string, cfg map[string]any) Entity {
		cfg["unique_id"] = node + "_" + object
		// The entity ID Home Assistant gives it at discovery
		// (default_entity_id since HA 2025.10, which retired
		// object_id in 2026.4); a user's rename wins over it.
		cfg["default_entity_id"] = component + "." + node + "_" + object
		cfg["availability_topic"] = avail
		cfg["payload_available"], cfg["payload_not_available"] = online, offline
		cfg["qos"] = 1
		cfg["device"], cfg["origin"] = device, origin
		return Entity{Topic: fmt.Sprintf("%s/%s/%s/%s/config", discoveryPrefix, component, node, object), Config: cfg}
	}
	return []Entity{
		// The press: an event entity of device class doorbell, fed by
		// the press events themselves (the event's JSON is turned into
		// the {"event_type": …} Home Assistant expects).
		mk("event", "doorbell", map[string]any{
			"name":           "Doorbell",
			"device_class":   "doorbell",
			"event_types":    []string{"press"},
			"state_topic":    prefix + "/" + topicEvent + "press",
			"value_template": "{{ {'event_type': 'press', 'source': value_json.data.source} | tojson }}",
		}),
		// The door strike: energised (a resident opened the door) and
		// released.
		mk("event", "door", map[string]any{
			"name":           "Door",
			"icon":           "mdi:door-open",
			"event_types":    []string{"opened", "released"},
			"state_topic":    prefix + "/" + topicEvent + "relay",
			"value_template": "{{ {'event_type': 'opened' if value_json.data.on else 'released', 'by': value_json.data.sender | default('')} | tojson }}",
		}),
		mk("binary_sensor", "ringing", map[string]any{
			"name":           "Ringing",
			"icon":           "mdi:bell-ring",
			"state_topic":    prefix + "/" + topicState,
			"value_template": "{{ 'ON' if value_json.state == 'ringing' else 'OFF' }}",
			"payload_on":     "ON",
			"payload_off":    "OFF",
		}),
		mk("sensor", "call_state", map[string]any{
			"name":           "Call",
			"icon":           "mdi:phone",
			"device_class":   "enum",
			"options":        []string{"idle", "ringing", "in_call"},
			"state_topic":    prefix + "/" + topicState,
			"value_template": "{{ value_json.state }}",
		}),
		// The last visitor's outcome, with the whole record (when, who
		// answered, whether the door was opened) as attributes.
		mk("sensor", "last_visitor", map[string]any{
			"name":                  "Last visitor",
			"icon":                  "mdi:account-clock",
			"device_class":          "enum",
			"options":               []string{"ringing", "answered", "missed", "failed"},
			"state_topic":           prefix + "/" + topicLastVisitor,
			"value_template":        "{{ value_json.outcome }}",
			"json_attributes_topic": prefix + "/" + topicLastVisitor,
		}),
	}
}

// payload is e's config as JSON.
func (e Entity) payload() []byte { return mustJSON(e.Config) }
