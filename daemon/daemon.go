package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/group"
	"github.com/doorbell/intercom/device"
	"github.com/doorbell/intercom/device/webui"
	"github.com/doorbell/intercom/device/whep"
	"github.com/doorbell/intercom/internal/runloop"
	"github.com/doorbell/intercom/matrix"
	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/codec"
	mwebrtc "github.com/doorbell/intercom/media/webrtc"
	"github.com/doorbell/intercom/provisioning"
)

// Run wires the configured parts together and runs them until ctx is
// done; version is the build's, for the log. Every part is checked before
// anything starts, so a broken setup never leaves a half-running
// intercom.
//
// The door comes first (issue 15): the button, the bell, the relay, the
// camera and the local API run from the first second and never wait for
// the homeserver. The Matrix side (matrixside.go: login, the residents'
// rooms, the call engines) comes up beside them, however long the
// homeserver takes; a press before that rings the bell for the ring
// timeout, keeps the visitor as missed, and rings the residents if the
// Matrix side is up before the bell stops.
func Run(ctx context.Context, cfg *provisioning.Config, version string, stderr io.Writer) error {
	return run(ctx, cfg, version, stderr, runHooks{})
}

// runHooks let the daemon's tests reach inside a Run.
type runHooks struct {
	// onHardware, if set, is called once the hardware is open: tests
	// press the simulated button through it.
	onHardware func(*hardware)
}

func run(ctx context.Context, cfg *provisioning.Config, version string, stderr io.Writer, hooks runHooks) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.Log.SlogLevel()}))
	hup, stopHUP := reloadSignals() // reload.go: SIGHUP must not kill a starting daemon
	defer stopHUP()
	log.Info("starting intercom", "version", version, "config", cfg)
	for _, w := range cfg.Warnings {
		log.Warn("config", "problem", w.String())
	}
	if err := cfg.MatrixRTC.ReadLiveKitKeys(); err != nil {
		return err
	}
	hw, err := openHardware(cfg, log) // hardware.go: pins, camera, sound card
	if err != nil {
		return err
	}
	defer hw.Close()
	if hooks.onHardware != nil {
		hooks.onHardware(hw)
	}

	// Bind the API first: a port clash is a configuration error and must
	// stop start-up before anything talks to the homeserver.
	ln, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return fmt.Errorf("api listen: %w", err)
	}
	defer ln.Close()
	// Its guard too (api.go): the intercom's handler is mounted on api
	// once the intercom exists, before the server starts.
	api := http.NewServeMux()
	// The local web page (device/webui); its installer tests reach the
	// parts once they exist (below), before the server starts.
	inst := &installer{}
	page := webui.New(webui.Config{Token: cfg.API.Token, Installer: inst, Logger: log.With("component", "webui")})
	guarded, err := apiHandler(cfg.API, ln.Addr(), api, page, log.With("component", "api"))
	if err != nil {
		return err
	}

	state, err := provisioning.OpenState(cfg.StateDir)
	if err != nil {
		return err
	}
	// The session is made here but reaches the homeserver only on the
	// Matrix side; until then its sends fail and are retried by whoever
	// made them (the visitor queue).
	session, err := newSession(cfg, state, log)
	if err != nil {
		return err
	}
	defer session.Close()

	stream, err := media.NewStream(media.StreamConfig{
		Width: cfg.Video.Width, Height: cfg.Video.Height, FPS: cfg.Video.FPS,
		VideoBitrate: cfg.Video.Bitrate, MinVideoBitrate: cfg.Video.MinBitrate, MaxVideoBitrate: cfg.Video.MaxBitrate,
		Encoders: hw.encoders(codec.Encoders()), Logger: log.With("component", "media"),
		OpenVideo: hw.openVideo(), OpenAudio: hw.openAudio(),
	})
	if err != nil {
		return err
	}
	defer stream.Close()
	// turn.relay_only: peers cannot be made until runTURN has set a TURN
	// server, so the engine's pool stays empty until then and the first
	// ring after that makes its peers on the spot.
	// One meter for the residents' audio, whichever way it comes.
	meter := media.NewAudioMeter()
	peers, err := mwebrtc.NewPeerFactory(stream, mwebrtc.Config{
		Meter:        meter,
		LoopbackOnly: loopbackOnly(), RelayOnly: cfg.TURN.RelayOnly,
		Speaker: hw.sink(), Logger: log.With("component", "webrtc"),
	})
	if err != nil {
		return err
	}

	// The camera for the home's other systems and the web page's live
	// view (device/whep): the calls' own tracks, no encode of its own.
	viewers := whep.New(whep.Config{Peers: whepPeers{peers}, MaxViewers: cfg.API.WHEPMaxViewers,
		Logger: log.With("component", "whep")})

	ringer, relay := hw.ringer, hw.relay
	defer relay.Halt()
	hh := newHousehold(cfg, session, peers, log) // household.go: nil unless household.group_call is mesh
	var hhNotices device.Household
	if hh != nil {
		hhNotices = hh // ring and missed notices also go to the household room
	}
	dir := &directory{}
	// Ring notices wait for the MatrixRTC rings to leave (ringsfirst.go).
	gate := &ringsFirst{}
	doors, err := newDoorParts(cfg, session, relay, stream, hhNotices, gate, noticeRooms(dir, hh), log)
	if err != nil {
		return err
	}

	// The Matrix side (matrixside.go) fills these in once it is up.
	// The visitor history (device/history.go), unless history.keep is 0.
	var history *device.History
	if cfg.History.Keep > 0 {
		history, err = device.OpenHistory(cfg.StateDir, cfg.History.Keep, cfg.History.MaxBytes, log.With("component", "history"))
		if err != nil {
			return err
		}
	}
	var intercom *device.Intercom
	// GET /metrics (metrics.go), behind the same guard as the API.
	mets := newMetrics(metricSources{
		Sync:           session.Status,
		Call:           func() callengine.Status { return intercom.CallStatus() },
		Encoders:       stream.Stats,
		VideoLoss:      peers.VideoLoss,
		VisitorsQueued: doors.visitors.Pending,
	})
	api.Handle("GET /metrics", mets.handler())
	// Events and state for home automation over MQTT (mqtt.go), when
	// mqtt.broker is set; the door never waits on the broker.
	home, err := newHomeMQTT(cfg, version, func() device.Status { return intercom.Status() }, log)
	if err != nil {
		return err
	}
	home.register(mets)

	side := &matrixSide{cfg: cfg, session: session, stream: stream, hw: hw, meter: meter, peers: peers,
		hh: hh, gate: gate, doors: doors, dir: dir, mets: mets, apiAddr: ln.Addr().String(), log: log}
	intercom = device.New(device.Config{
		// Caller: none until the Matrix side attaches its ring
		// coordinator (matrixSide.up).
		Ringer: ringer, Relay: relay, Residents: dir.get,
		Door: doors.door, Notices: doors.notices, Snapshot: stream,
		History: history, OnEvent: home.observe(mets.observe), MQTT: home.reporter(),
		Sync:   matrixReporter{s: session, hh: hh, side: side, visitors: doors.visitors, cfg: cfg, dir: dir},
		Media:  mediaReporter{stream: stream, peers: peers, hw: hw, viewers: viewers},
		Logger: log.With("component", "device"),
		// A press that reaches nobody (the homeserver away, or not
		// reached yet) still rings the bell for the ring timeout, and
		// the residents are rung if it comes back meanwhile (issue 15).
		// A reload of ring.timeout does not change it until the next
		// start.
		LocalRing: cfg.Ring.Timeout,
	})
	side.intercom = intercom
	api.Handle("/", intercom.Handler())
	api.Handle(whep.Path, viewers.Handler())
	api.Handle(whep.Path+"/", viewers.Handler())
	for _, p := range webui.Patterns() {
		api.Handle(p, page.Handler())
	}
	*inst = installer{
		cfg:    hwConfig{gpioSim: cfg.Hardware.GPIO == "sim", ringerName: cfg.GPIO.Ringer, relayName: cfg.GPIO.Relay},
		ringer: ringer, relay: relay, door: doors.door, sink: hw.sink(), stream: stream,
		phase: func() callengine.Phase { return intercom.Status().State },
	}
	srv := &http.Server{Handler: guarded, ReadHeaderTimeout: 5 * time.Second}

	g, gctx := errgroup.WithContext(ctx)
	// The door, from the first second.
	g.Go(func() error { return doors.door.Run(gctx) })
	g.Go(func() error { return ringer.Run(gctx) })
	g.Go(func() error { return intercom.Run(gctx) })
	g.Go(func() error {
		return hw.Run(gctx, func() {
			// The web page's button test takes the press instead:
			// an installer checking the wiring rings nobody.
			if !inst.takePress() {
				intercom.Press("gpio")
			}
		})
	})
	g.Go(func() error { return viewers.Run(gctx) })
	g.Go(func() error { return home.run(gctx) })
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("api: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), 2*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	// Missed-visitor notices kept in state_dir until the homeserver takes
	// them (issue 15): those of a press during an outage or before the
	// Matrix side was up, and those a restart left undelivered. They wait
	// for rooms to be known.
	g.Go(func() error { return doors.visitors.Run(gctx) })
	if history != nil {
		g.Go(func() error { return history.Run(gctx) })
	}
	// READY=1 once the Matrix sync is up; the watchdog (and, until then,
	// the start timeout's extensions) from the first second, over the
	// door's loops and, once they run, the Matrix side's (supervise.go).
	g.Go(func() error {
		return daemonSupervisor(log, session, side, len(cfg.Residents),
			loop{"device loop", intercom}, loop{"door loop", doors.door},
			loop{"gpio button loop", hw.button}, loop{"ringer loop", ringer}).Run(gctx)
	})
	g.Go(func() error { return side.run(gctx, g, hup) })
	log.Info("door up", "api", ln.Addr().String(), "api_token", cfg.API.Token != "", "residents", len(cfg.Residents))
	err = g.Wait()
	if ctx.Err() != nil {
		// Asked to stop (SIGTERM from systemd, Ctrl-C): the parts return
		// the cancellation as their error, which is not a failure.
		log.Info("intercom stopped", "cause", context.Cause(ctx))
		return nil
	}
	log.Error("intercom stopped", "err", err)
	return err
}

// retry runs op until it succeeds or ctx ends, waiting from 1 s up to
// 30 s between attempts; it returns ctx's error if ctx ended. Every
// failure is retried, even one the session marks permanent for its own
// request (a room creation it will not repeat): the intercom cannot do
// without these rooms, and the homeserver may be fixed meanwhile.
func retry(ctx context.Context, log *slog.Logger, what string, op func() error) error {
	b := runloop.Backoff{Base: time.Second, Max: 30 * time.Second}
	return runloop.RetryAll(ctx, &b, op, func(err error, wait time.Duration) {
		log.Warn(what+" failed; retrying", "err", err, "in", wait)
	})
}

// liveViewers are the users whose calls (1:1) or group-call devices
// (household) the intercom answers without a ring: live_view.allowed,
// default the residents.
func liveViewers(cfg *provisioning.Config) map[callengine.UserID]bool {
	out := map[callengine.UserID]bool{}
	for _, u := range cfg.LiveViewAllowed() {
		out[callengine.UserID(u)] = true
	}
	return out
}

// directory is the resident → room map, read at every press.
type directory struct {
	mu    sync.Mutex
	rooms map[callengine.UserID]callengine.RoomID
}

func (d *directory) set(rooms map[callengine.UserID]callengine.RoomID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rooms = rooms
}

func (d *directory) get() []callengine.Resident {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]callengine.Resident, 0, len(d.rooms))
	for u, r := range d.rooms {
		out = append(out, callengine.Resident{User: u, Room: r})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].User < out[j].User })
	return out
}

// matrixReporter is the status's matrix section: the session's sync,
// and the household call and MatrixRTC when they are on, each under its
// own key whatever else is configured.
type matrixReporter struct {
	s        *matrix.Session
	hh       *group.Runner // nil with group calls off
	side     *matrixSide
	visitors *device.VisitorQueue
	cfg      *provisioning.Config // as started: the homeserver and each resident's paths
	dir      *directory
}

// matrixStatus is the matrix section of /api/status.
type matrixStatus struct {
	Syncing  bool      `json:"syncing"`
	LastSync time.Time `json:"last_sync"`
	// Setup, present until the Matrix side is up, says what it waits
	// for ("logging in", "login failed: …"); the door works meanwhile.
	Setup string `json:"setup,omitempty"`
	// UnreachableSince, present only during an outage, is when the
	// homeserver stopped answering (no connection, a timeout or a 5xx);
	// LastError says how the last /sync failed.
	UnreachableSince *time.Time    `json:"homeserver_unreachable_since,omitempty"`
	Failures         int           `json:"failures"`
	LastError        string        `json:"last_error"`
	UserID           string        `json:"user_id"`
	DeviceID         string        `json:"device_id"`
	Household        *group.Status `json:"household,omitempty"`
	MatrixRTC        *rtcSection   `json:"matrixrtc,omitempty"`
	// Encryption is nil with matrix.encryption off.
	Encryption *encryptionStatus `json:"encryption,omitempty"`
	// PendingVisitorNotices counts missed-visitor notices kept in
	// state_dir until the homeserver takes them.
	PendingVisitorNotices int `json:"pending_visitor_notices"`
	// Homeserver and Residents are for the web page's "at a glance".
	Homeserver string           `json:"homeserver,omitempty"`
	Residents  []residentStatus `json:"residents,omitempty"`
}

// residentStatus is one resident: the direct room once it is known, and
// the paths a press rings them on (as configured at start; the
// household's own call is under household).
type residentStatus struct {
	UserID string   `json:"user_id"`
	RoomID string   `json:"room_id,omitempty"`
	Paths  []string `json:"paths"`
}

// residents lists the residents with their rooms and paths.
func (r matrixReporter) residents() []residentStatus {
	if r.cfg == nil {
		return nil
	}
	rooms := map[string]string{}
	if r.dir != nil {
		for _, res := range r.dir.get() {
			rooms[string(res.User)] = string(res.Room)
		}
	}
	out := make([]residentStatus, 0, len(r.cfg.Residents))
	for _, u := range r.cfg.Residents {
		rs := residentStatus{UserID: u, RoomID: rooms[u], Paths: []string{}}
		if r.cfg.RingsOn(u, provisioning.PathClassic) {
			rs.Paths = append(rs.Paths, provisioning.PathClassic)
		}
		if r.cfg.MatrixRTC.Enabled && r.cfg.RingsOn(u, provisioning.PathMatrixRTC) {
			rs.Paths = append(rs.Paths, provisioning.PathMatrixRTC)
		}
		out = append(out, rs)
	}
	return out
}

func (r matrixReporter) Healthy() bool { return r.s.Healthy() }
func (r matrixReporter) Report() any {
	st := syncStatus(r.s.Status())
	st.UserID, st.DeviceID = string(r.s.UserID()), r.s.DeviceID()
	st.Household = householdStatus(r.hh)
	if r.side != nil {
		st.Setup, st.MatrixRTC = r.side.Stage(), r.side.rtc.Load().rtcStatus()
	}
	st.Encryption = newEncryptionStatus(r.s.CryptoStatus())
	if r.visitors != nil {
		st.PendingVisitorNotices = r.visitors.Pending()
	}
	if r.cfg != nil {
		st.Homeserver = r.cfg.Matrix.Homeserver
	}
	st.Residents = r.residents()
	return st
}

// syncStatus is the sync loop's part of the matrix section.
func syncStatus(st matrix.Status) matrixStatus {
	out := matrixStatus{Syncing: st.Healthy, LastSync: st.LastSync, Failures: st.ConsecutiveFailures, LastError: st.LastError}
	if !st.UnreachableSince.IsZero() {
		since := st.UnreachableSince
		out.UnreachableSince = &since
	}
	return out
}

// householdStatus is the household call's last status; nil with group
// calls off.
func householdStatus(hh *group.Runner) *group.Status {
	if hh == nil {
		return nil
	}
	st := hh.MachineStatus()
	return &st
}

type mediaReporter struct {
	stream  *media.Stream
	peers   *mwebrtc.PeerFactory
	hw      *hardware
	viewers *whep.Server
}

func (r mediaReporter) Healthy() bool { return true }
func (r mediaReporter) Report() any {
	return mediaStatus{Encoders: r.stream.Stats(), ReceivedAudio: r.peers.ReceivedAudio(), Hardware: r.hw.status(),
		WHEP: r.viewers.Status()}
}

// mediaStatus is the media section of /api/status.
type mediaStatus struct {
	Encoders      []media.EncoderStats `json:"encoders"`
	ReceivedAudio media.ReceivedAudio  `json:"received_audio"`
	Hardware      hardwareStatus       `json:"hardware"`
	WHEP          whep.Status          `json:"whep"` // the camera's WHEP viewers
}

// loopbackOnly keeps ICE on 127.0.0.1 when INTERCOM_ICE_LOOPBACK=1: the
// demo and the end-to-end tests must not send media over the machine's
// other interfaces.
func loopbackOnly() bool { return os.Getenv("INTERCOM_ICE_LOOPBACK") == "1" }
