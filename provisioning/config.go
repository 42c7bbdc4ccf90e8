package provisioning

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// maxConfigSize bounds how much of a configuration file is read. Real files
// are a few hundred bytes; the bound keeps a mistaken path such as /dev/zero
// from exhausting memory.
const maxConfigSize = 1 << 20

// Config is the intercom's configuration, as read from its YAML file. The
// zero value is not useful; use Load or Parse.
type Config struct {
	Path      string // file it was loaded from
	Matrix    Matrix
	StateDir  string   // resolved relative to the config file's directory
	Residents []string // Matrix user IDs, at least one, no duplicates
	Ring      Ring
	Door      Door
	Notices   Notices
	History   History
	TURN      TURN
	LiveView  LiveView
	Household Household // household.go
	MatrixRTC MatrixRTC // matrixrtc.go
	Hardware  Hardware
	GPIO      GPIOPins // hardware.gpio: periph
	Camera    Camera   // hardware.camera: v4l2
	Audio     Audio    // hardware.audio: alsa
	API       API      // api.go
	MQTT      MQTT     // mqtt.go
	Video     Video
	Log       Log

	// ResidentPaths are the paths (PathClassic, PathMatrixRTC) of the
	// residents whose entry names them; every other resident is rung on
	// every path. Read it through RingsOn.
	ResidentPaths map[string][]string

	// Warnings are problems that do not stop the intercom, such as a secret
	// file other users can read. check-config prints them; the daemon logs
	// them.
	Warnings []Problem

	// lines maps each key present in the file to the line it was set on, so
	// that LoadSecrets can place its problems too.
	lines map[string]int
}

// Matrix is how the intercom reaches its homeserver.
type Matrix struct {
	Homeserver      string // http(s) URL, required
	UserID          string // "@local:server", required
	PasswordFile    string // path, resolved relative to config dir
	AccessTokenFile string // path, resolved relative to config dir
	DeviceName      string // default "Intercom"; also the direct rooms' name
	RoomAvatar      string // PNG or JPEG for the direct rooms; "" leaves avatars alone
	Encryption      bool   // end-to-end encryption, default true
	ShareKeys       string // "all" (default) or "cross_signed": devices that get room keys

	// The secrets themselves are never in the file, only where to find them,
	// so that the configuration can be shown, logged and version-controlled.
	Password    string `yaml:"-" json:"-"` // from PasswordFile or env INTERCOM_MATRIX_PASSWORD
	AccessToken string `yaml:"-" json:"-"` // from AccessTokenFile or env INTERCOM_MATRIX_ACCESS_TOKEN
}

// Ring is how a visitor's ring reaches residents.
type Ring struct {
	// Timeout is how long residents' devices ring, and the lifetime of the
	// m.call.invite.
	Timeout time.Duration
}

// Hardware selects the drivers. The simulated ones let the intercom run on
// a development machine.
type Hardware struct {
	GPIO   string // "sim" or "periph"
	Camera string // "testpattern" or "v4l2"
	Audio  string // "tone" or "alsa"
}

// GPIOPins names the pins of the periph backend and their active levels
// ("high" or "low"). An empty name means not fitted.
type GPIOPins struct {
	Button, ButtonActive string
	Debounce             time.Duration
	Ringer, RingerActive string
	Relay, RelayActive   string
}

// Camera is the V4L2 camera.
type Camera struct {
	Device string // e.g. /dev/video0
	Format string // "auto", "h264", "mjpeg" or "yuyv"
}

// Audio is the ALSA microphone and speaker.
type Audio struct {
	Capture, Playback             string // ALSA PCM names
	CaptureGainDB, PlaybackGainDB int
	Mute                          string // "none", "microphone", "speaker" or "both"
	// What cleans the microphone (media/aec): "all" runs the stages
	// switched on below, "none" none of them.
	Processing                                                string
	EchoCancellation, NoiseSuppression, GainControl, HighPass bool
}

// Stages reports which microphone processing stages run: none at all
// with processing: none.
func (a Audio) Stages() (echo, noise, gain, highPass bool) {
	if a.Processing == "none" {
		return false, false, false, false
	}
	return a.EchoCancellation, a.NoiseSuppression, a.GainControl, a.HighPass
}

// Door is who may open the door from Matrix, and how.
type Door struct {
	Commands          []string      // message bodies that open it, default ["!open"]
	Reaction          string        // reaction key on a ring notice, default 🔑
	Pulse             time.Duration // strike on-time, default 3s, at most 30s
	Authorized        []string      // default: the residents
	OnlyDuringCall    bool          // no ring window: commands only during a call
	Window            time.Duration // after a ring, default 3m; 0: only during a call
	ReplyUnauthorized bool
	// RequireCrossSigned obeys only encrypted commands from devices
	// their user cross-signed.
	RequireCrossSigned bool
}

// Notices are the messages posted into residents' rooms.
type Notices struct {
	Ring, Missed, Snapshot bool
}

// History is the visitor history kept in state_dir/history.
type History struct {
	Keep     int // visitors kept, newest first; 0: no history
	MaxBytes int // bytes on disk (records and snapshots), oldest dropped first
}

// TURN says where the ICE servers come from.
type TURN struct {
	FromHomeserver bool
	URIs           []string // replace the homeserver's when set
	Username       string
	PasswordFile   string
	// RelayOnly gathers relay candidates only (W3C WebRTC
	// iceTransportPolicy "relay"): media always go through the TURN
	// server, so no address of the door's network reaches the residents.
	RelayOnly bool
}

// Video is what the camera is asked for and what is sent to residents.
type Video struct {
	Width, Height, FPS int
	// Encoder targets in bits per second: the start of every call, and
	// the bounds within which the viewers' estimates move it.
	Bitrate, MinBitrate, MaxBitrate int
}

// Log configures logging.
type Log struct {
	Level string // "debug", "info", "warn" or "error"
}

// SlogLevel returns the level as a slog.Level.
func (l Log) SlogLevel() slog.Level {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.Level)); err != nil {
		return slog.LevelInfo
	}
	return lv
}

// Load reads the configuration file at path and the secrets it names. An
// unreadable file is reported as a wrapped I/O error; everything wrong with
// its content, or with the secrets, is reported together as Problems.
// Relative paths in the file are resolved against the file's directory.
func Load(path string) (*Config, error) {
	data, err := readFileLimited(path, maxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("resolve config directory: %w", err)
	}
	c, probs, ok := parse(path, data, dir)
	// Secrets are still checked when the rest of the file has problems, so
	// that one run of check-config lists everything; but not when the file
	// could not be read as YAML at all, as every secret would then look
	// unconfigured.
	if ok {
		if err := c.loadSecrets(os.LookupEnv); err != nil {
			var ps Problems
			if !errors.As(err, &ps) {
				return nil, err
			}
			probs = append(probs, ps...)
		}
	}
	if len(probs) > 0 {
		return nil, normalize(probs)
	}
	return c, nil
}

// Parse decodes a configuration from data. name is used in problem
// messages, dir to resolve relative paths. It does not read the secret files
// or the environment; call LoadSecrets for that.
//
// Parse returns either a valid Config or Problems listing everything wrong.
func Parse(name string, data []byte, dir string) (*Config, error) {
	c, probs, _ := parse(name, data, dir)
	if len(probs) > 0 {
		return nil, normalize(probs)
	}
	return c, nil
}

// normalize sorts problems by position and drops exact duplicates (Load
// finds some conflicts both while parsing and while reading secrets).
func normalize(ps Problems) Problems {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return strings.Compare(a.Key, b.Key)
	})
	return slices.Compact(ps)
}

// parser walks one document against the schema.
type parser struct {
	file     string
	dir      string
	cfg      *Config
	probs    Problems
	sections map[string]bool
	fields   map[string]*field
	broken   map[string]bool // sections present but not mappings
}

// parse returns the config decoded so far, its problems, and whether the
// data was a YAML mapping at all.
func parse(name string, data []byte, dir string) (*Config, Problems, bool) {
	p := &parser{
		file:     name,
		dir:      dir,
		cfg:      &Config{Path: name, lines: map[string]int{}},
		sections: sections(),
		fields:   map[string]*field{},
		broken:   map[string]bool{},
	}
	for i := range schema {
		f := &schema[i]
		p.fields[f.key] = f
		if f.setDefault != nil {
			f.setDefault(p.cfg)
		}
	}
	if len(data) > maxConfigSize {
		p.add(1, "", fmt.Sprintf("file is larger than %d bytes", maxConfigSize))
		return p.cfg, p.probs, false
	}
	root, ok := p.document(data)
	if !ok {
		return p.cfg, p.probs, false
	}
	if root != nil {
		p.mapping(root, "")
	}
	p.missing()
	// Keys that failed to decode keep their default or zero value, so the
	// cross checks see only values that are valid on their own.
	for _, chk := range crossChecks {
		p.probs = append(p.probs, chk(p.cfg, p.lineOf)...)
	}
	for _, chk := range warnChecks {
		p.cfg.Warnings = append(p.cfg.Warnings, chk(p.cfg, p.lineOf)...)
	}
	return p.cfg, p.probs, true
}

// yamlLine extracts the line from yaml.v3's "yaml: line N: msg" errors.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// document decodes data and returns its top-level mapping, nil for an empty
// file. ok is false if data is not a single YAML document holding a mapping.
func (p *parser) document(data []byte) (root *yaml.Node, ok bool) {
	root, err := parseOne(data)
	if err != nil {
		p.add(err.line, "", err.msg)
		return nil, false
	}
	return root, true
}

// syntaxError is a YAML document that could not be read, at a line.
type syntaxError struct {
	line int
	msg  string
}

// parseOne decodes data as one YAML document holding a mapping (or
// nothing: nil) and returns that mapping.
func parseOne(data []byte) (*yaml.Node, *syntaxError) {
	bad := func(err error) *syntaxError {
		line, msg := 1, strings.TrimPrefix(err.Error(), "yaml: ")
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			if l, err := strconv.Atoi(m[1]); err == nil {
				line, msg = l, m[2]
			}
		}
		return &syntaxError{line: line, msg: "invalid YAML: " + msg}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := safeDecode(dec, &doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, bad(err)
	}
	var extra yaml.Node
	switch err := safeDecode(dec, &extra); {
	case err == nil:
		return nil, &syntaxError{line: max(extra.Line, 1), msg: "only one YAML document is allowed (remove the ---)"}
	case !errors.Is(err, io.EOF):
		return nil, bad(err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, nil
	}
	root := deref(doc.Content[0])
	switch {
	case root.Kind == yaml.MappingNode:
		return root, nil
	case root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null":
		return nil, nil
	}
	return nil, &syntaxError{line: max(root.Line, 1), msg: "the file must be a mapping of keys to values; got " + describe(root)}
}

// safeDecode turns a panic inside the YAML library into an error. The
// library is well tested, but the file is edited by hand on devices and a
// malformed one must produce a message, not a crash loop.
func safeDecode(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: cannot parse: %v", r)
		}
	}()
	return dec.Decode(n)
}

// mapping checks every key of the mapping n, which is at prefix.
func (p *parser) mapping(n *yaml.Node, prefix string) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			p.add(k.Line, prefix, "keys must be plain names; got "+describe(k))
			continue
		}
		key := join(prefix, k.Value)
		if k.ShortTag() == "!!merge" {
			p.add(k.Line, key, "merge keys (<<) are not supported; write the keys out")
			continue
		}
		if first, dup := p.cfg.lines[key]; dup {
			p.add(k.Line, key, fmt.Sprintf("is set twice (first on line %d)", first))
			continue
		}
		switch f, isField := p.fields[key]; {
		case p.sections[key]:
			p.cfg.lines[key] = k.Line
			switch {
			case v.Kind == yaml.MappingNode:
				p.mapping(v, key)
			case v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null":
				// An empty section, e.g. every key commented out.
			default:
				p.broken[key] = true
				p.add(v.Line, key, "must be a mapping of keys to values; got "+describe(v))
			}
		case isField:
			p.cfg.lines[key] = k.Line
			p.value(f, v)
		default:
			p.add(k.Line, key, p.unknown(prefix, k.Value))
		}
	}
}

// value decodes v into the field f.
func (p *parser) value(f *field, v *yaml.Node) {
	if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
		msg := "has no value"
		if !f.required {
			msg += fmt.Sprintf("; remove the key to use the default (%s)", f.defaultText)
		}
		p.add(v.Line, f.key, msg)
		return
	}
	err := f.decode(p.cfg, v, p.dir)
	if err == nil {
		return
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		if ne, ok := e.(*nodeError); ok {
			p.add(ne.line, f.key+ne.suffix, ne.msg)
		} else {
			p.add(v.Line, f.key, e.Error())
		}
	}
}

// unknown explains an unknown key, suggesting the sibling it most likely
// misspells, or the section it belongs in.
func (p *parser) unknown(prefix, name string) string {
	msg := fmt.Sprintf("unknown key %q", name)
	var siblings, elsewhere []string
	for k := range p.knownKeys() {
		parent, last := splitKey(k)
		if parent == prefix {
			siblings = append(siblings, last)
		} else if editDistance(strings.ToLower(name), strings.ToLower(last)) <= max(1, len(last)/3) {
			elsewhere = append(elsewhere, k)
		}
	}
	slices.Sort(siblings)
	slices.Sort(elsewhere)
	if m := closest(name, siblings); m != "" {
		return msg + fmt.Sprintf("; did you mean %q?", m)
	}
	if len(elsewhere) > 0 {
		return msg + fmt.Sprintf(" here; did you mean %q?", elsewhere[0])
	}
	if len(siblings) > 0 {
		where := "at the top level"
		if prefix != "" {
			where = "in " + prefix
		}
		return msg + fmt.Sprintf("; known keys %s: %s", where, strings.Join(siblings, ", "))
	}
	return msg
}

func (p *parser) knownKeys() map[string]bool {
	keys := map[string]bool{}
	for k := range p.sections {
		keys[k] = true
	}
	for k := range p.fields {
		keys[k] = true
	}
	return keys
}

// missing reports required keys that are absent, at the line of the nearest
// enclosing section present in the file (line 1 for the top level).
func (p *parser) missing() {
	for _, f := range schema {
		if !f.required || p.cfg.lines[f.key] != 0 {
			continue
		}
		line, hidden := 1, false
		for parent, _ := splitKey(f.key); parent != ""; parent, _ = splitKey(parent) {
			if p.broken[parent] {
				hidden = true // already reported as not a mapping
				break
			}
			if l := p.cfg.lines[parent]; l != 0 && line == 1 {
				line = l
			}
		}
		if !hidden {
			p.add(line, f.key, "is required")
		}
	}
}

func (p *parser) lineOf(key string) int { return p.cfg.lines[key] }

func (p *parser) add(line int, key, msg string) {
	p.probs = append(p.probs, Problem{File: p.file, Line: max(line, 1), Key: printable(key), Msg: printable(msg)})
}

// printable keeps a problem on one line and free of control characters even
// when it quotes a hostile key.
func printable(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == 0xfffd }) < 0 {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// splitKey splits "a.b.c" into "a.b" and "c".
func splitKey(key string) (parent, last string) {
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		return key[:i], key[i+1:]
	}
	return "", key
}

// readFileLimited reads at most limit+1 bytes of a file, so that the caller
// can tell the file is too large without reading all of it.
func readFileLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readAllLimited(f, limit)
}

func readAllLimited(r io.Reader, limit int64) ([]byte, error) {
	return io.ReadAll(io.LimitReader(r, limit+1))
}

// checkOneSecretFile rejects configurations naming both a password and an
// access token: it would be unclear which one the intercom logs in with.
func checkOneSecretFile(c *Config, at lineOf) []Problem {
	if c.Matrix.PasswordFile != "" && c.Matrix.AccessTokenFile != "" {
		return []Problem{bothSecretFiles(c, at("matrix.access_token_file"))}
	}
	return nil
}

func bothSecretFiles(c *Config, line int) Problem {
	return Problem{File: c.Path, Line: max(line, 1), Key: "matrix.access_token_file",
		Msg: "set only one of matrix.password_file and matrix.access_token_file"}
}

// checkResidentsExcludeSelf rejects the intercom ringing itself.
func checkResidentsExcludeSelf(c *Config, at lineOf) []Problem {
	if slices.Contains(c.Residents, c.Matrix.UserID) {
		return []Problem{{File: c.Path, Line: max(at("residents"), 1), Key: "residents",
			Msg: fmt.Sprintf("lists %s, the intercom's own user ID", c.Matrix.UserID)}}
	}
	return nil
}
