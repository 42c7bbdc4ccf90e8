package provisioning

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"gopkg.in/yaml.v3"
)

// API is the local HTTP API. device.Guard enforces what it says: the
// token on every request when one is set, and the names the API may be
// addressed by.
type API struct {
	Listen string // host:port
	// TokenFile holds the bearer token every request must carry. It is
	// required unless Listen is a loopback address (checkAPIListen).
	TokenFile string
	// Hostnames are further names (or addresses) the API may be reached
	// by, without a port: the Host header of any other name is refused,
	// which is what stops DNS rebinding.
	Hostnames []string
	// WHEPMaxViewers bounds the viewers of the WHEP endpoint at once.
	WHEPMaxViewers int

	Token string `yaml:"-" json:"-"` // read from TokenFile by Load
}

// minTokenLen is the shortest API token accepted: 16 characters of
// base64 are 96 bits, beyond guessing over a network.
const minTokenLen = 16

// ListenLoopback reports whether the API listens on this machine only:
// its host is localhost or a loopback address. An empty host, an
// unspecified address, any other address and any other name (what it
// resolves to can change) count as reachable from other machines.
func (a API) ListenLoopback() bool {
	host, _, err := net.SplitHostPort(a.Listen)
	return err == nil && loopbackHost(host)
}

// plainAPI has API's fields without its methods, for formatting.
type plainAPI API

// String formats a with the token redacted.
func (a API) String() string {
	a.Token = redact(a.Token)
	return fmt.Sprintf("%+v", plainAPI(a))
}

// GoString is String, so that %#v does not print the token either.
func (a API) GoString() string { return "provisioning.API" + a.String() }

// LogValue implements slog.LogValuer.
func (a API) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("listen", a.Listen),
		slog.String("token_file", a.TokenFile),
		slog.Any("hostnames", a.Hostnames),
		slog.Int("whep_max_viewers", a.WHEPMaxViewers),
		slog.String("token", redact(a.Token)),
	)
}

// loadAPIToken reads api.token_file, like the Matrix secrets (mode
// warning, one line), and checks that it can be sent as a bearer token
// (RFC 6750, section 2.1: b64token, here any visible ASCII) and is long
// enough not to be guessed.
func (c *Config) loadAPIToken(probs *Problems) {
	c.API.Token = ""
	if c.API.TokenFile == "" {
		return
	}
	tok, _ := c.secret("api.token_file", c.API.TokenFile, "", nil, probs)
	if tok == "" {
		return
	}
	bad := func(msg string) {
		*probs = append(*probs, Problem{File: c.Path, Line: c.line("api.token_file"), Key: "api.token_file", Msg: msg})
	}
	const hint = "; make one with: (umask 077; head -c 24 /dev/urandom | base64 > "
	switch {
	case strings.IndexFunc(tok, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0:
		bad(fmt.Sprintf("the token in %s must be printable ASCII without spaces%s%s)", c.API.TokenFile, hint, c.API.TokenFile))
	case len(tok) < minTokenLen:
		bad(fmt.Sprintf("the token in %s is %d characters long; use at least %d%s%s)", c.API.TokenFile, len(tok), minTokenLen, hint, c.API.TokenFile))
	default:
		c.API.Token = tok
	}
}

// hostNameList decodes api.hostnames: host names or IP addresses, without
// a port or a scheme, each reported at its own line.
func hostNameList(n *yaml.Node, dir string) ([]string, error) {
	names, err := stringList(1, 16, 253)(n, dir)
	if err != nil {
		return nil, err
	}
	var errs []error
	for i, s := range names {
		if err := hostName(s); err != nil {
			errs = append(errs, &nodeError{line: deref(n.Content[i]).Line, suffix: fmt.Sprintf("[%d]", i), msg: err.Error()})
		}
	}
	return names, errors.Join(errs...)
}

// hostName accepts what a Host header names without its port: an IP
// address (IPv6 with or without brackets) or a DNS name.
func hostName(s string) error {
	if _, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		return nil
	}
	if strings.ContainsAny(s, ":/") {
		return fmt.Errorf("%q must be a host name or address without a port or scheme, such as \"intercom.local\"", s)
	}
	labels := strings.Split(strings.TrimSuffix(s, "."), ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' ||
			strings.IndexFunc(l, func(r rune) bool {
				return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-')
			}) >= 0 {
			return fmt.Errorf("%q is not a host name", s)
		}
	}
	return nil
}

func init() {
	crossChecks = append(crossChecks, checkAPIListen)
}

// checkAPIListen refuses an API reachable from other machines without a
// token: anyone on the network, and any web page a household member
// visits, could otherwise ring, hang up calls and watch the camera
// (issue 19, finding 7).
func checkAPIListen(c *Config, at lineOf) []Problem {
	if c.API.ListenLoopback() || c.API.TokenFile != "" {
		return nil
	}
	return []Problem{{File: c.Path, Line: max(at("api.listen"), at("api"), 1), Key: "api.listen",
		Msg: fmt.Sprintf("%q is reachable from other machines; set api.token_file (every request must then carry the token) or listen on 127.0.0.1", c.API.Listen)}}
}
