package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/rtc"
	"github.com/doorbell/intercom/internal/testenv/dendrite"
	"github.com/doorbell/intercom/internal/testenv/lkjwt"
	"github.com/doorbell/intercom/internal/testenv/resident"
)

// advertiser stands in front of Dendrite (which has no MatrixRTC
// transport endpoint) as a homeserver that advertises one would: it
// answers GET /_matrix/client/v1/rtc/transports for a logged-in user (the
// access token checked with Dendrite's whoami, as the endpoint is
// authenticated) and GET /.well-known/matrix/client with rtc_foci, once
// advertising is on, and forwards everything else to Dendrite.
type advertiser struct {
	*httptest.Server
	service    string // the JWT service advertised
	on         atomic.Bool
	mu         sync.Mutex
	asked      []string // "<path> <user>" of each discovery request
	dendrite   string
	httpClient *http.Client
}

func startAdvertiser(t testing.TB, hs, service string) *advertiser {
	t.Helper()
	target, err := url.Parse(hs)
	if err != nil {
		t.Fatal(err)
	}
	a := &advertiser{service: service, dendrite: hs, httpClient: &http.Client{Timeout: 10 * time.Second}}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1 // /sync long polls pass through as they come
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/_matrix/client/v1/rtc/transports":
			user := a.whoami(r)
			a.note(r.URL.Path + " " + user)
			switch {
			case user == "":
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprint(w, `{"errcode":"M_MISSING_TOKEN","error":"Missing access token"}`)
			case !a.on.Load():
				w.WriteHeader(http.StatusNotFound)
				fmt.Fprint(w, `{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`)
			default:
				fmt.Fprintf(w, `{"rtc_transports":[{"type":"livekit","livekit_service_url":%q}]}`, a.service)
			}
		case "/.well-known/matrix/client":
			a.note(r.URL.Path)
			foci := ""
			if a.on.Load() {
				foci = fmt.Sprintf(`,"org.matrix.msc4143.rtc_foci":[{"type":"livekit","livekit_service_url":%q}]`, a.service)
			}
			fmt.Fprintf(w, `{"m.homeserver":{"base_url":%q}%s}`, hs, foci)
		default:
			proxy.ServeHTTP(w, r)
		}
	}))
	// This cleanup runs before the intercom is stopped (registered
	// later): drop its /sync long poll rather than wait it out.
	t.Cleanup(func() { a.CloseClientConnections(); a.Close() })
	return a
}

func (a *advertiser) note(s string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.asked = append(a.asked, s)
}

func (a *advertiser) requests() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.asked)
}

// whoami is the user of the request's access token, "" if none or
// refused.
func (a *advertiser) whoami(r *http.Request) string {
	authz := r.Header.Get("Authorization")
	if !strings.HasPrefix(authz, "Bearer ") {
		return ""
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, a.dendrite+"/_matrix/client/v3/account/whoami", nil)
	if err != nil {
		return ""
	}
	req.Header.Set("Authorization", authz)
	res, err := a.httpClient.Do(req)
	if err != nil {
		return ""
	}
	defer res.Body.Close()
	var who struct {
		UserID string `json:"user_id"`
	}
	if res.StatusCode != http.StatusOK || json.NewDecoder(res.Body).Decode(&who) != nil {
		return ""
	}
	return who.UserID
}

// transportOf reads matrix.matrixrtc.transport from a status.
func transportOf(st status) (serviceURL, source, problem string) {
	var m struct {
		RTC struct {
			Transport struct {
				ServiceURL string `json:"service_url"`
				Source     string `json:"source"`
				Problem    string `json:"problem"`
			} `json:"transport"`
		} `json:"matrixrtc"`
	}
	_ = json.Unmarshal(st.Matrix, &m)
	tr := m.RTC.Transport
	return tr.ServiceURL, tr.Source, tr.Problem
}

// TestMatrixRTCDiscoveredTransport: the intercom's configuration says
// only `matrixrtc: {enabled: true}`. While the homeserver advertises no
// transport, /api/status says why MatrixRTC rings nobody; once it
// advertises one (GET /_matrix/client/v1/rtc/transports, asked with the
// intercom's login, ahead of the .well-known), the intercom takes it up
// without a restart, names it in its membership and gets its own token
// there. Alice answers through MatrixRTC with a token from /get_token, so
// she is at the SFU under the hashed identity: the call connects, picture
// and sound flow both ways, and it outlasts the presence grace, which a
// presence rule that knew only "<user>:<device>" would not let it.
func TestMatrixRTCDiscoveredTransport(t *testing.T) {
	sfu := startSFU(t)
	rs := &rtcSystem{sfu: sfu}
	var adv *advertiser
	opts := systemOptions{
		Homeserver: dendrite.Options{OpenIDUserInfo: true},
		ConfigFor: func(hs *dendrite.Server, _ string) string {
			rs.svc = lkjwt.Start(t, lkjwt.Options{Homeserver: hs.BaseURL, LiveKitURL: sfu.URL, APIKey: sfu.APIKey, APISecret: sfu.APISecret})
			adv = startAdvertiser(t, hs.BaseURL, rs.svc)
			// The intercom's configuration is written from BaseURL right
			// after this: it (and every request of the test from here
			// on) reaches Dendrite through the advertiser. The residents
			// were started before and talk to Dendrite directly.
			hs.BaseURL = adv.URL
			return "matrixrtc:\n  enabled: true\n"
		},
	}
	opts.Resident.AnyInterface = true
	rs.e2e = startSystemWith(t, opts, "alice")
	s, alice := rs, rs.residents[0]
	room := roomOf(t, alice)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	// Nothing advertised yet: MatrixRTC says why it rings nobody.
	st := s.waitStatus(ctx, "no transport", func(st status) bool { _, _, p := transportOf(st); return p != "" })
	if u, _, p := transportOf(st); u != "" || !strings.Contains(p, "advertises no MatrixRTC LiveKit transport") {
		t.Fatalf("transport %q, problem %q", u, p)
	}

	adv.on.Store(true)
	advertised := time.Now()
	st = s.waitStatus(ctx, "transport discovered", func(st status) bool { u, _, _ := transportOf(st); return u != "" })
	u, source, _ := transportOf(st)
	if u != rs.svc || source != adv.URL+"/_matrix/client/v1/rtc/transports" {
		t.Fatalf("transport %q from %q, want %q from the v1 endpoint", u, source, rs.svc)
	}
	t.Logf("advertised → taken up by the intercom: %v", time.Since(advertised).Round(time.Millisecond))
	if !slices.Contains(adv.requests(), "/_matrix/client/v1/rtc/transports "+s.bot.UserID) {
		t.Fatalf("the intercom did not ask /rtc/transports with its login: %q", adv.requests())
	}

	pressed := s.press()
	ring := waitEvent(ctx, t, alice, resident.EventRTCRing, pressed, func(ev resident.Event) bool { return ev.Str("roomId") == room })
	if ring.Fields["sdkValid"] != true {
		t.Fatalf("ring %s: matrix-js-sdk refuses it", ring)
	}
	// The service URL comes from the intercom's membership.
	joined, err := alice.RTCJoinWith(ctx, resident.RTCJoinOptions{RoomID: room, GetToken: true})
	if err != nil {
		t.Fatal(err)
	}
	answered := time.Now()
	aliceDev := rtc.Device{User: callengine.UserID(alice.UserID()), DeviceID: deviceOf(t, alice, joined)}
	if id := joined.Str("identity"); id != rtc.HashedIdentity(aliceDev, aliceDev.Identity()) || joined.Str("serviceUrl") != rs.svc {
		t.Fatalf("alice at the SFU as %q through %q: want the /get_token hash through %s", id, joined.Str("serviceUrl"), rs.svc)
	}
	// The intercom got its own token from /sfu/get: it is at the SFU as
	// "<user>:<device>", the identity clients pair with its membership.
	parts, _ := joined.Fields["participants"].([]any)
	if !slices.ContainsFunc(parts, func(p any) bool { id, _ := p.(string); return strings.HasPrefix(id, rs.bot.UserID+":") }) {
		t.Fatalf("participants %v: want the intercom as <user>:<device>", parts)
	}
	waitEvent(ctx, t, alice, resident.EventRTCFirstFrame, pressed, func(resident.Event) bool { return true })
	s.waitStatus(ctx, "in the MatrixRTC call", func(st status) bool {
		for _, c := range st.Calls {
			if c.CallID == "matrixrtc:"+room && c.State == "connected" && c.Resident == alice.UserID() {
				return st.State == "in_call"
			}
		}
		return false
	})
	for !s.heardAudio() {
		if ctx.Err() != nil {
			t.Fatal("the intercom never heard alice")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Alice stays at the SFU under her hash: the call must outlast the
	// presence grace (20 s), counted from the answer.
	grace := rtc.DefaultConfig(rtc.Device{}, "").PresenceGrace
	time.Sleep(time.Until(answered.Add(grace + 3*time.Second)))
	if st, err := s.status(); err != nil || st.State != "in_call" {
		t.Fatalf("call gone %v after the answer (state %q, %v): alice's hashed identity not taken as her presence\n%s",
			grace, st.State, err, lastLines(s.log.String(), 20))
	}
	rstats := alice.LastRTCStats()
	t.Logf("alice: %d frames %dx%d; the intercom hears her; still in the call after %v", rstats.FramesDecoded, rstats.FrameWidth, rstats.FrameHeight, grace)

	left := time.Now()
	if err := alice.RTCLeave(ctx, room); err != nil {
		t.Fatal(err)
	}
	s.waitStatus(ctx, "idle after alice left", func(st status) bool { return st.State == "idle" })
	s.waitLeft(ctx, t, alice, room, left)
}

// deviceOf is the resident's device ID, from its membership's state key
// "_<user>_<device>_m.call" (device IDs may hold underscores).
func deviceOf(t testing.TB, r *resident.Resident, joined resident.Event) string {
	t.Helper()
	key := joined.Str("stateKey")
	prefix, suffix := "_"+r.UserID()+"_", "_m.call"
	if !strings.HasPrefix(key, prefix) || !strings.HasSuffix(key, suffix) || len(key) <= len(prefix)+len(suffix) {
		t.Fatalf("state key %q", key)
	}
	return key[len(prefix) : len(key)-len(suffix)]
}

// TestProvisionSaysRTCTransport: `intercom provision` (logged in) and
// then `intercom check-config` (with the kept login) say which transport
// the homeserver advertises, or that it advertises none.
func TestProvisionSaysRTCTransport(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Dendrite")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	hs := dendrite.StartT(t)
	alice, err := hs.Register(ctx, "alice", "alice-password")
	if err != nil {
		t.Fatal(err)
	}
	const service = "https://rtc.example.org/livekit/jwt"
	adv := startAdvertiser(t, hs.BaseURL, service)
	hs.BaseURL = adv.URL // the configuration written below names the advertiser
	path := provisionSetupExtra(t, ctx, hs, "matrixrtc:\n  enabled: true\n", alice)
	run := func(cmd string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := runIntercom(t, []string{cmd, "--config", path}, &out, &errOut); code != 0 {
			t.Fatalf("%s: exit %d\n%s%s", cmd, code, out.String(), errOut.String())
		}
		return out.String()
	}
	if out := run("provision"); !strings.Contains(out, "matrixrtc: none advertised: MatrixRTC ringing stays off until") {
		t.Fatalf("provision without a transport:\n%s", out)
	}
	adv.on.Store(true)
	want := "matrixrtc: transport discovered from the homeserver: " + service + " (via " + adv.URL + "/_matrix/client/v1/rtc/transports)"
	for _, cmd := range []string{"provision", "check-config"} {
		if out := run(cmd); !strings.Contains(out, want) {
			t.Fatalf("%s:\n%s\nwant %q", cmd, out, want)
		}
	}
}
