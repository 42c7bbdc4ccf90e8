package daemon

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/doorbell/intercom/provisioning"
)

// TestAPIHandlerGuardsTheAPI: the daemon serves the API through its
// guard, with the configured token and names and the port actually
// bound (issue 19, finding 7).
func TestAPIHandlerGuardsTheAPI(t *testing.T) {
	const token = "s3cret-token-0123456789"
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	bound := &net.TCPAddr{IP: net.IPv4zero, Port: 41234} // what api.listen ":0" may become
	for _, tt := range []struct {
		name   string
		api    provisioning.API
		addr   net.Addr
		host   string
		bearer string
		code   int
	}{
		{"loopback script", provisioning.API{Listen: "127.0.0.1:8080"}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080},
			"127.0.0.1:8080", "", http.StatusNoContent},
		{"loopback, rebound name", provisioning.API{Listen: "127.0.0.1:8080"}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080},
			"attacker.example:8080", "", http.StatusForbidden},
		{"the port bound, not the one configured", provisioning.API{Listen: "127.0.0.1:0"}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 41234},
			"127.0.0.1:41234", "", http.StatusNoContent},
		{"LAN with the token", provisioning.API{Listen: ":0", Token: token}, bound, "192.168.1.20:41234", token, http.StatusNoContent},
		{"LAN without it", provisioning.API{Listen: ":0", Token: token}, bound, "192.168.1.20:41234", "", http.StatusUnauthorized},
		{"a configured name", provisioning.API{Listen: ":0", Token: token, Hostnames: []string{"intercom.local"}}, bound,
			"intercom.local", token, http.StatusNoContent},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, err := apiHandler(tt.api, tt.addr, ok, nil, nil)
			if err != nil {
				t.Fatalf("apiHandler: %v", err)
			}
			r := httptest.NewRequest(http.MethodGet, "/api/status", nil)
			r.Host = tt.host
			if tt.bearer != "" {
				r.Header.Set("Authorization", "Bearer "+tt.bearer)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != tt.code {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.code, rec.Body)
			}
		})
	}
	if _, err := apiHandler(provisioning.API{Listen: "0.0.0.0:8080"}, bound, ok, nil, nil); err == nil {
		t.Fatal("an API beyond loopback without a token was served")
	}
}
