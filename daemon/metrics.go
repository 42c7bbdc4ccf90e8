package daemon

import (
	"context"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/device"
	"github.com/doorbell/intercom/matrix"
	"github.com/doorbell/intercom/media"
)

// metrics is what GET /metrics serves (Prometheus text format), on a
// registry of the daemon's own: no package-level default registry, so two
// daemons in one test process never share a counter. The door's counters
// follow its event stream (device.Config.OnEvent), so /metrics and
// /api/events can never tell different stories; the rest is read from
// the parts at each scrape.
type metrics struct {
	reg *prometheus.Registry

	presses       *prometheus.CounterVec
	rings         *prometheus.CounterVec
	pressToRing   prometheus.Histogram
	answers       *prometheus.CounterVec
	outcomes      *prometheus.CounterVec
	answerToMedia *prometheus.HistogramVec
	pressToInvite prometheus.Histogram
	// pressAt is the last press (Unix ns) whose first classic invite the
	// homeserver has not taken yet; 0: none.
	pressAt       atomic.Int64
	doorOpens     prometheus.Counter
	doorRefusals  *prometheus.CounterVec
	relayFailures prometheus.Counter
}

// metricSources are the parts read at each scrape; any may be nil.
type metricSources struct {
	// Sync is the Matrix session's status.
	Sync func() matrix.Status
	// Call is the merged call status (the path in a call, if any).
	Call func() callengine.Status
	// Encoders are the media stream's encoder counters.
	Encoders func() []media.EncoderStats
	// VideoLoss is the worst open peer's reported loss of the door's
	// video (classic and household calls).
	VideoLoss func() (float64, bool)
	// VisitorsQueued counts the missed-visitor notices waiting in
	// state_dir for the homeserver.
	VisitorsQueued func() int
}

// The label values; anything else is folded into "other", so no label set
// can grow with what a homeserver or a resident sends.
var (
	metricPaths        = []string{"classic", "household", "matrixrtc"}
	metricPressSources = []string{"gpio", "api"}
	metricOutcomes     = []string{device.OutcomeAnswered, device.OutcomeMissed, device.OutcomeFailed}
	metricRefusals     = []device.Verdict{device.VerdictUnknownTarget, device.VerdictDuplicate, device.VerdictStale,
		device.VerdictFuture, device.VerdictUnauthorized, device.VerdictOutsideWindow, device.VerdictRateLimited,
		device.VerdictUntrusted}
)

func bounded(v string, known []string) string {
	if slices.Contains(known, v) {
		return v
	}
	return "other"
}

func newMetrics(src metricSources) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.presses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "intercom_presses_total", Help: "Doorbell presses, by source (gpio, api).",
	}, []string{"source"})
	m.rings = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "intercom_rings_total", Help: "Rings placed, by path (classic, household, matrixrtc); a ring on two paths counts on both.",
	}, []string{"path"})
	m.pressToRing = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "intercom_press_to_ring_seconds",
		Help:    "From the press loop taking a press to the ring placed on every path (classic invites handed to their senders).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	})
	m.pressToInvite = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "intercom_press_to_invite_sent_seconds",
		Help:    "From a press to the homeserver's answer to the first m.call.invite sent for it (the classic path's ring sent).",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	})
	m.answers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "intercom_answers_total", Help: "Rings answered, by the path that won.",
	}, []string{"path"})
	m.outcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "intercom_ring_outcomes_total", Help: "Visits by outcome: answered, missed (unanswered), failed (nobody could be rung).",
	}, []string{"outcome"})
	m.answerToMedia = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "intercom_answer_to_media_seconds",
		Help:    "From the ring learning of the answer to the winning path's media connected (classic and household; MatrixRTC media go through LiveKit and are not timed).",
		Buckets: []float64{.05, .1, .25, .5, 1, 2, 3, 5, 10, 30},
	}, []string{"path"})
	m.doorOpens = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "intercom_door_opens_total", Help: "Door commands obeyed (the relay was told to pulse).",
	})
	m.doorRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "intercom_door_refusals_total", Help: "Door commands refused, by reason (the door policy's verdict).",
	}, []string{"reason"})
	m.relayFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "intercom_door_relay_failures_total", Help: "Relay pulses that failed (the strike may not have opened, or not released).",
	})
	// Every known label value from the start: a rate over a series that
	// appears at its first event misses that event.
	for _, s := range metricPressSources {
		m.presses.WithLabelValues(s)
	}
	for _, p := range metricPaths {
		m.rings.WithLabelValues(p)
		m.answers.WithLabelValues(p)
	}
	for _, o := range metricOutcomes {
		m.outcomes.WithLabelValues(o)
	}
	for _, v := range metricRefusals {
		m.doorRefusals.WithLabelValues(string(v))
	}
	m.reg.MustRegister(m.presses, m.rings, m.pressToRing, m.pressToInvite, m.answers, m.outcomes, m.answerToMedia,
		m.doorOpens, m.doorRefusals, m.relayFailures,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		stateCollector{src})
	return m
}

// observe counts one event of the door; device.Intercom calls it on the
// publisher's goroutine.
func (m *metrics) observe(ev device.Event) {
	switch d := ev.Data.(type) {
	case device.PressEvent:
		m.presses.WithLabelValues(bounded(d.Source, metricPressSources)).Inc()
		m.pressAt.Store(d.Time.UnixNano())
	case device.RingEvent:
		if d.PressToRing == 0 {
			// A ring placed later for a visitor kept waiting: its
			// invites are not the press's to time.
			m.pressAt.Store(0)
		}
		for _, p := range d.Paths {
			m.rings.WithLabelValues(bounded(p, metricPaths)).Inc()
		}
		if d.PressToRing > 0 { // a retry for a waiting visitor is no press's ring
			m.pressToRing.Observe(d.PressToRing)
		}
	case device.CallEvent:
		switch d.Outcome {
		case device.OutcomeAnswered:
			m.answers.WithLabelValues(bounded(d.Path, metricPaths)).Inc()
			m.outcomes.WithLabelValues(d.Outcome).Inc()
		case device.OutcomeMissed, device.OutcomeFailed:
			m.outcomes.WithLabelValues(d.Outcome).Inc()
			if d.Ring == 0 {
				m.pressAt.Store(0) // no ring: nothing of it is sent
			}
		case device.OutcomeConnected:
			if d.Path != "matrixrtc" {
				m.answerToMedia.WithLabelValues(bounded(d.Path, metricPaths)).Observe(d.AnswerToMedia)
			}
		}
	case device.DoorEvent:
		if d.Verdict == device.VerdictOpen {
			m.doorOpens.Inc()
		} else {
			m.doorRefusals.WithLabelValues(bounded(string(d.Verdict), verdictNames)).Inc()
		}
	case device.RelayEvent:
		if d.Err != "" {
			m.relayFailures.Inc()
		}
	}
}

// inviteSent times the press's first classic invite, once the
// homeserver took it.
func (m *metrics) inviteSent(at time.Time) {
	if m == nil {
		return
	}
	if p := m.pressAt.Swap(0); p != 0 {
		m.pressToInvite.Observe(at.Sub(time.Unix(0, p)).Seconds())
	}
}

// invitesTimed is the classic engine's transport, telling the metrics
// when an invite has reached the homeserver (its PUT answered).
type invitesTimed struct {
	callengine.Transport
	sent func(time.Time)
}

func (t invitesTimed) SendRoomEvent(ctx context.Context, room callengine.RoomID, eventType string, content any) error {
	err := t.Transport.SendRoomEvent(ctx, room, eventType, content)
	if err == nil && eventType == callengine.TypeInvite {
		t.sent(time.Now())
	}
	return err
}

var verdictNames = func() []string {
	out := make([]string, len(metricRefusals))
	for i, v := range metricRefusals {
		out[i] = string(v)
	}
	return out
}()

// handler serves the registry.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// stateCollector reads the parts' state at each scrape. The per-call
// series exist only while a call is on, labelled by its path alone: they
// vanish when it ends, and no call or user ID ever becomes a label.
type stateCollector struct{ src metricSources }

var (
	descSyncErrors = prometheus.NewDesc("intercom_matrix_sync_errors_total",
		"Failed Matrix /sync requests since start.", nil, nil)
	descLastSync = prometheus.NewDesc("intercom_matrix_last_sync_timestamp_seconds",
		"Unix time of the last successful Matrix /sync (absent before the first).", nil, nil)
	descSyncHealthy = prometheus.NewDesc("intercom_matrix_sync_healthy",
		"1 while the Matrix sync is healthy (as /healthz), else 0.", nil, nil)
	descEncodedBytes = prometheus.NewDesc("intercom_media_encoded_bytes_total",
		"Bytes of media written to the shared tracks, by codec (encoded or passed through).", []string{"codec"}, nil)
	descTargetBitrate = prometheus.NewDesc("intercom_call_video_target_bitrate_bits_per_second",
		"The video encoder's target during a call (rate control following the receivers' estimates), by the call's path.", []string{"path"}, nil)
	descVideoLoss = prometheus.NewDesc("intercom_call_video_loss_ratio",
		"Fraction of the door's video lost, from the worst receiver's last RTCP report, during a classic or household call.", []string{"path"}, nil)
	descVisitorsQueued = prometheus.NewDesc("intercom_visitor_notices_queued",
		"Missed-visitor notices kept in state_dir until the homeserver takes them.", nil, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSyncErrors, descLastSync, descSyncHealthy, descEncodedBytes,
		descTargetBitrate, descVideoLoss, descVisitorsQueued} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.src
	if s.Sync != nil {
		st := s.Sync()
		ch <- prometheus.MustNewConstMetric(descSyncErrors, prometheus.CounterValue, float64(st.SyncErrors))
		if !st.LastSync.IsZero() {
			ch <- prometheus.MustNewConstMetric(descLastSync, prometheus.GaugeValue, float64(st.LastSync.UnixNano())/1e9)
		}
		ch <- prometheus.MustNewConstMetric(descSyncHealthy, prometheus.GaugeValue, b2f(st.Healthy))
	}
	var encoders []media.EncoderStats
	if s.Encoders != nil {
		encoders = s.Encoders()
		for _, e := range encoders {
			ch <- prometheus.MustNewConstMetric(descEncodedBytes, prometheus.CounterValue, float64(e.Bytes), string(e.Codec))
		}
	}
	if s.VisitorsQueued != nil {
		ch <- prometheus.MustNewConstMetric(descVisitorsQueued, prometheus.GaugeValue, float64(s.VisitorsQueued()))
	}
	if s.Call == nil {
		return
	}
	st := s.Call()
	if st.Phase != callengine.PhaseInCall {
		return
	}
	path := "other"
	if st.Ring != nil && st.Ring.AnsweredOn != "" {
		path = bounded(st.Ring.AnsweredOn, metricPaths)
	}
	for _, e := range encoders {
		if e.Codec != media.Opus && e.Running && e.TargetBitrate > 0 {
			ch <- prometheus.MustNewConstMetric(descTargetBitrate, prometheus.GaugeValue, float64(e.TargetBitrate), path)
			break
		}
	}
	if s.VideoLoss != nil && path != "matrixrtc" {
		if loss, ok := s.VideoLoss(); ok {
			ch <- prometheus.MustNewConstMetric(descVideoLoss, prometheus.GaugeValue, loss, path)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
