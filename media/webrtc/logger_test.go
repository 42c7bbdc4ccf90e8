package webrtc

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// GCC's per-feedback Info lines are Debug for us; other pion scopes keep
// their levels.
func TestLoggerDemotesChattyScopes(t *testing.T) {
	var buf bytes.Buffer
	f := LoggerFactory{Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	f.NewLogger("gcc_delay_controller").Infof("delaystats: %v", 1)
	f.NewLogger("gcc_loss_controller").Info("loss controller increasing")
	f.NewLogger("ice").Infof("selected pair %d", 2)
	f.NewLogger("gcc_delay_controller").Warn("kept")
	out := buf.String()
	if strings.Contains(out, "delaystats") || strings.Contains(out, "loss controller") {
		t.Errorf("GCC's Info lines logged at Info:\n%s", out)
	}
	for _, want := range []string{"selected pair 2", "kept"} {
		if !strings.Contains(out, want) {
			t.Errorf("%q missing:\n%s", want, out)
		}
	}
	buf.Reset()
	f = LoggerFactory{Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	f.NewLogger("gcc_delay_controller").Infof("delaystats: %v", 1)
	if !strings.Contains(buf.String(), "level=DEBUG") {
		t.Errorf("GCC's Info line not at Debug: %q", buf.String())
	}
}
