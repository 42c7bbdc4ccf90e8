package provisioning

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const relayPart = "hardware:\n  gpio: periph\ngpio:\n  button: GPIO17\n  relay: GPIO27\n  relay_active: low\n"

// ParseRelay reads the relay settings whatever is wrong elsewhere in the
// file, reports only their own problems (and a syntax error that made it
// read the sections on their own), and says which settings it could not
// read rather than guessing them.
func TestParseRelay(t *testing.T) {
	periph := RelaySettings{GPIO: "periph", Relay: "GPIO27", RelayActive: "low"}
	for _, tc := range []struct {
		name, data string
		want       RelaySettings
		problems   []string // "LINE: key: message prefix"
	}{
		{name: "valid file", data: minimal + relayPart, want: periph},
		{name: "defaults", data: minimal, want: RelaySettings{GPIO: "sim", RelayActive: "high"}},
		{name: "empty file", data: "", want: RelaySettings{GPIO: "sim", RelayActive: "high"}},
		{name: "only the relay", data: relayPart, want: periph},
		{name: "unrelated keys broken", data: "bogus: 1\nresidents: 3\n" + relayPart + "video: {fps: 99}\n", want: periph},
		{name: "unrelated gpio keys broken", data: strings.Replace(relayPart, "button: GPIO17", "button: [1]\n  debounce: 5", 1),
			want: periph},
		{name: "syntax error after", data: relayPart + "residents:\n\t- x\n", want: periph,
			problems: []string{"8: invalid YAML: found character that cannot start any token; reading the hardware and gpio sections on their own"}},
		{name: "syntax error before", data: "residents: [\"@a:b\"\nmatrix: {\n" + relayPart, want: periph,
			problems: []string{"invalid YAML"}},
		{name: "syntax error in gpio", data: relayPart + "  bad: [\n",
			want:     RelaySettings{GPIO: "periph", RelayActive: "high", Unknown: []string{"gpio.relay", "gpio.relay_active"}},
			problems: []string{"invalid YAML", "invalid YAML"}},
		{name: "two documents", data: relayPart + "---\nresidents: []\n", want: periph,
			problems: []string{"7: only one YAML document"}},
		{name: "relay_active misspelt", data: strings.Replace(relayPart, "relay_active: low", "relay_active: lwo", 1),
			want:     RelaySettings{GPIO: "periph", Relay: "GPIO27", RelayActive: "high", Unknown: []string{"gpio.relay_active"}},
			problems: []string{`6: gpio.relay_active: "lwo" is not one of high, low`}},
		{name: "relay not a string", data: strings.Replace(relayPart, "relay: GPIO27", "relay: 27", 1),
			want:     RelaySettings{GPIO: "periph", RelayActive: "low", Unknown: []string{"gpio.relay"}},
			problems: []string{"5: gpio.relay: must be a string"}},
		{name: "relay set twice", data: relayPart + "  relay: GPIO22\n",
			want:     RelaySettings{GPIO: "periph", RelayActive: "low", Unknown: []string{"gpio.relay"}},
			problems: []string{"7: gpio.relay: is set twice (first on line 5)"}},
		{name: "gpio section twice, file broken", data: relayPart + "gpio:\n  relay: GPIO22\nresidents:\n\t- x\n",
			want:     RelaySettings{GPIO: "periph", RelayActive: "high", Unknown: []string{"gpio.relay", "gpio.relay_active"}},
			problems: []string{"7: gpio: is set twice (first on line 3)", "invalid YAML"}},
		{name: "gpio not a mapping", data: "hardware: {gpio: periph}\ngpio: GPIO27\n",
			want:     RelaySettings{GPIO: "periph", RelayActive: "high", Unknown: []string{"gpio.relay", "gpio.relay_active"}},
			problems: []string{"2: gpio: must be a mapping"}},
		{name: "merge key in gpio", data: "pins: &p {relay: GPIO27}\ngpio:\n  <<: *p\n",
			want:     RelaySettings{GPIO: "sim", RelayActive: "high", Unknown: []string{"gpio.relay", "gpio.relay_active"}},
			problems: []string{"3: gpio.<<: merge keys"}},
		{name: "hardware.gpio misspelt", data: strings.Replace(relayPart, "gpio: periph", "gpio: perihp", 1),
			want:     RelaySettings{GPIO: "sim", Relay: "GPIO27", RelayActive: "low", Unknown: []string{"hardware.gpio"}},
			problems: []string{`2: hardware.gpio: "perihp" is not one of sim, periph; did you mean "periph"?`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "intercom.yaml")
			if err := os.WriteFile(path, []byte(tc.data), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := ParseRelay(path)
			slices.Sort(got.Unknown)
			if !equalSettings(got, tc.want) {
				t.Errorf("settings %+v, want %+v", got, tc.want)
			}
			var ps Problems
			if err != nil && (!errors.As(err, &ps) || !errors.Is(err, ErrInvalidConfig)) {
				t.Fatalf("error %v is not Problems", err)
			}
			if len(ps) != len(tc.problems) {
				t.Fatalf("problems:\n%v\nwant %q", err, tc.problems)
			}
			for i, p := range ps {
				if s := strings.TrimPrefix(p.String(), path+":"); !strings.HasPrefix(s, tc.problems[i]) && !strings.Contains(s, tc.problems[i]) {
					t.Errorf("problem %q, want %q", s, tc.problems[i])
				}
			}
		})
	}
}

func equalSettings(a, b RelaySettings) bool {
	return a.GPIO == b.GPIO && a.Relay == b.Relay && a.RelayActive == b.RelayActive && slices.Equal(a.Unknown, b.Unknown)
}

// A missing file leaves every relay setting unknown.
func TestParseRelayNoFile(t *testing.T) {
	s, err := ParseRelay(filepath.Join(t.TempDir(), "missing.yaml"))
	if err == nil || errors.Is(err, ErrInvalidConfig) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("error %v, want the read error", err)
	}
	for _, k := range relayKeys {
		if s.Known(k) {
			t.Errorf("%s known without a file", k)
		}
	}
}

// FuzzParseRelay: relay-off's reader never panics, reports problems as
// Parse does, and agrees with Parse on every file Parse accepts.
func FuzzParseRelay(f *testing.F) {
	for _, s := range []string{
		minimal + relayPart,
		relayPart + "residents:\n\t- x\n",
		relayPart + "gpio:\n  relay: GPIO22\n",
		"gpio: &g {relay: GPIO27}\nhardware: {gpio: periph}\nx: *g\n",
		"gpio:\n  <<: {relay: X}\n",
		"---\ngpio: {relay: A}\n---\n",
		"gpio:\n relay: A\n  relay_active: low\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := parseRelay("f.yaml", data, "/etc/intercom")
		if err != nil {
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("error %T %v is not a non-empty Problems", err, err)
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(ps) {
				t.Fatalf("%d problems printed on %d lines:\n%s", len(ps), n, err)
			}
			for _, p := range ps {
				if p.File != "f.yaml" || p.Line < 1 || p.Msg == "" {
					t.Fatalf("malformed problem %#v", p)
				}
			}
		} else if len(s.Unknown) > 0 {
			t.Fatalf("unknown keys %v without a problem", s.Unknown)
		}
		c, perr := Parse("f.yaml", data, "/etc/intercom")
		if perr != nil {
			return
		}
		if err != nil {
			t.Fatalf("Parse accepts the file, ParseRelay has problems:\n%v", err)
		}
		if s.GPIO != c.Hardware.GPIO || s.Relay != c.GPIO.Relay || s.RelayActive != c.GPIO.RelayActive {
			t.Fatalf("ParseRelay %+v, Parse %+v %+v", s, c.Hardware, c.GPIO)
		}
	})
}
