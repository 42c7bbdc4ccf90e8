package provisioning

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// relayKeys are the keys ParseRelay reads.
var relayKeys = []string{"hardware.gpio", "gpio.relay", "gpio.relay_active"}

// RelaySettings is what driving the door relay off needs from a
// configuration file: whether GPIO is simulated, the relay's pin and its
// active level. A key absent from the file has its default.
type RelaySettings struct {
	GPIO        string // hardware.gpio: "sim" or "periph"
	Relay       string // gpio.relay: "" when no relay is fitted
	RelayActive string // gpio.relay_active: "high" or "low"

	// Unknown lists the keys among these three whose value could not be
	// read; their fields hold the default, and the problems say why.
	Unknown []string
}

// Known reports whether key (one of the three) was read.
func (s RelaySettings) Known(key string) bool { return !slices.Contains(s.Unknown, key) }

// ParseRelay reads from the configuration file at path the relay settings
// only: hardware.gpio, gpio.relay and gpio.relay_active. It is for
// `intercom relay-off`, which runs after the daemon stopped, crashes
// included, possibly after an edit that broke the file: the strike must be
// released whatever is wrong with the rest of it. So every other key is
// ignored, valid or not; and when the file is not valid YAML at all, the
// top-level hardware and gpio sections are read on their own.
//
// The error is Problems (errors.Is ErrInvalidConfig) about those keys, and
// about the file's syntax when it kept them from being read the usual way;
// or the error reading the file, with every key unknown. The settings are
// returned in every case.
func ParseRelay(path string) (RelaySettings, error) {
	data, err := readFileLimited(path, maxConfigSize)
	var dir string
	if err == nil {
		dir, err = filepath.Abs(filepath.Dir(path))
	}
	if err != nil {
		r := newRelayReader(path, "")
		r.unknown = slices.Clone(relayKeys)
		return r.settings(), fmt.Errorf("read config: %w", err)
	}
	return parseRelay(path, data, dir)
}

// parseRelay is ParseRelay on data read from the file name in dir.
func parseRelay(name string, data []byte, dir string) (RelaySettings, error) {
	r := newRelayReader(name, dir)
	if len(data) > maxConfigSize {
		r.add(1, "", fmt.Sprintf("file is larger than %d bytes; read as far as that", maxConfigSize))
		data = data[:maxConfigSize]
	}
	if root, err := parseOne(data); err == nil {
		r.walk(root, 0)
	} else {
		// A broken line elsewhere must not hide the relay: read the
		// sections that hold it, each on its own.
		r.add(err.line, "", err.msg+"; reading the hardware and gpio sections on their own")
		for _, b := range topLevelBlocks(data, "hardware", "gpio") {
			root, err := parseOne(b.data)
			if err != nil {
				r.add(b.first+err.line-1, "", err.msg)
				r.unreadable(b.name)
				continue
			}
			r.walk(root, b.first-1)
		}
	}
	for _, key := range relayKeys {
		r.decode(key)
	}
	if len(r.probs) > 0 {
		return r.settings(), normalize(r.probs)
	}
	return r.settings(), nil
}

// newRelayReader returns a reader with the relay keys' defaults.
func newRelayReader(name, dir string) *relayReader {
	r := &relayReader{file: name, dir: dir, cfg: &Config{}, values: map[string]located{}, seen: map[string]int{}}
	for _, key := range relayKeys {
		r.field(key).setDefault(r.cfg)
	}
	return r
}

func (r *relayReader) settings() RelaySettings {
	return RelaySettings{GPIO: r.cfg.Hardware.GPIO, Relay: r.cfg.GPIO.Relay, RelayActive: r.cfg.GPIO.RelayActive, Unknown: r.unknown}
}

// field returns the schema's entry for key.
func (r *relayReader) field(key string) *field {
	return &schema[slices.IndexFunc(schema, func(f field) bool { return f.key == key })]
}

// relayReader collects the relay keys' values and their problems.
type relayReader struct {
	file, dir string
	cfg       *Config
	probs     Problems
	values    map[string]located // relay key → its value
	seen      map[string]int     // section or relay key → the line it was set on
	unknown   []string
}

// located is a value node and what to add to its line (a section read on
// its own starts at line 1).
type located struct {
	n      *yaml.Node
	offset int
}

func (r *relayReader) add(line int, key, msg string) {
	r.probs = append(r.probs, Problem{File: r.file, Line: max(line, 1), Key: printable(key), Msg: printable(msg)})
}

func (r *relayReader) setUnknown(key string) {
	if !slices.Contains(r.unknown, key) {
		r.unknown = append(r.unknown, key)
	}
}

// unreadable marks every relay key of section as unknown.
func (r *relayReader) unreadable(section string) {
	for _, key := range relayKeys {
		if parent, _ := splitKey(key); parent == section {
			r.setUnknown(key)
		}
	}
}

// walk records the relay keys of the top-level mapping root.
func (r *relayReader) walk(root *yaml.Node, offset int) {
	if root == nil {
		return
	}
	for _, section := range []string{"hardware", "gpio"} {
		v, ok := r.child(root, section, section, offset)
		switch {
		case !ok:
			r.unreadable(section)
			continue
		case v == nil || v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null":
			continue // absent, or every key commented out
		case v.Kind != yaml.MappingNode:
			r.add(v.Line+offset, section, "must be a mapping of keys to values; got "+describe(v))
			r.unreadable(section)
			continue
		}
		if i := slices.IndexFunc(v.Content, func(k *yaml.Node) bool { return k.ShortTag() == "!!merge" }); i >= 0 && i%2 == 0 {
			// As Parse: a merged key could be the relay's.
			r.add(v.Content[i].Line+offset, section+".<<", "merge keys (<<) are not supported; write the keys out")
			r.unreadable(section)
			continue
		}
		for _, key := range relayKeys {
			parent, last := splitKey(key)
			if parent != section {
				continue
			}
			switch kv, ok := r.child(v, last, key, offset); {
			case !ok:
				r.setUnknown(key)
			case kv != nil:
				r.values[key] = located{kv, offset}
			}
		}
	}
}

// child returns the value of name in the mapping m, nil when it is absent;
// key is its dotted path. ok is false when it is set twice, also across
// sections read on their own.
func (r *relayReader) child(m *yaml.Node, name, key string, offset int) (v *yaml.Node, ok bool) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		k := deref(m.Content[i])
		if k.Kind != yaml.ScalarNode || k.Value != name {
			continue
		}
		line := k.Line + offset
		if first, dup := r.seen[key]; dup {
			r.add(line, key, fmt.Sprintf("is set twice (first on line %d)", first))
			return nil, false
		}
		r.seen[key] = line
		v = deref(m.Content[i+1])
	}
	return v, true
}

// decode decodes a relay key's value with the schema's own decoder and
// checks, as Parse would.
func (r *relayReader) decode(key string) {
	loc, found := r.values[key]
	if !found || slices.Contains(r.unknown, key) {
		return
	}
	n, line := loc.n, loc.n.Line+loc.offset
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		r.add(line, key, "has no value")
		r.setUnknown(key)
		return
	}
	if err := r.field(key).decode(r.cfg, n, r.dir); err != nil {
		r.add(line, key, err.Error())
		r.setUnknown(key)
	}
}

// block is one top-level section of a file, as text.
type block struct {
	name  string
	first int // its first line, from 1
	data  []byte
}

// topLevelBlocks cuts data into its top-level entries (a line that starts
// in the first column begins one; comments and blank lines do not) and
// returns those named names. It is the fallback for a file the YAML parser
// refuses as a whole: a broken line then costs only its own section.
func topLevelBlocks(data []byte, names ...string) []block {
	var out []block
	cur := -1 // index in out of the block being read
	for i, l := range bytes.SplitAfter(data, []byte("\n")) {
		if len(l) > 0 && !strings.ContainsRune(" \t#\r\n", rune(l[0])) {
			cur = -1
			name, _, ok := bytes.Cut(l, []byte(":"))
			if n := string(bytes.TrimSpace(name)); ok && slices.Contains(names, n) {
				out = append(out, block{name: n, first: i + 1})
				cur = len(out) - 1
			}
		}
		if cur >= 0 {
			out[cur].data = append(out[cur].data, l...)
		}
	}
	return out
}
