package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/doorbell/intercom/gpio"
	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/alsa"
	"github.com/doorbell/intercom/media/v4l2"
	"github.com/doorbell/intercom/provisioning"
)

// hwtestOptions are hwtest's inputs; tests replace the interaction.
type hwtestOptions struct {
	yes        bool          // answer yes to every question (non-interactive)
	snapshot   string        // where the camera's picture is saved
	buttonWait time.Duration // how long to wait for a press
	record     time.Duration // microphone recording length
	in         io.Reader     // answers
	out        io.Writer
	// onHardware, if set, is called once the hardware is open; tests
	// drive the simulated button through it (without it a simulated
	// button is skipped: nothing could press it).
	onHardware func(*hardware)
}

// HWTestOptions are `intercom hwtest`'s flags.
type HWTestOptions struct {
	Config     string        // config file
	Yes        bool          // pulse the relay and take every part as seen/heard without asking
	Snapshot   string        // file the camera's picture is saved to
	ButtonWait time.Duration // how long to wait for a button press
}

// HWTest is `intercom hwtest`: it walks an installer through every part
// of the box and prints one PASS, FAIL or SKIP line per part; the exit
// status is 1 if any part failed.
func HWTest(ctx context.Context, o HWTestOptions, stdin io.Reader, stdout, stderr io.Writer) int {
	path, yes, snap, wait := &o.Config, &o.Yes, &o.Snapshot, &o.ButtonWait
	data, err := readConfigFile(*path)
	if err != nil {
		fmt.Fprintln(stderr, "intercom hwtest:", err)
		return 1
	}
	dir, _ := filepath.Abs(filepath.Dir(*path))
	// Only the file: hwtest needs no Matrix secrets.
	cfg, err := provisioning.Parse(*path, data, dir)
	if err != nil {
		var ps provisioning.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				fmt.Fprintln(stderr, p)
			}
		}
		fmt.Fprintln(stderr, "intercom hwtest:", err)
		return 1
	}
	return hwtest(ctx, cfg, hwtestOptions{
		yes: *yes, snapshot: *snap, buttonWait: *wait, record: 3 * time.Second, in: stdin, out: stdout,
	}, stderr)
}

type hwtestRun struct {
	hwtestOptions
	cfg    *provisioning.Config
	hw     *hardware
	answer *bufio.Reader
	failed int
	ctx    context.Context // the command's: Ctrl-C stops the part under way
}

func hwtest(ctx context.Context, cfg *provisioning.Config, opts hwtestOptions, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	hw, err := openHardware(cfg, log)
	if err != nil {
		fmt.Fprintf(opts.out, "FAIL gpio: %v\n", err)
		fmt.Fprintln(opts.out, "hwtest: 1 part failed")
		return 1
	}
	defer hw.Close()
	if opts.onHardware != nil {
		opts.onHardware(hw)
	}
	if opts.in == nil {
		opts.in = strings.NewReader("")
	}
	r := &hwtestRun{hwtestOptions: opts, cfg: cfg, hw: hw, answer: bufio.NewReader(opts.in), ctx: ctx}
	fmt.Fprintf(r.out, "hwtest: gpio %s, camera %s, audio %s\n", cfg.Hardware.GPIO, cfg.Hardware.Camera, cfg.Hardware.Audio)
	r.part("camera", r.camera)
	rec := r.partValue("microphone", r.microphone)
	r.part("playback", func(ctx context.Context) (string, error) { return r.playback(ctx, rec) })
	r.part("speaker", r.speaker)
	r.part("ringer", r.ringer)
	r.part("relay", r.relay)
	r.part("button", r.button)
	if r.failed > 0 {
		fmt.Fprintf(r.out, "hwtest: %d part(s) failed\n", r.failed)
		return 1
	}
	fmt.Fprintln(r.out, "hwtest: all parts passed")
	return 0
}

// errSkip marks a part that was not tested (simulated, or declined).
type errSkip struct{ why string }

func (e errSkip) Error() string { return e.why }

func (r *hwtestRun) part(name string, f func(context.Context) (string, error)) {
	ctx, cancel := context.WithTimeout(r.ctx, 2*time.Minute)
	defer cancel()
	msg, err := f(ctx)
	var skip errSkip
	switch {
	case errors.As(err, &skip):
		fmt.Fprintf(r.out, "SKIP %s: %s\n", name, skip.why)
	case err != nil:
		r.failed++
		fmt.Fprintf(r.out, "FAIL %s: %v\n", name, err)
	default:
		fmt.Fprintf(r.out, "PASS %s: %s\n", name, msg)
	}
}

func (r *hwtestRun) partValue(name string, f func(context.Context) ([]int16, string, error)) []int16 {
	var rec []int16
	r.part(name, func(ctx context.Context) (string, error) {
		var msg string
		var err error
		rec, msg, err = f(ctx)
		return msg, err
	})
	return rec
}

// ask asks a yes/no question; --yes answers yes, end of input no.
func (r *hwtestRun) ask(q string) bool {
	if r.yes {
		return true
	}
	fmt.Fprintf(r.out, "%s [y/N] ", q)
	line, _ := r.answer.ReadString('\n')
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "y" || a == "yes"
}

func (r *hwtestRun) camera(ctx context.Context) (string, error) {
	var desc string
	if r.hw.camera != nil {
		formats, err := v4l2.Probe(nil, r.cfg.Camera.Device)
		if err != nil {
			return "", err
		}
		var names []string
		for f, n := range formats {
			names = append(names, fmt.Sprintf("%s (%s)", f, n))
		}
		sort.Strings(names)
		mode, err := v4l2.Negotiate(formats, r.cfg.Camera.Format, r.hw.passThrough)
		if err != nil {
			return "", err
		}
		desc = fmt.Sprintf("%s offers %s; using %s", r.cfg.Camera.Device, strings.Join(names, ", "), mode)
	} else {
		desc = "test pattern"
	}
	stream, err := media.NewStream(media.StreamConfig{
		Width: r.cfg.Video.Width, Height: r.cfg.Video.Height, FPS: r.cfg.Video.FPS, OpenVideo: r.hw.openVideo(),
	})
	if err != nil {
		return "", err
	}
	defer stream.Close()
	jpg, err := stream.Snapshot(ctx)
	if errors.Is(err, media.ErrNoPicture) {
		return desc + "; no snapshot in H.264 passthrough (set camera.format: mjpeg to see one)", nil
	}
	if err != nil {
		return "", err
	}
	if r.hw.camera != nil && !r.hw.camera.Status().Available {
		return "", fmt.Errorf("%s: %s", desc, r.hw.camera.Status().Error)
	}
	if err := os.WriteFile(r.snapshot, jpg, 0o644); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s; snapshot saved to %s (%d bytes)", desc, r.snapshot, len(jpg)), nil
}

func (r *hwtestRun) microphone(ctx context.Context) ([]int16, string, error) {
	if r.cfg.Hardware.Audio != "alsa" {
		return nil, "", errSkip{"audio is simulated (tone)"}
	}
	// The microphone as tuned by audio.capture_gain_db, before the echo
	// canceller and the rest of the processing: the level the installer
	// sets is what those stages get.
	mic, err := alsa.OpenMicrophone(r.cfg.Audio.Capture, float64(r.cfg.Audio.CaptureGainDB), false, nil)
	if err != nil {
		return nil, "", err
	}
	defer mic.Close()
	fmt.Fprintf(r.out, "recording %v from %s (capture_gain_db %d): speak now\n", r.record, r.cfg.Audio.Capture, r.cfg.Audio.CaptureGainDB)
	var rec []int16
	meter := 0 // start of the stretch the meter has not shown yet
	for len(rec) < int(r.record*media.SampleRate/time.Second) {
		pcm, err := mic.ReadAudio(ctx)
		if err != nil {
			return nil, "", err
		}
		rec = append(rec, pcm...)
		if len(rec)-meter >= meterSamples {
			fmt.Fprintln(r.out, meterLine(rec[meter:]))
			meter = len(rec)
		}
	}
	level, peak := dbfs(rec)
	msg := fmt.Sprintf("%s: %v recorded, level %.1f dBFS, peak %.1f dBFS", r.cfg.Audio.Capture, r.record, level, peak)
	// A connected microphone always carries some noise; exact digital
	// silence means no signal reaches the card.
	if peak < -90 {
		return rec, "", fmt.Errorf("%s: silence (no signal; check the wiring and the capture mixer)", msg)
	}
	return rec, msg, nil
}

// The level meter shows every quarter of a second: often enough to follow
// a voice, slowly enough to read.
const meterSamples = media.SampleRate / 4

// meterLine is one reading of the live level meter: RMS and peak in dBFS
// and a bar of the RMS from -60 to 0 dBFS (one mark per 2 dB), with a
// warning when the peak reaches full scale (lower capture_gain_db).
func meterLine(pcm []int16) string {
	rms, peak := dbfs(pcm)
	marks := 0
	if !math.IsInf(rms, -1) {
		marks = int(max(0, min(30, (rms+60)/2)))
	}
	line := fmt.Sprintf("  mic %6.1f dBFS rms %6.1f dBFS peak |%-30s|", max(rms, -99), max(peak, -99), strings.Repeat("#", marks))
	if peak > -0.1 {
		line += " CLIPPING"
	}
	return line
}

func dbfs(pcm []int16) (rms, peak float64) {
	var sum float64
	var p int
	for _, v := range pcm {
		f := float64(v) / 32768
		sum += f * f
		p = max(p, abs(int(v)))
	}
	if len(pcm) == 0 || sum == 0 {
		return math.Inf(-1), math.Inf(-1)
	}
	return 10 * math.Log10(sum/float64(len(pcm))), 20 * math.Log10(float64(p)/32768)
}

func samplesOf(d time.Duration) int { return int(d * media.SampleRate / time.Second) }

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// play plays pcm as a resident's voice would be: through
// audio.playback_gain_db and the speaker's limiter.
func (r *hwtestRun) play(ctx context.Context, pcm []int16) error {
	pb, err := alsa.OpenPlayback(r.cfg.Audio.Playback)
	if err != nil {
		return err
	}
	pcm = slices.Clone(pcm)
	limit := media.NewLimiter(media.LimiterCeilingDBFS, media.LimiterLookahead, media.LimiterRelease)
	pcm = append(pcm, make([]int16, samplesOf(limit.Delay()))...) // flush the lookahead
	limit.Process(pcm, media.DBToGain(float64(r.cfg.Audio.PlaybackGainDB)))
	if err := pb.Write(ctx, pcm); err != nil {
		pb.Close()
		return err
	}
	return pb.Close()
}

func (r *hwtestRun) playback(ctx context.Context, rec []int16) (string, error) {
	if r.cfg.Hardware.Audio != "alsa" {
		return "", errSkip{"audio is simulated (tone)"}
	}
	if rec == nil {
		return "", errSkip{"nothing recorded"}
	}
	if err := r.play(ctx, rec); err != nil {
		return "", err
	}
	if !r.ask("Did you hear the recording?") {
		return "", errors.New("recording not heard")
	}
	return fmt.Sprintf("recording played on %s", r.cfg.Audio.Playback), nil
}

func (r *hwtestRun) speaker(ctx context.Context) (string, error) {
	if r.cfg.Hardware.Audio != "alsa" {
		return "", errSkip{"audio is simulated (tone)"}
	}
	tone := media.NewTone(1000, 0.25)
	var pcm []int16
	for range 50 { // one second
		pcm = append(pcm, tone.Next()...)
	}
	tone.Close()
	if err := r.play(ctx, pcm); err != nil {
		return "", err
	}
	if !r.ask("Did you hear a 1 kHz tone?") {
		return "", errors.New("tone not heard")
	}
	return fmt.Sprintf("1 s of 1 kHz at -12 dBFS played on %s with playback_gain_db %d", r.cfg.Audio.Playback, r.cfg.Audio.PlaybackGainDB), nil
}

func (r *hwtestRun) ringer(ctx context.Context) (string, error) {
	if r.cfg.Hardware.GPIO == "periph" && r.cfg.GPIO.Ringer == "" {
		return "", errSkip{"no gpio.ringer configured"}
	}
	var total time.Duration
	for _, d := range gpio.DefaultCadence {
		total += d
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.hw.ringer.Run(rctx) }()
	r.hw.ringer.Set(true)
	time.Sleep(10 * time.Millisecond)
	on := r.hw.ringer.Output()
	time.Sleep(total)
	r.hw.ringer.Set(false)
	cancel()
	if err := <-done; err != nil {
		return "", err
	}
	if !on {
		return "", errors.New("output not driven on")
	}
	if r.cfg.Hardware.GPIO == "sim" {
		return "", errSkip{fmt.Sprintf("simulated pin; one cadence (%v) ran", total)}
	}
	if !r.ask("Did the ringer ring?") {
		return "", errors.New("not heard")
	}
	return fmt.Sprintf("%s rang one cadence (%v)", r.cfg.GPIO.Ringer, total), nil
}

func (r *hwtestRun) relay(ctx context.Context) (string, error) {
	if r.cfg.Hardware.GPIO == "periph" && r.cfg.GPIO.Relay == "" {
		return "", errSkip{"no gpio.relay configured"}
	}
	if !r.ask("Pulse the door relay for 1 s? The door will open.") {
		return "", errSkip{"not confirmed"}
	}
	seen := make(chan bool, 1)
	go func() {
		time.Sleep(100 * time.Millisecond)
		seen <- r.hw.relay.Energised()
	}()
	if err := r.hw.relay.Pulse(ctx, time.Second); err != nil {
		return "", err
	}
	if !<-seen || r.hw.relay.Energised() {
		return "", errors.New("relay not driven as asked")
	}
	if r.cfg.Hardware.GPIO == "sim" {
		return "", errSkip{"simulated pin; pulsed 1 s"}
	}
	return fmt.Sprintf("%s pulsed for 1 s and released", r.cfg.GPIO.Relay), nil
}

func (r *hwtestRun) button(ctx context.Context) (string, error) {
	if r.cfg.Hardware.GPIO == "sim" && r.onHardware == nil {
		return "", errSkip{"simulated button"}
	}
	fmt.Fprintf(r.out, "press the doorbell button within %v\n", r.buttonWait)
	bctx, cancel := context.WithTimeout(ctx, r.buttonWait)
	defer cancel()
	pressed := make(chan struct{}, 1)
	start := time.Now()
	err := r.hw.button.Run(bctx, func() {
		select {
		case pressed <- struct{}{}:
		default:
		}
		cancel()
	})
	if err != nil {
		return "", err
	}
	select {
	case <-pressed:
		return fmt.Sprintf("press seen after %v", time.Since(start).Round(time.Millisecond)), nil
	default:
		return "", fmt.Errorf("no press within %v", r.buttonWait)
	}
}
