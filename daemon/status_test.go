package daemon

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/device"
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
