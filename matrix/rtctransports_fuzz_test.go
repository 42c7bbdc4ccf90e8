package matrix

import (
	"net/url"
	"testing"
)

// FuzzRTCTransports feeds both discovery decoders (an /rtc/transports
// answer and a client .well-known, both untrusted): they never panic, and
// a URL they accept is an http(s) URL with a host and no credentials.
func FuzzRTCTransports(f *testing.F) {
	f.Add([]byte(`{"rtc_transports":[{"type":"livekit","livekit_service_url":"https://rtc.example.com/livekit/jwt"}]}`))
	f.Add([]byte(`{"org.matrix.msc4143.rtc_foci":[{"type":"livekit","livekit_service_url":"https://wk.example.com"}]}`))
	f.Add([]byte(`{"rtc_transports":[{"type":"mesh"},{"type":"livekit","livekit_service_url":"javascript:x"}]}`))
	f.Add([]byte(`{"org.matrix.msc4143.rtc_foci":{"type":"livekit"}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, decode := range []func([]byte) (string, error){DecodeRTCTransports, DecodeRTCFoci} {
			s, err := decode(body)
			if err != nil {
				if s != "" {
					t.Fatalf("URL %q with error %v", s, err)
				}
				continue
			}
			u, perr := url.Parse(s)
			if perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
				t.Fatalf("accepted %q", s)
			}
		}
	})
}
