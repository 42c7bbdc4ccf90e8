package provisioning

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func readExample(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestExampleParses(t *testing.T) {
	if _, err := Parse("example.yaml", readExample(t), t.TempDir()); err != nil {
		t.Fatalf("example.yaml does not parse:\n%v", err)
	}
}

// commentedKey matches a key the example shows commented out because it is
// an alternative to another (access_token_file instead of password_file).
var commentedKey = regexp.MustCompile(`(?m)^(\s*)# ([a-z][a-z0-9_]*: \S.*)$`)

// TestExampleDocumentsEveryKey keeps example.yaml in step with the schema:
// every key the schema knows appears in it, set or commented out, with a
// comment explaining it; and it has no key the schema does not know.
func TestExampleDocumentsEveryKey(t *testing.T) {
	data := commentedKey.ReplaceAll(readExample(t), []byte("$1$2"))
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("example.yaml with its commented-out keys restored is not YAML: %v", err)
	}
	documented := map[string]bool{}
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := join(prefix, k.Value)
			if v.Kind == yaml.MappingNode {
				walk(v, key)
				continue
			}
			documented[key] = strings.TrimSpace(k.HeadComment+k.LineComment+v.LineComment) != ""
		}
	}
	walk(doc.Content[0], "")

	for _, k := range Keys() {
		has, ok := documented[k]
		switch {
		case !ok:
			t.Errorf("example.yaml lacks %s", k)
		case !has:
			t.Errorf("example.yaml has %s without a comment explaining it", k)
		}
	}
	for k := range documented {
		if !slices.Contains(Keys(), k) {
			t.Errorf("example.yaml has %s, which the schema does not know", k)
		}
	}
}

// TestExampleDoorWindowIsTheDefault: example.yaml shows the call window in
// force when the key is left out (issue 19: commands count only during a
// call or shortly after a ring), so a copied example is as safe as none.
func TestExampleDoorWindowIsTheDefault(t *testing.T) {
	ex, err := Parse("example.yaml", readExample(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	def, err := Parse("intercom.yaml", []byte(minimal), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if ex.Door.Window != def.Door.Window || ex.Door.OnlyDuringCall != def.Door.OnlyDuringCall || def.Door.Window != 3*time.Minute {
		t.Fatalf("door.window: example %v, default %v (want 3m); only_during_call: example %v, default %v",
			ex.Door.Window, def.Door.Window, ex.Door.OnlyDuringCall, def.Door.OnlyDuringCall)
	}
}
