package provisioning

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Decoders accept only the YAML type they expect. Quietly turning 123 into
// "123" or "60" into 60 would hide the mistakes strict parsing is meant to
// catch; the messages say how to write the value instead.

func str(n *yaml.Node, _ string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		msg := "must be a string; got " + describe(n)
		if n.Kind == yaml.ScalarNode {
			msg += fmt.Sprintf(" (write %q to use it as text)", n.Value)
		}
		return "", errors.New(msg)
	}
	return n.Value, nil
}

// path is a file or directory name, resolved against dir (the directory of
// the configuration file) when relative, so the service does not depend on
// its working directory.
func path(n *yaml.Node, dir string) (string, error) {
	s, err := str(n, dir)
	if err != nil {
		return "", err
	}
	if s == "" {
		return "", errors.New("must not be empty")
	}
	if strings.ContainsRune(s, 0) {
		return "", errors.New("must not contain a NUL byte")
	}
	if !filepath.IsAbs(s) {
		s = filepath.Join(dir, s)
	}
	return filepath.Clean(s), nil
}

func duration(n *yaml.Node, dir string) (time.Duration, error) {
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!int", "!!float":
			return 0, fmt.Errorf("%s is not a duration; add a unit, e.g. %q", n.Value, n.Value+"s")
		}
	}
	s, err := str(n, dir)
	if err != nil {
		return 0, errors.New("must be a duration such as \"60s\"; got " + describe(n))
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (write e.g. \"60s\" or \"1m30s\")", s)
	}
	return d, nil
}

func integer(n *yaml.Node, _ string) (int, error) {
	if n.Kind != yaml.ScalarNode {
		return 0, errors.New("must be a whole number; got " + describe(n))
	}
	switch n.ShortTag() {
	case "!!int":
		var v int64
		if err := n.Decode(&v); err != nil || v > math.MaxInt32 || v < math.MinInt32 {
			return 0, fmt.Errorf("%s is out of range", n.Value)
		}
		return int(v), nil
	case "!!str":
		if _, err := strconv.Atoi(n.Value); err == nil {
			return 0, fmt.Errorf("must be a number, not the string %q (remove the quotes)", n.Value)
		}
	}
	return 0, errors.New("must be a whole number; got " + describe(n))
}

// oneOf returns a decoder for an enumeration.
func oneOf(allowed ...string) decoder[string] {
	return func(n *yaml.Node, dir string) (string, error) {
		s, err := str(n, dir)
		if err != nil {
			return "", fmt.Errorf("must be one of %s; got %s", strings.Join(allowed, ", "), describe(n))
		}
		for _, a := range allowed {
			if s == a {
				return s, nil
			}
		}
		msg := fmt.Sprintf("%q is not one of %s", s, strings.Join(allowed, ", "))
		if m := closest(s, allowed); m != "" {
			msg += fmt.Sprintf("; did you mean %q?", m)
		}
		return "", errors.New(msg)
	}
}

// userIDList decodes a non-empty list of distinct Matrix user IDs. Every bad
// element is reported at its own line.
func userIDList(n *yaml.Node, dir string) ([]string, error) {
	if n.Kind != yaml.SequenceNode {
		msg := "must be a list of Matrix user IDs; got " + describe(n)
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
			msg += fmt.Sprintf(" (write [%q])", n.Value)
		}
		return nil, errors.New(msg)
	}
	if len(n.Content) == 0 {
		return nil, errors.New("must list at least one Matrix user ID")
	}
	var (
		ids   []string
		errs  []error
		first = map[string]int{}
	)
	for i, e := range n.Content {
		e = deref(e)
		at := fmt.Sprintf("[%d]", i)
		s, err := str(e, dir)
		if err == nil {
			err = matrixUserID(s)
		}
		if err == nil {
			if j, dup := first[s]; dup {
				err = fmt.Errorf("%q is listed twice (also at [%d])", s, j)
			}
		}
		if err != nil {
			errs = append(errs, &nodeError{line: e.Line, suffix: at, msg: err.Error()})
			continue
		}
		first[s] = i
		ids = append(ids, s)
	}
	return ids, errors.Join(errs...)
}

func nonEmpty(s string) error {
	if strings.TrimSpace(s) == "" {
		return errors.New("must not be empty")
	}
	return nil
}

func maxLen(n int) check[string] {
	return func(s string) error {
		if len(s) > n {
			return fmt.Errorf("is %d bytes long; at most %d are allowed", len(s), n)
		}
		return nil
	}
}

func between[T int | time.Duration](lo, hi T) check[T] {
	return func(v T) error {
		if v < lo || v > hi {
			return fmt.Errorf("%v is out of range; must be between %v and %v", v, lo, hi)
		}
		return nil
	}
}

func even(v int) error {
	if v%2 != 0 {
		return fmt.Errorf("%d must be even", v)
	}
	return nil
}

// wholeMillis rejects durations that would be truncated when sent as a
// millisecond lifetime.
func wholeMillis(d time.Duration) error {
	if d%time.Millisecond != 0 {
		return fmt.Errorf("%v must be a whole number of milliseconds", d)
	}
	return nil
}

func homeserverURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q must be an http:// or https:// URL such as \"https://matrix.example.org\"", s)
	}
	if u.User != nil {
		return fmt.Errorf("must not contain a user name or password; use matrix.password_file")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q must not have a query or fragment", s)
	}
	return nil
}

// loopbackHost reports whether host (a name, an IP address, or an IPv6
// address in brackets) always means this machine: "localhost" or a
// loopback address. Other names are not resolved: what they resolve to
// can change.
func loopbackHost(host string) bool {
	if h := strings.TrimSuffix(strings.ToLower(host), "."); h == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return err == nil && a.Unmap().IsLoopback()
}

func hostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q must be host:port, such as \"127.0.0.1:8080\"", s)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("%q: port must be a number from 1 to 65535", s)
	}
	if strings.ContainsAny(host, " \t/") {
		return fmt.Errorf("%q: %q is not a host name or address", s, host)
	}
	return nil
}

// matrixUserID checks the grammar of a user ID (Matrix spec, Appendices:
// "User Identifiers" and "Server Name"). Historical localparts, any
// printable ASCII but ':', are accepted because residents on older servers
// may have them.
func matrixUserID(s string) error {
	bad := func(why string) error {
		return fmt.Errorf("%q is not a Matrix user ID (@localpart:server): %s", s, why)
	}
	if len(s) > 255 {
		return bad("longer than 255 bytes")
	}
	if !strings.HasPrefix(s, "@") {
		return bad("must start with @")
	}
	local, server, ok := strings.Cut(s[1:], ":")
	if !ok {
		return bad("missing :server")
	}
	if local == "" {
		return bad("empty localpart")
	}
	for _, r := range local {
		if r < 0x21 || r > 0x7e {
			return bad(fmt.Sprintf("localpart contains %q", r))
		}
	}
	if err := serverName(server); err != nil {
		return bad(err.Error())
	}
	return nil
}

// serverName checks hostname [":" port] where hostname is a DNS name, an
// IPv4 address or a bracketed IPv6 address.
func serverName(s string) error {
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return errors.New("unclosed [ in server name")
		}
		if a, err := netip.ParseAddr(s[1:end]); err != nil || !a.Is6() {
			return errors.New("bad IPv6 address in server name")
		}
		host, port = s[:end+1], s[end+1:]
		if port != "" && !strings.HasPrefix(port, ":") {
			return errors.New("bad server name")
		}
		port = strings.TrimPrefix(port, ":")
		if port == "" && strings.HasSuffix(s, ":") {
			return errors.New("empty port")
		}
	} else if h, p, ok := strings.Cut(s, ":"); ok {
		host, port = h, p
		if port == "" {
			return errors.New("empty port")
		}
	}
	if port != "" {
		if len(port) > 5 || strings.Trim(port, "0123456789") != "" {
			return errors.New("bad port in server name")
		}
	}
	if host == "" {
		return errors.New("empty server name")
	}
	if strings.HasPrefix(host, "[") {
		return nil
	}
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return fmt.Errorf("server name contains %q", r)
		}
	}
	return nil
}

// deref follows YAML aliases to the node they name. The depth bound guards
// against alias chains the parser might let through.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; i < 32 && n != nil && n.Kind == yaml.AliasNode; i++ {
		n = n.Alias
	}
	if n == nil || n.Kind == yaml.AliasNode {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
	}
	return n
}

// describe names the YAML type of n for messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return fmt.Sprintf("the string %q", n.Value)
		case "!!int", "!!float":
			return "the number " + n.Value
		case "!!bool":
			return "the boolean " + n.Value
		case "!!null":
			return "nothing"
		default:
			return fmt.Sprintf("%s %q", n.ShortTag(), n.Value)
		}
	}
	return "nothing"
}
