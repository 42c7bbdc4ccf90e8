package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/doorbell/intercom/device"
)

// startGuarded serves h behind device.Guard for the server's own address,
// as the intercom serves its API.
func startGuarded(t *testing.T, h func(addr string) http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	srv.Config.Handler = h(srv.Listener.Addr().String())
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// TestPagePassesTheAPIThrough: the resident page's "Ring the doorbell"
// (a fetch POST to /api/ring on the page's origin, so with that Origin
// and the page's Host) reaches the intercom's guarded API; another site's
// request does not.
func TestPagePassesTheAPIThrough(t *testing.T) {
	var rings int
	api := startGuarded(t, func(addr string) http.Handler {
		g, err := device.Guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rings++
			w.WriteHeader(http.StatusAccepted)
		}), device.GuardConfig{Listen: addr})
		if err != nil {
			t.Fatal(err)
		}
		return g
	})
	page := startGuarded(t, func(addr string) http.Handler {
		h, err := pageMux(t.TempDir(), api.Listener.Addr().String(), addr)
		if err != nil {
			t.Fatal(err)
		}
		return h
	})
	ring := func(origin string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, page.URL+"/api/ring", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", origin)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := ring(page.URL); code != http.StatusAccepted || rings != 1 {
		t.Fatalf("the page's ring: %d, %d rings", code, rings)
	}
	if code := ring("http://attacker.example"); code != http.StatusForbidden || rings != 1 {
		t.Fatalf("another site's ring: %d, %d rings", code, rings)
	}
	if _, err := pageMux(t.TempDir(), api.Listener.Addr().String(), "0.0.0.0:8090"); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("a page beyond loopback passing the API through: %v", err)
	}
}
