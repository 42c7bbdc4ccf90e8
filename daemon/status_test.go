package daemon

import (
	"encoding/json"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/device"
	"github.com/doorbell/intercom/matrix"
	"github.com/doorbell/intercom/matrix/matrixtest"
)

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// TestStatusIsSnakeCase walks the types of every section of /api/status
// and fails on a key that is not snake_case (Go's default, the field name,
// counts): one casing for every client of the API.
func TestStatusIsSnakeCase(t *testing.T) {
	seen := map[reflect.Type]bool{}
	var walk func(path string, ty reflect.Type)
	walk = func(path string, ty reflect.Type) {
		for ty.Kind() == reflect.Pointer || ty.Kind() == reflect.Slice || ty.Kind() == reflect.Array || ty.Kind() == reflect.Map {
			ty = ty.Elem()
		}
		if ty.Kind() != reflect.Struct || seen[ty] || ty == reflect.TypeOf(time.Time{}) {
			return
		}
		seen[ty] = true
		for i := range ty.NumField() {
			f := ty.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if name == "" && f.Anonymous {
				walk(path, f.Type)
				continue
			}
			if name == "" {
				name = f.Name
			}
			if !snakeCase.MatchString(name) {
				t.Errorf("%s.%s: JSON key %q is not snake_case (%s.%s)", path, name, name, ty, f.Name)
			}
			walk(path+"."+name, f.Type)
		}
	}
	walk("status", reflect.TypeOf(device.Status{}))
	walk("status.matrix", reflect.TypeOf(matrixStatus{}))
	walk("status.media", reflect.TypeOf(mediaStatus{}))
	walk("status.matrix.matrixrtc", reflect.TypeOf(rtcSection{}))
}

// The matrix section says plainly when the homeserver went away and how
// the last /sync failed, and says nothing of an outage while it answers.
func TestSyncStatusOutage(t *testing.T) {
	since := time.Date(2026, 12, 6, 14, 3, 7, 0, time.UTC)
	tests := []struct {
		name string
		in   matrix.Status
		want map[string]any // keys that must be present with these values; nil: absent
	}{
		{
			name: "homeserver unreachable",
			in:   matrix.Status{LastSync: since.Add(-time.Minute), ConsecutiveFailures: 3, LastError: "sync: connection refused", UnreachableSince: since},
			want: map[string]any{"syncing": false, "homeserver_unreachable_since": "2026-12-06T14:03:07Z", "failures": 3.0, "last_error": "sync: connection refused"},
		},
		{
			name: "healthy",
			in:   matrix.Status{Healthy: true, LastSync: since},
			want: map[string]any{"syncing": true, "homeserver_unreachable_since": nil, "failures": 0.0, "last_error": ""},
		},
		{
			name: "answering with an error",
			in:   matrix.Status{ConsecutiveFailures: 1, LastError: "sync: M_UNKNOWN_TOKEN"},
			want: map[string]any{"syncing": false, "homeserver_unreachable_since": nil, "last_error": "sync: M_UNKNOWN_TOKEN"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(syncStatus(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			for k, want := range tt.want {
				v, ok := got[k]
				if want == nil {
					if ok {
						t.Errorf("%s present (%v), want absent", k, v)
					}
					continue
				}
				if !ok || v != want {
					t.Errorf("%s = %v, want %v (in %s)", k, v, want, b)
				}
			}
		})
	}
}

// /healthz and the matrix section follow the homeserver: a run of failed
// /syncs turns /healthz to 503 at once with homeserver_unreachable_since
// and the last error in /api/status, and the first /sync that succeeds
// turns it back to 200 with the outage gone from the status.
func TestHealthFollowsHomeserver(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon")
	}
	hs := newHS(t)
	r := startDaemon(t, hs, writeConfig(t, hs, ""))
	// Three failures keep the outage visible for at least 1.75 s of
	// backoff (0.25 + 0.5 + 1 with the jitter at its shortest) and end it
	// within 3.5 s (0.5 + 1 + 2 at its longest), well inside waitHTTP's
	// 10 s: five, with the 4 s cap, could take 11.5 s.
	var errs []matrixtest.Reply
	for range 3 {
		errs = append(errs, matrixtest.Error(http.StatusBadGateway, ""))
	}
	hs.ScriptSync(errs...)
	st := r.waitStatus("the outage in the status", func(s runStatus) bool { return s.Matrix.UnreachableSince != nil })
	// (The top-level "healthy" is read a moment before the matrix
	// section, so it may still show the sync before the first failure.)
	if st.Matrix.Syncing || !strings.Contains(st.Matrix.LastError, "502") || st.Matrix.Failures == 0 {
		t.Errorf("status during the outage: healthy %v, matrix %+v", st.Healthy, st.Matrix)
	}
	if since := *st.Matrix.UnreachableSince; time.Since(since) > 10*time.Second || time.Until(since) > 0 {
		t.Errorf("unreachable since %v", since)
	}
	r.waitHTTP("unhealthy", "/healthz", func(code int, _ []byte) bool { return code == http.StatusServiceUnavailable })
	r.waitHTTP("healthy again", "/healthz", func(code int, _ []byte) bool { return code == http.StatusOK })
	st = r.waitStatus("the outage gone", func(s runStatus) bool { return s.Healthy })
	if st.Matrix.UnreachableSince != nil || st.Matrix.LastError != "" || st.Matrix.Failures != 0 {
		t.Errorf("status after the return: %+v", st.Matrix)
	}
}
