package provisioning

import (
	"slices"
	"strings"
	"testing"
)

// withResidents replaces minimal's residents line with src.
func withResidents(src string) string {
	return strings.Replace(minimal, "residents: [\"@alice:example.org\"]\n", src, 1)
}

func TestResidentPaths(t *testing.T) {
	const rtcOn = "matrixrtc: {enabled: true, livekit_service_url: \"https://rtc.example.org/jwt\"}\n"
	src := withResidents(`residents:
  - "@alice:example.org"
  - user_id: "@bob:example.org"
    paths: [matrixrtc]
  - {user_id: "@carol:example.org", paths: [classic]}
  - {user_id: "@dave:example.org", paths: [matrixrtc, classic]}
  - {user_id: "@erin:example.org"}
`) + rtcOn
	c, err := Parse("f.yaml", []byte(src), "/etc/intercom")
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	if want := []string{"@alice:example.org", "@bob:example.org", "@carol:example.org", "@dave:example.org", "@erin:example.org"}; !slices.Equal(c.Residents, want) {
		t.Fatalf("Residents = %v, want %v", c.Residents, want)
	}
	for _, tt := range []struct {
		user             string
		classic, rtcPath bool
	}{
		{"@alice:example.org", true, true}, // plain user ID: both
		{"@bob:example.org", false, true},
		{"@carol:example.org", true, false},
		{"@dave:example.org", true, true},
		{"@erin:example.org", true, true}, // mapping without paths: both
		{"@mallory:example.org", false, false},
	} {
		if got := c.RingsOn(tt.user, PathClassic); got != tt.classic {
			t.Errorf("RingsOn(%s, classic) = %v, want %v", tt.user, got, tt.classic)
		}
		if got := c.RingsOn(tt.user, PathMatrixRTC); got != tt.rtcPath {
			t.Errorf("RingsOn(%s, matrixrtc) = %v, want %v", tt.user, got, tt.rtcPath)
		}
	}
	if len(c.ResidentPaths) != 3 {
		t.Errorf("ResidentPaths = %v: want only the three that say", c.ResidentPaths)
	}
}

func TestResidentPathsProblems(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string
	}{
		{"unknown path", withResidents("residents:\n  - {user_id: \"@a:b\", paths: [clasic]}\n"), []string{
			`f.yaml:7: residents[0]: paths: "clasic" is not one of classic, matrixrtc; did you mean "classic"?`,
		}},
		{"empty paths", withResidents("residents:\n  - {user_id: \"@a:b\", paths: []}\n"), []string{
			`f.yaml:7: residents[0]: paths: must be a list of classic and/or matrixrtc; an empty list would ring nobody (remove the resident instead)`,
		}},
		{"paths as a string", withResidents("residents:\n  - user_id: \"@a:b\"\n    paths: classic\n"), []string{
			`f.yaml:8: residents[0]: paths: must be a list of classic and/or matrixrtc; got the string "classic" (write [classic])`,
		}},
		{"path twice", withResidents("residents:\n  - {user_id: \"@a:b\", paths: [classic, classic]}\n"), []string{
			`f.yaml:7: residents[0]: paths: "classic" is listed twice`,
		}},
		{"missing user_id", withResidents("residents:\n  - paths: [classic]\n"), []string{
			`f.yaml:7: residents[0]: user_id is required in a resident written as a mapping`,
		}},
		{"bad user_id", withResidents("residents:\n  - {user_id: alice}\n"), []string{
			`f.yaml:7: residents[0]: user_id: "alice" is not a Matrix user ID (@localpart:server): must start with @`,
		}},
		{"misspelt key", withResidents("residents:\n  - user_id: \"@a:b\"\n    path: [classic]\n"), []string{
			`f.yaml:8: residents[0]: unknown key "path"; did you mean "paths"?`,
		}},
		{"unknown key", withResidents("residents:\n  - {user_id: \"@a:b\", ringtone: loud}\n"), []string{
			`f.yaml:7: residents[0]: unknown key "ringtone" (a resident has user_id and paths)`,
		}},
		{"same resident in both forms", withResidents("residents:\n  - \"@a:b\"\n  - {user_id: \"@a:b\", paths: [classic]}\n"), []string{
			`f.yaml:8: residents[1]: "@a:b" is listed twice (also at [0])`,
		}},
		{"list in the list", withResidents("residents:\n  - [\"@a:b\"]\n"), []string{
			`f.yaml:7: residents[0]: must be a Matrix user ID or a mapping such as {user_id: "@alice:example.org", paths: [matrixrtc]}; got a list`,
		}},
		{"only matrixrtc while it is off", withResidents("residents:\n  - {user_id: \"@a:b\", paths: [matrixrtc]}\n"), []string{
			`f.yaml:6: residents: @a:b is rung only through matrixrtc, which is off: set matrixrtc.enabled: true or add classic to their paths`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tt.src), "/etc/intercom")
			if err == nil {
				t.Fatal("Parse accepted it")
			}
			if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, tt.want) {
				t.Errorf("problems:\n%s\nwant:\n%s", err, strings.Join(tt.want, "\n"))
			}
		})
	}
}
