package device

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"
)

// runHistory runs h until the test ends; stop flushes and waits.
func runHistory(t *testing.T, h *History) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = h.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

func pic(b []byte) func(context.Context) []byte { return func(context.Context) []byte { return b } }

func TestHistoryKeepsVisitorsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	h, err := OpenHistory(dir, 10, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := runHistory(t, h)
	t1 := time.Date(2026, 12, 6, 18, 0, 0, 123, time.UTC)
	t2 := t1.Add(time.Hour)
	h.visitor(t1, pic([]byte("JPEG-1")), func(e *HistoryEntry) { e.Paths = []string{"classic"} })
	h.visitor(t1, nil, func(e *HistoryEntry) {
		e.Outcome, e.Path, e.AnsweredBy = OutcomeAnswered, "classic", "@alice:hs.test"
	})
	h.doorOpened(t1.Add(10*time.Second), "@alice:hs.test")
	h.visitor(t1, nil, func(e *HistoryEntry) { e.EndedAt = t1.Add(time.Minute) })
	h.visitor(t2, pic([]byte("JPEG-2")), nil)
	h.visitor(t2, nil, func(e *HistoryEntry) { e.Outcome, e.EndedAt = OutcomeMissed, t2.Add(time.Minute) })
	// Opened long after the second visitor's ring ended: not theirs.
	h.doorOpened(t2.Add(time.Hour), "@alice:hs.test")
	waitFor(t, "snapshots stored", func() bool {
		l := h.List()
		return len(l) == 2 && l[0].Snapshot && l[1].Snapshot
	})
	stop()
	want := h.List()
	if want[0].ID != historyID(t2) || want[0].Outcome != OutcomeMissed || want[0].DoorOpened {
		t.Errorf("newest: %+v", want[0])
	}
	if want[1].Outcome != OutcomeAnswered || !want[1].DoorOpened || want[1].DoorOpenedBy != "@alice:hs.test" || want[1].Path != "classic" {
		t.Errorf("oldest: %+v", want[1])
	}

	again, err := OpenHistory(dir, 10, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := again.List()
	for i := range got { // times come back in UTC from JSON
		got[i].RangAt, got[i].EndedAt = got[i].RangAt.UTC(), got[i].EndedAt.UTC()
		want[i].RangAt, want[i].EndedAt = want[i].RangAt.UTC(), want[i].EndedAt.UTC()
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("after restart\n got %+v\nwant %+v", got, want)
	}
	if b, err := again.JPEG(historyID(t1)); err != nil || string(b) != "JPEG-1" {
		t.Errorf("snapshot after restart: %q, %v", b, err)
	}
	if _, err := again.JPEG("../../etc/passwd"); err == nil {
		t.Error("a path for an ID")
	}
	for _, name := range []string{historyID(t1) + ".json", historyID(t1) + ".jpg"} {
		if fi, err := os.Stat(filepath.Join(dir, "history", name)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v", name, fi, err)
		}
	}
}

func TestHistoryCaps(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 18, 0, 0, 0, time.UTC)
	t.Run("count", func(t *testing.T) {
		dir := t.TempDir()
		h, err := OpenHistory(dir, 3, 1<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		stop := runHistory(t, h)
		for i := range 5 {
			h.visitor(t0.Add(time.Duration(i)*time.Minute), pic([]byte("JPEG")), nil)
		}
		waitFor(t, "snapshots", func() bool {
			l := h.List()
			return len(l) == 3 && l[0].Snapshot && l[1].Snapshot && l[2].Snapshot
		})
		stop()
		l := h.List()
		if l[0].ID != historyID(t0.Add(4*time.Minute)) || l[2].ID != historyID(t0.Add(2*time.Minute)) {
			t.Errorf("kept %v, want the 3 newest", []string{l[0].ID, l[1].ID, l[2].ID})
		}
		files, _ := filepath.Glob(filepath.Join(dir, "history", "*"))
		if len(files) != 6 {
			t.Errorf("files on disk: %v, want 3 records and 3 snapshots", files)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		dir := t.TempDir()
		// Room for two 1000-byte snapshots with their records, not three.
		h, err := OpenHistory(dir, 50, 2900, nil)
		if err != nil {
			t.Fatal(err)
		}
		stop := runHistory(t, h)
		jpg := bytes.Repeat([]byte{0xff}, 1000)
		for i := range 4 {
			at := t0.Add(time.Duration(i) * time.Minute)
			h.visitor(at, pic(jpg), nil)
			waitFor(t, "snapshot", func() bool { l := h.List(); return l[0].ID == historyID(at) && l[0].Snapshot })
		}
		stop()
		if l := h.List(); len(l) != 2 || l[0].ID != historyID(t0.Add(3*time.Minute)) {
			t.Errorf("kept %d entries: %+v", len(l), l)
		}
		var total int64
		files, _ := filepath.Glob(filepath.Join(dir, "history", "*"))
		for _, f := range files {
			fi, _ := os.Stat(f)
			total += fi.Size()
		}
		if total > 2900 {
			t.Errorf("%d bytes on disk, cap 2900", total)
		}
	})
}

func TestHistorySkipsCorruptEntries(t *testing.T) {
	dir := t.TempDir()
	h, err := OpenHistory(dir, 10, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := runHistory(t, h)
	good := time.Date(2026, 12, 6, 18, 0, 0, 0, time.UTC)
	h.visitor(good, nil, func(e *HistoryEntry) { e.Outcome = OutcomeMissed })
	stop()
	hd := filepath.Join(dir, "history")
	bad := map[string]string{
		"00000000000000000001.json": `{"id":"00000000000000000001","rang_at":`, // torn write
		"00000000000000000002.json": `{"id":"00000000000000000009","rang_at":"1970-01-01T00:00:00.000000009Z","outcome":"missed"}`,
		"00000000000000000003.json": `{"id":"00000000000000000003","rang_at":"1970-01-01T00:00:00.000000003Z","outcome":"exploded"}`,
		"00000000000000000004.json": "",
	}
	for name, body := range bad {
		if err := os.WriteFile(filepath.Join(hd, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(hd, "00000000000000000003.jpg"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	again, err := OpenHistory(dir, 10, 1<<20, testLogger(&logs))
	if err != nil {
		t.Fatalf("a corrupt entry stopped the start: %v", err)
	}
	if l := again.List(); len(l) != 1 || l[0].ID != historyID(good) {
		t.Errorf("entries %+v, want the good one alone", l)
	}
	if n := bytes.Count(logs.Bytes(), []byte("history entry unreadable")); n != len(bad) {
		t.Errorf("%d log lines for %d corrupt entries:\n%s", n, len(bad), logs.String())
	}
	files, _ := filepath.Glob(filepath.Join(hd, "*"))
	if len(files) != 1 {
		t.Errorf("left on disk: %v", files)
	}
}

func testLogger(w *bytes.Buffer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// FuzzHistoryEntry feeds the stored-entry decoder arbitrary bytes (a
// damaged card, a hand-edited file): it must not panic, and what it
// accepts must survive a write and a read unchanged.
func FuzzHistoryEntry(f *testing.F) {
	f.Add([]byte(`{"id":"01796580000000000000","rang_at":"2026-12-06T18:00:00Z","outcome":"answered","paths":["classic","matrixrtc"],"path":"classic","answered_by":"@alice:hs.test","ended_at":"2026-12-06T18:01:00Z","door_opened":true,"door_opened_by":"@alice:hs.test","snapshot":true}`))
	f.Add([]byte(`{"id":"01796580000000000000","rang_at":"2026-12-06T18:00:00Z","outcome":"missed","paths":[],"door_opened":false,"snapshot":false}`))
	f.Add([]byte(`{"id":"x","rang_at":"2026-12-06T18:00:00Z","outcome":"failed"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeHistoryEntry(b)
		if err != nil {
			return
		}
		if !historyIDPattern.MatchString(e.ID) || historyID(e.RangAt) != e.ID {
			t.Fatalf("accepted an entry whose ID is not its time: %+v", e)
		}
		out, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeHistoryEntry(out)
		if err != nil {
			t.Fatalf("rewritten entry refused: %v\n%s", err, out)
		}
		if !again.RangAt.Equal(e.RangAt) || again.Outcome != e.Outcome || !reflect.DeepEqual(again.Paths, e.Paths) ||
			again.AnsweredBy != e.AnsweredBy || again.DoorOpened != e.DoorOpened {
			t.Fatalf("round trip changed it:\n%+v\n%+v", e, again)
		}
	})
}
