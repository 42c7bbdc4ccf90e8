package device

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

type snapFunc func(ctx context.Context) ([]byte, error)

func (f snapFunc) Snapshot(ctx context.Context) ([]byte, error) { return f(ctx) }

func TestSnapshotRoute(t *testing.T) {
	jpg := []byte{0xff, 0xd8, 0xff, 0xd9}
	for _, tc := range []struct {
		name string
		snap Snapshotter
		code int
	}{
		{"picture", snapFunc(func(context.Context) ([]byte, error) { return jpg, nil }), http.StatusOK},
		{"camera fails", snapFunc(func(context.Context) ([]byte, error) { return nil, errors.New("gone") }), http.StatusServiceUnavailable},
		{"no camera", nil, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := New(Config{Caller: &fakeCaller{}, Snapshot: tc.snap})
			rec := httptest.NewRecorder()
			d.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/api/snapshot.jpg", nil))
			if rec.Code != tc.code {
				t.Fatalf("status %d, want %d", rec.Code, tc.code)
			}
			if tc.code == http.StatusOK && (rec.Header().Get("Content-Type") != "image/jpeg" || rec.Body.Len() != len(jpg)) {
				t.Fatalf("headers %v, %d bytes", rec.Header(), rec.Body.Len())
			}
		})
	}
}
