package nodeproc

import (
	"testing"
)

func TestParseEvent(t *testing.T) {
	for _, tc := range []struct {
		line    string
		name    string
		wantErr bool
	}{
		{line: `{"event":"ring","ts":1724312345678,"roomId":"!r:hs","live":true}`, name: "ring"},
		{line: `{"event":"frameStats","ts":1,"framesDecoded":3}`, name: "frameStats"},
		{line: `{"event":"ready"}`, name: "ready"},
		{line: `{"ts":1}`, wantErr: true},
		{line: `{"event":""}`, wantErr: true},
		{line: `{"event":7}`, wantErr: true},
		{line: `[1]`, wantErr: true},
		{line: `not json`, wantErr: true},
	} {
		ev, err := ParseEvent([]byte(tc.line))
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseEvent(%s): error %v, want error %v", tc.line, err, tc.wantErr)
			continue
		}
		if err == nil && ev.Name != tc.name {
			t.Errorf("ParseEvent(%s): name %q, want %q", tc.line, ev.Name, tc.name)
		}
	}
	ev, err := ParseEvent([]byte(`{"event":"incoming","ts":1724312345678,"roomId":"!r:hs","callId":"c1","live":true,"n":2.5}`))
	if err != nil {
		t.Fatal(err)
	}
	if ev.TS.UnixMilli() != 1724312345678 || ev.Str("roomId") != "!r:hs" || !ev.Bool("live") || ev.Num("n") != 2.5 || ev.CallID() != "c1" {
		t.Errorf("ParseEvent: %+v", ev)
	}
	if _, ok := ev.Fields["event"]; ok {
		t.Errorf("Fields keep the event name: %v", ev.Fields)
	}
	var whole struct {
		Event  string `json:"event"`
		RoomID string `json:"roomId"`
	}
	if err := ev.Decode(&whole); err != nil || whole.Event != "incoming" || whole.RoomID != "!r:hs" {
		t.Errorf("Decode: %+v, %v", whole, err)
	}
	if ev.Str("n") != "" || ev.Num("roomId") != 0 || ev.Bool("missing") {
		t.Error("accessors of the wrong type are not zero")
	}
}

// FuzzParseEvent feeds ParseEvent what a driver (or a page that has gone
// wrong) might print: it must never panic, and what it accepts has a name,
// no "event" or "ts" among its fields, and the line as Raw.
func FuzzParseEvent(f *testing.F) {
	for _, s := range []string{
		`{"event":"ring","ts":1724312345678,"roomId":"!r:hs","live":true}`,
		`{"event":"reply","id":3,"error":"x"}`,
		`{"event":"stats","ts":1e300}`,
		`{"event":"x","ts":-1,"fields":{"a":[1,2,{"b":null}]}}`,
		`{}`, `null`, `"event"`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		ev, err := ParseEvent(line)
		if err != nil {
			return
		}
		if ev.Name == "" || string(ev.Raw) != string(line) {
			t.Fatalf("ParseEvent(%q) = %+v", line, ev)
		}
		if _, ok := ev.Fields["event"]; ok {
			t.Fatalf("ParseEvent(%q) kept the name in Fields", line)
		}
		if _, ok := ev.Fields["ts"]; ok {
			t.Fatalf("ParseEvent(%q) kept ts in Fields", line)
		}
		_ = ev.String()
		_ = ev.CallID()
	})
}
