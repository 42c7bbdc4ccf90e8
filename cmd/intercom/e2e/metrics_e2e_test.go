package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrapeMetrics reads the intercom's /metrics with the Prometheus text
// parser.
func (e *e2e) scrapeMetrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + e.api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: HTTP %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// metricValue is the counter, gauge or histogram sample count of name
// whose labels include want (name=value pairs); -1 if there is none.
func metricValue(fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(want); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				found = found || l.GetName() == want[i] && l.GetValue() == want[i+1]
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// historyVisitor is an entry of /api/history as the tests read it.
type historyVisitor struct {
	ID          string   `json:"id"`
	Outcome     string   `json:"outcome"`
	Paths       []string `json:"paths"`
	Path        string   `json:"path"`
	AnsweredBy  string   `json:"answered_by"`
	Snapshot    bool     `json:"snapshot"`
	SnapshotURL string   `json:"snapshot_url"`
}

func (e *e2e) history(t *testing.T) []historyVisitor {
	t.Helper()
	resp, err := http.Get("http://" + e.api + "/api/history")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Visitors []historyVisitor `json:"visitors"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc.Visitors
}

// checkClassicCallCounted: after one press through the API answered by
// user on the classic path, /metrics and /api/history tell exactly that.
func (e *e2e) checkClassicCallCounted(t *testing.T, user string) {
	t.Helper()
	fams := e.scrapeMetrics(t)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"intercom_presses_total", []string{"source", "api"}, 1},
		{"intercom_rings_total", []string{"path", "classic"}, 1},
		{"intercom_answers_total", []string{"path", "classic"}, 1},
		{"intercom_ring_outcomes_total", []string{"outcome", "answered"}, 1},
		{"intercom_ring_outcomes_total", []string{"outcome", "missed"}, 0},
		{"intercom_press_to_ring_seconds", nil, 1},
		{"intercom_press_to_invite_sent_seconds", nil, 1},
		{"intercom_answer_to_media_seconds", []string{"path", "classic"}, 1},
		{"intercom_matrix_sync_healthy", nil, 1},
	} {
		if got := metricValue(fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	sum := func(name string) float64 {
		if f := fams[name]; f != nil && len(f.GetMetric()) > 0 {
			return f.GetMetric()[0].GetHistogram().GetSampleSum() * 1e3
		}
		return -1
	}
	t.Logf("press → ring placed %.1f ms; press → first invite sent %.1f ms; answer → media connected %.1f ms",
		sum("intercom_press_to_ring_seconds"), sum("intercom_press_to_invite_sent_seconds"), sum("intercom_answer_to_media_seconds"))
	visits := e.history(t)
	if len(visits) != 1 || visits[0].Outcome != "answered" || visits[0].Path != "classic" || visits[0].AnsweredBy != user ||
		!visits[0].Snapshot || !strings.HasSuffix(visits[0].SnapshotURL, ".jpg") {
		t.Errorf("history %+v, want one visitor answered by %s on the classic path, with a snapshot", visits, user)
		return
	}
	resp, err := http.Get("http://" + e.api + visits[0].SnapshotURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/jpeg" {
		t.Errorf("history snapshot: HTTP %d, %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// checkInCallSeries: during a classic call, /metrics has the call's video
// target and the resident's reported loss, labelled by path alone.
func (e *e2e) checkInCallSeries(t *testing.T) {
	t.Helper()
	fams := e.scrapeMetrics(t)
	target := metricValue(fams, "intercom_call_video_target_bitrate_bits_per_second", "path", "classic")
	loss := metricValue(fams, "intercom_call_video_loss_ratio", "path", "classic")
	t.Logf("in call: video target %.0f b/s, reported loss %.3f", target, loss)
	if target <= 0 || loss < 0 || loss > 1 {
		t.Errorf("in-call series: target %v, loss %v", target, loss)
	}
}
