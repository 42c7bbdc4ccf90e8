package daemon

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image/jpeg"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/doorbell/intercom/provisioning"
)

// hwtestALSA writes, once per test process (alsa-lib reads its
// configuration once), an ALSA configuration whose "hwmic" PCM captures
// from a raw file holding a 1 kHz tone and whose playback is written to a
// file, over the null plugin: real alsa-lib without a sound card.
var hwtestALSA = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "hwtest-alsa")
	if err != nil {
		return "", err
	}
	tone := make([]byte, 2*5*48000)
	for i := 0; i < len(tone)/2; i++ {
		v := int16(0.25 * 32767 * math.Sin(2*math.Pi*1000*float64(i)/48000))
		binary.LittleEndian.PutUint16(tone[2*i:], uint16(v))
	}
	if err := os.WriteFile(filepath.Join(dir, "in.raw"), tone, 0o600); err != nil {
		return "", err
	}
	conf := fmt.Sprintf(`pcm.hwmic { type file; slave.pcm { type null }; file "/dev/null"; infile "%[1]s/in.raw"; format "raw" }
pcm.hwspk { type file; slave.pcm { type null }; file "%[1]s/out.raw"; format "raw" }
`, dir)
	path := filepath.Join(dir, "asound.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return "", err
	}
	os.Setenv("ALSA_CONFIG_PATH", path)
	return dir, nil
})

func hwtestConfig(t *testing.T, extra string) *provisioning.Config {
	t.Helper()
	y := `matrix: {homeserver: "http://127.0.0.1:1", user_id: "@door:example.org"}
state_dir: ./state
residents: ["@alice:example.org"]
video: {width: 320, height: 240, fps: 15}
` + extra
	cfg, err := provisioning.Parse("hw.yaml", []byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestHWTestSimAndFilePlugins runs hwtest on the simulated GPIO and camera
// and on real alsa-lib (file plugins): every part passes or is skipped as
// simulated, the microphone's tone is measured, the played audio lands in
// the playback file, the snapshot is a JPEG, and a press on the simulated
// button is seen.
func TestHWTestSimAndFilePlugins(t *testing.T) {
	dir, err := hwtestALSA()
	if err != nil {
		t.Fatal(err)
	}
	cfg := hwtestConfig(t, "hardware: {audio: alsa}\naudio: {capture: hwmic, playback: hwspk, playback_gain_db: -6}\n")
	var out bytes.Buffer
	snap := filepath.Join(t.TempDir(), "snap.jpg")
	code := hwtest(t.Context(), cfg, hwtestOptions{
		yes: true, snapshot: snap, buttonWait: 10 * time.Second, record: time.Second, out: &out,
		onHardware: func(h *hardware) {
			pin := h.buttonPin.(*gpiotest.Pin)
			go func() {
				time.Sleep(300 * time.Millisecond)
				pin.EdgesChan <- pgpio.Low // pressed (active low)
			}()
		},
	}, os.Stderr)
	t.Log("\n" + out.String())
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"PASS camera", "PASS microphone", "level -15", "PASS playback", "PASS speaker",
		"SKIP ringer", "SKIP relay", "PASS button", "all parts passed",
		// The live meter while recording: the tone's RMS and peak.
		"  mic  -15.1 dBFS rms  -12.0 dBFS peak |######################        |"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	jpg, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	if img, err := jpeg.Decode(bytes.NewReader(jpg)); err != nil || img.Bounds().Dx() != 320 {
		t.Fatalf("snapshot: %v", err)
	}
	played, err := os.ReadFile(filepath.Join(dir, "out.raw"))
	if err != nil {
		t.Fatal(err)
	}
	// The file plugin truncates its file at every open: what is left is
	// the last thing played, the 1 s tone.
	if len(played) < 2*48000*9/10 {
		t.Fatalf("only %d bytes played", len(played))
	}
	var peak int16
	for i := 0; i+1 < len(played); i += 2 {
		peak = max(peak, int16(binary.LittleEndian.Uint16(played[i:])))
	}
	// The tone peaks at 0.25 of full scale; playback_gain_db -6 halves it.
	if peak < 4000 || peak > 4200 {
		t.Fatalf("played tone peaks at %d, want about 4100 (-12 dBFS, then -6 dB)", peak)
	}
}

// TestHWTestFailsAndSays: a microphone that does not exist and a button
// nobody presses fail, each with its own line, and the exit status is 1.
func TestHWTestFailsAndSays(t *testing.T) {
	if _, err := hwtestALSA(); err != nil {
		t.Fatal(err)
	}
	cfg := hwtestConfig(t, "hardware: {audio: alsa}\naudio: {capture: nomic, playback: hwspk}\n")
	var out bytes.Buffer
	code := hwtest(t.Context(), cfg, hwtestOptions{
		snapshot: filepath.Join(t.TempDir(), "s.jpg"), buttonWait: 200 * time.Millisecond, record: time.Second,
		in: strings.NewReader("n\nn\n"), out: &out, onHardware: func(*hardware) {},
	}, os.Stderr)
	t.Log("\n" + out.String())
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{"FAIL microphone", "SKIP playback", "FAIL speaker: tone not heard",
		"SKIP relay: not confirmed", "FAIL button: no press", "3 part(s) failed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
