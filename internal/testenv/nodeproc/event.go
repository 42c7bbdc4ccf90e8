package nodeproc

import (
	"encoding/json"
	"fmt"
	"time"
)

// Event is one JSON line of a driver's stdout: an event of the page (or of
// a frame in it), or the reply to a command ("reply").
type Event struct {
	Name   string
	TS     time.Time      // the page's Date.now() when it emitted the event
	Fields map[string]any // every other field of the JSON object, as encoding/json decodes it
	Raw    json.RawMessage
}

// Str returns a string field, or "" if it is absent or not a string.
func (e Event) Str(key string) string {
	s, _ := e.Fields[key].(string)
	return s
}

// Bool returns a boolean field, or false if it is absent or not a bool.
func (e Event) Bool(key string) bool {
	b, _ := e.Fields[key].(bool)
	return b
}

// Num returns a numeric field, or 0 if it is absent or not a number.
func (e Event) Num(key string) float64 {
	f, _ := e.Fields[key].(float64)
	return f
}

// CallID returns the event's "callId", which the resident's classic-call
// events carry; "" for events about no call.
func (e Event) CallID() string { return e.Str("callId") }

// Decode unmarshals the whole event object into v.
func (e Event) Decode(v any) error { return json.Unmarshal(e.Raw, v) }

func (e Event) String() string { return fmt.Sprintf("%s %s", e.Name, e.Raw) }

// ParseEvent decodes one line of a driver's stdout: a JSON object with a
// non-empty string "event" and a numeric "ts" in milliseconds since the
// epoch (0 when absent).
func ParseEvent(line []byte) (Event, error) {
	var fields map[string]any
	if err := json.Unmarshal(line, &fields); err != nil {
		return Event{}, fmt.Errorf("decode event %q: %w", line, err)
	}
	name, _ := fields["event"].(string)
	if name == "" {
		return Event{}, fmt.Errorf("decode event %q: no event name", line)
	}
	ts, _ := fields["ts"].(float64)
	delete(fields, "event")
	delete(fields, "ts")
	return Event{Name: name, TS: time.UnixMilli(int64(ts)), Fields: fields, Raw: append(json.RawMessage(nil), line...)}, nil
}
