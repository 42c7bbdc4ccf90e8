package provisioning

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// The ways a press can ring a resident, as residents[].paths names them.
const (
	// PathClassic is the classic 1:1 call (m.call.invite): Element Web,
	// older FluffyChat, SchildiChat. Element X shows it as "Unsupported
	// call" (matrix-voip.md §9).
	PathClassic = "classic"
	// PathMatrixRTC is the MatrixRTC call and its ring
	// (org.matrix.msc4075.rtc.notification): Element X, Element Call.
	PathMatrixRTC = "matrixrtc"
)

// ringPaths are the paths a resident entry may name, in the order hints
// list them.
var ringPaths = []string{PathClassic, PathMatrixRTC}

// residentKeys are the keys of a resident written as a mapping.
var residentKeys = []string{"user_id", "paths"}

// RingsOn reports whether a press rings user on path (PathClassic or
// PathMatrixRTC). A resident written as a plain user ID, or without paths,
// is rung on every path; a user who is not a resident on none.
func (c *Config) RingsOn(user, path string) bool {
	if !slices.Contains(c.Residents, user) {
		return false
	}
	paths, ok := c.ResidentPaths[user]
	return !ok || slices.Contains(paths, path)
}

// residentEntries decodes residents: a non-empty list whose entries are a
// Matrix user ID, or a mapping {user_id, paths} that also says which paths
// ring that resident. Every bad entry is reported at its own line.
func residentEntries(n *yaml.Node, dir string) (ids []string, paths map[string][]string, err error) {
	if n.Kind != yaml.SequenceNode {
		msg := "must be a list of Matrix user IDs; got " + describe(n)
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
			msg += fmt.Sprintf(" (write [%q])", n.Value)
		}
		return nil, nil, errors.New(msg)
	}
	if len(n.Content) == 0 {
		return nil, nil, errors.New("must list at least one Matrix user ID")
	}
	var (
		errs  []error
		first = map[string]int{}
	)
	for i, e := range n.Content {
		e = deref(e)
		at := fmt.Sprintf("[%d]", i)
		id, p, line, err := residentEntry(e, dir)
		if err == nil {
			if j, dup := first[id]; dup {
				err = fmt.Errorf("%q is listed twice (also at [%d])", id, j)
			}
		}
		if err != nil {
			if line == 0 {
				line = e.Line
			}
			errs = append(errs, &nodeError{line: line, suffix: at, msg: err.Error()})
			continue
		}
		first[id] = i
		ids = append(ids, id)
		if p != nil {
			if paths == nil {
				paths = map[string][]string{}
			}
			paths[id] = p
		}
	}
	return ids, paths, errors.Join(errs...)
}

// residentEntry decodes one entry; paths is nil when the entry does not
// say (every path). line, when not 0, is where the problem is.
func residentEntry(n *yaml.Node, dir string) (id string, paths []string, line int, err error) {
	if n.Kind != yaml.MappingNode {
		id, err := str(n, dir)
		if err == nil {
			err = matrixUserID(id)
		} else if n.Kind != yaml.ScalarNode {
			err = errors.New(`must be a Matrix user ID or a mapping such as {user_id: "@alice:example.org", paths: [matrixrtc]}; got ` + describe(n))
		}
		return id, nil, 0, err
	}
	var userNode, pathsNode *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		switch k.Value {
		case "user_id":
			userNode = v
		case "paths":
			pathsNode = v
		default:
			msg := fmt.Sprintf("unknown key %q (a resident has user_id and paths)", k.Value)
			if m := closest(k.Value, residentKeys); m != "" {
				msg = fmt.Sprintf("unknown key %q; did you mean %q?", k.Value, m)
			}
			return "", nil, k.Line, errors.New(msg)
		}
	}
	if userNode == nil {
		return "", nil, n.Line, errors.New("user_id is required in a resident written as a mapping")
	}
	id, err = str(userNode, dir)
	if err == nil {
		err = matrixUserID(id)
	}
	if err != nil {
		return "", nil, userNode.Line, fmt.Errorf("user_id: %w", err)
	}
	if pathsNode == nil {
		return id, nil, 0, nil // every path, as a plain user ID
	}
	paths, err = ringPathList(pathsNode, dir)
	if err != nil {
		return "", nil, pathsNode.Line, fmt.Errorf("paths: %w", err)
	}
	return id, paths, 0, nil
}

// ringPathList decodes a resident's paths: one or both of classic and
// matrixrtc, each once.
func ringPathList(n *yaml.Node, dir string) ([]string, error) {
	want := "must be a list of " + strings.Join(ringPaths, " and/or ")
	if n.Kind != yaml.SequenceNode {
		msg := want + "; got " + describe(n)
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
			msg += fmt.Sprintf(" (write [%s])", n.Value)
		}
		return nil, errors.New(msg)
	}
	if len(n.Content) == 0 {
		return nil, errors.New(want + "; an empty list would ring nobody (remove the resident instead)")
	}
	var out []string
	for _, e := range n.Content {
		p, err := oneOf(ringPaths...)(deref(e), dir)
		if err != nil {
			return nil, err
		}
		if slices.Contains(out, p) {
			return nil, fmt.Errorf("%q is listed twice", p)
		}
		out = append(out, p)
	}
	return out, nil
}

// residentsField is the schema's residents entry. It is not built with
// required() because one key fills two fields: the user IDs every other
// part reads, and the paths of the residents that say which.
func residentsField() field {
	return field{key: "residents", required: true, decode: func(c *Config, n *yaml.Node, dir string) error {
		ids, paths, err := residentEntries(n, dir)
		if err != nil {
			return err
		}
		c.Residents, c.ResidentPaths = ids, paths
		return nil
	}}
}

// checkResidentPaths rejects a resident who may be rung only through
// MatrixRTC while it is off: the press would ring them nowhere.
func checkResidentPaths(c *Config, at lineOf) []Problem {
	if c.MatrixRTC.Enabled {
		return nil
	}
	var ps []Problem
	for _, u := range c.Residents {
		if p, ok := c.ResidentPaths[u]; ok && !slices.Contains(p, PathClassic) {
			ps = append(ps, Problem{File: c.Path, Line: max(at("residents"), 1), Key: "residents",
				Msg: fmt.Sprintf("%s is rung only through matrixrtc, which is off: set matrixrtc.enabled: true or add classic to their paths", u)})
		}
	}
	return ps
}
