package daemon

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/doorbell/intercom/device/whep"
	"github.com/doorbell/intercom/matrix/matrixtest"
	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/provisioning/provisioningtest"
)

// writeTokenConfig writes the base configuration for hs with
// api.token_file (plus extraAPI under api:) and returns the config's path
// and the token.
func writeTokenConfig(t testing.TB, hs *matrixtest.Server, extraAPI string) (string, string) {
	t.Helper()
	const token = "whep-test-token-0123456789"
	cfg := strings.Replace(fmt.Sprintf(runConfig, hs.URL, false), "api:\n  listen: 127.0.0.1:8080\n",
		"api:\n  listen: 127.0.0.1:8080\n  token_file: ./token\n"+extraAPI, 1)
	path := provisioningtest.WriteConfig(t, cfg, 0o600)
	if err := os.WriteFile(filepath.Join(filepath.Dir(path), "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, token
}

// TestRunWHEP: the daemon serves the camera over WHEP behind its guard:
// no token 401; the token as a Basic password (go2rtc's way) 201, and the
// viewer gets the door's H.264; the status counts the viewer and the
// call encoder's users; DELETE ends it.
func TestRunWHEP(t *testing.T) {
	t.Parallel()
	hs := newHS(t)
	path, token := writeTokenConfig(t, hs, "  whep_max_viewers: 2\n")
	r := startDaemon(t, hs, path)

	offer, pc, frames := whepOffer(t)
	post := func(auth string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, "http://"+r.api+whep.Path, strings.NewReader(offer))
		req.Header.Set("Content-Type", "application/sdp")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if resp := post(""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without the token: %s", resp.Status)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://go2rtc:"+token+"@"+r.api+whep.Path, strings.NewReader(offer))
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := http.DefaultClient.Do(req) // Go's client sends the user info as Basic credentials
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("with the token as Basic password: %s %s", resp.Status, answer)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for frames() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no video from the door")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var st struct {
		Media struct {
			Encoders []media.EncoderStats `json:"encoders"`
			WHEP     whep.Status          `json:"whep"`
		} `json:"media"`
	}
	r.waitHTTP("the viewer in the status", "/api/status", func(code int, body []byte) bool {
		return code == http.StatusOK && json.Unmarshal(body, &st) == nil && st.Media.WHEP.Viewers == 1
	})
	if st.Media.WHEP.MaxViewers != 2 {
		t.Errorf("whep status %+v, want max 2 (api.whep_max_viewers)", st.Media.WHEP)
	}
	del, _ := http.NewRequest(http.MethodDelete, "http://"+r.api+resp.Header.Get("Location"), nil)
	del.Header.Set("Authorization", "Bearer "+token)
	dresp, err := http.DefaultClient.Do(del)
	if err != nil {
		t.Fatal(err)
	}
	dresp.Body.Close()
	if dresp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %s", dresp.Status)
	}
	r.waitHTTP("no viewer", "/api/status", func(code int, body []byte) bool {
		return code == http.StatusOK && json.Unmarshal(body, &st) == nil && st.Media.WHEP.Viewers == 0
	})
}

// whepOffer makes a recvonly audio+video offer with pion on loopback,
// gathered, and returns it with its connection and a count of the video
// RTP it receives.
func whepOffer(t *testing.T) (string, *webrtc.PeerConnection, func() int64) {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() && ip.To4() != nil })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	var n atomic.Int64
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		go func() {
			for {
				if _, _, err := tr.ReadRTP(); err != nil {
					return
				}
				if tr.Kind() == webrtc.RTPCodecTypeVideo {
					n.Add(1)
				}
			}
		}()
	})
	o, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	g := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(o); err != nil {
		t.Fatal(err)
	}
	<-g
	return pc.LocalDescription().SDP, pc, n.Load
}
