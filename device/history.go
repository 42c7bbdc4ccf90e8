package device

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/internal/atomicfile"
	"github.com/doorbell/intercom/internal/runloop"
)

// HistoryEntry is one visitor in the history (GET /api/history), stored
// as state_dir/history/<id>.json beside its snapshot <id>.jpg.
type HistoryEntry struct {
	// ID is the press's time in Unix nanoseconds, 20 digits: one entry
	// per visitor, so a ring placed later for the same visitor (the
	// homeserver back while the bell still rang) updates it.
	ID     string    `json:"id"`
	RangAt time.Time `json:"rang_at"`
	// Outcome is "ringing" (the ring goes on, or the intercom stopped
	// before it ended), "answered", "missed" or "failed" (nobody could
	// be rung).
	Outcome string `json:"outcome"`
	// Paths the ring went out on; Path and AnsweredBy: who answered where.
	Paths      []string          `json:"paths"`
	Path       string            `json:"path,omitempty"`
	AnsweredBy callengine.UserID `json:"answered_by,omitempty"`
	EndedAt    time.Time         `json:"ended_at,omitzero"`
	// DoorOpened: the relay was pulsed for a command while the ring or
	// call went on, or within historyDoorGrace after it ended.
	DoorOpened   bool              `json:"door_opened"`
	DoorOpenedBy callengine.UserID `json:"door_opened_by,omitempty"`
	// Snapshot: <id>.jpg holds the camera's picture of the visitor.
	Snapshot bool `json:"snapshot"`
}

// OutcomeRinging is a history entry's outcome while its ring goes on.
const OutcomeRinging = "ringing"

// historyDoorGrace is how long after a ring or call ended a door opening
// still counts as the visitor's: the resident hangs up, then opens.
const historyDoorGrace = 2 * time.Minute

// historyMaxEntryBytes bounds a stored record: a real one is a few
// hundred bytes; anything larger is not ours.
const historyMaxEntryBytes = 16 << 10

var historyIDPattern = regexp.MustCompile(`^[0-9]{20}$`)

func historyID(t time.Time) string { return fmt.Sprintf("%020d", t.UnixNano()) }

// ErrNoSnapshot: the history has no picture under that ID.
var ErrNoSnapshot = errors.New("history: no such snapshot")

// decodeHistoryEntry decodes a stored record and checks that it is one
// the history wrote: it reads files a power cut or a full card may have
// damaged, and serves them to browsers.
func decodeHistoryEntry(b []byte) (HistoryEntry, error) {
	var e HistoryEntry
	if len(b) > historyMaxEntryBytes {
		return e, fmt.Errorf("history entry of %d bytes", len(b))
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("history entry: %w", err)
	}
	switch {
	case !historyIDPattern.MatchString(e.ID):
		return e, fmt.Errorf("history entry: bad id %q", e.ID)
	case e.RangAt.IsZero() || historyID(e.RangAt) != e.ID:
		return e, errors.New("history entry: rang_at does not match its id")
	}
	switch e.Outcome {
	case OutcomeRinging, OutcomeAnswered, OutcomeMissed, OutcomeFailed:
	default:
		return e, fmt.Errorf("history entry: unknown outcome %q", e.Outcome)
	}
	if len(e.Paths) > 8 {
		return e, errors.New("history entry: too many paths")
	}
	for _, s := range append(slices.Clone(e.Paths), e.Path, string(e.AnsweredBy), string(e.DoorOpenedBy)) {
		if len(s) > 255 || !utf8.ValidString(s) {
			return e, errors.New("history entry: bad string")
		}
	}
	if e.Paths == nil {
		e.Paths = []string{}
	}
	return e, nil
}

// History keeps the last visitors in state_dir/history: at most Keep
// entries and MaxBytes on disk, the oldest dropped first. Changes apply
// to the list at once (List sees them); Run writes them, each file
// atomically, so the board's storage is never touched on the press loop.
type History struct {
	dir      string
	keep     int
	maxBytes int64
	log      *slog.Logger
	inbox    runloop.Queue[historyJob]

	mu      sync.Mutex
	entries []HistoryEntry // oldest first
	dirty   map[string]bool
	// Bytes on disk per ID: the snapshot's, and the record's as last
	// written.
	jpgSize, jsonSize map[string]int64
}

// historyJob is a snapshot to fetch and store for an entry (pic nil:
// only write what is dirty).
type historyJob struct {
	id  string
	pic func(context.Context) []byte
}

// OpenHistory loads stateDir/history (creating it). An entry that does not
// decode is removed with a log line: the history is a convenience, never a
// reason not to start.
func OpenHistory(stateDir string, keep, maxBytes int, log *slog.Logger) (*History, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &History{dir: filepath.Join(stateDir, "history"), keep: max(keep, 0), maxBytes: int64(maxBytes), log: log,
		dirty: map[string]bool{}, jpgSize: map[string]int64{}, jsonSize: map[string]int64{}}
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	names, err := filepath.Glob(filepath.Join(h.dir, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	slices.Sort(names) // IDs are zero-padded times
	known := map[string]bool{}
	for _, name := range names {
		id := strings.TrimSuffix(filepath.Base(name), ".json")
		b, err := os.ReadFile(name)
		var e HistoryEntry
		if err == nil {
			e, err = decodeHistoryEntry(b)
		}
		if err == nil && e.ID != id {
			err = errors.New("history entry: id does not match its file")
		}
		if err != nil {
			h.log.Warn("history entry unreadable: skipped and removed", "file", name, "err", err)
			_ = os.Remove(name)
			_ = os.Remove(h.path(id, ".jpg"))
			continue
		}
		if fi, err := os.Stat(h.path(id, ".jpg")); err == nil {
			h.jpgSize[id] = fi.Size()
		} else {
			e.Snapshot = false
		}
		h.entries = append(h.entries, e)
		h.jsonSize[id] = int64(len(b))
		known[id] = true
	}
	// Snapshots whose record is gone (a crash between the two removals).
	jpgs, _ := filepath.Glob(filepath.Join(h.dir, "*.jpg"))
	for _, name := range jpgs {
		if !known[strings.TrimSuffix(filepath.Base(name), ".jpg")] {
			_ = os.Remove(name)
		}
	}
	h.mu.Lock()
	h.trimLocked()
	h.mu.Unlock()
	h.flush() // the removals of the trim
	return h, nil
}

// List returns the entries, newest first.
func (h *History) List() []HistoryEntry {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]HistoryEntry, 0, len(h.entries))
	for i := len(h.entries) - 1; i >= 0; i-- {
		e := h.entries[i]
		e.Paths = slices.Clone(e.Paths)
		out = append(out, e)
	}
	return out
}

// JPEG returns the snapshot of the entry id.
func (h *History) JPEG(id string) ([]byte, error) {
	if !historyIDPattern.MatchString(id) {
		return nil, ErrNoSnapshot
	}
	h.mu.Lock()
	i := h.indexLocked(id)
	ok := i >= 0 && h.entries[i].Snapshot
	h.mu.Unlock()
	if !ok {
		return nil, ErrNoSnapshot
	}
	b, err := os.ReadFile(h.path(id, ".jpg"))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoSnapshot, err)
	}
	return b, nil
}

// visitor starts or updates the entry of the visitor who pressed at
// rangAt with change; pic, if not nil, is their snapshot, stored unless
// the entry has one already. It never blocks.
func (h *History) visitor(rangAt time.Time, pic func(context.Context) []byte, change func(*HistoryEntry)) {
	if h == nil || h.keep == 0 {
		return
	}
	id := historyID(rangAt)
	h.mu.Lock()
	i := h.indexLocked(id)
	if i < 0 {
		h.entries = append(h.entries, HistoryEntry{ID: id, RangAt: rangAt, Outcome: OutcomeRinging, Paths: []string{}})
		slices.SortStableFunc(h.entries, func(a, b HistoryEntry) int { return strings.Compare(a.ID, b.ID) })
		i = h.indexLocked(id)
	}
	if change != nil {
		change(&h.entries[i])
	}
	if h.entries[i].Snapshot {
		pic = nil
	}
	h.dirty[id] = true
	h.trimLocked()
	h.mu.Unlock()
	h.inbox.Push(historyJob{id: id, pic: pic})
}

// doorOpened marks the visitor the door was opened for at: the newest
// whose ring or call was on then, or had ended at most historyDoorGrace
// before.
func (h *History) doorOpened(at time.Time, by callengine.UserID) {
	if h == nil || h.keep == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := len(h.entries) - 1; i >= 0; i-- {
		e := &h.entries[i]
		if e.RangAt.After(at) {
			continue
		}
		if e.EndedAt.IsZero() && e.Outcome != OutcomeFailed || !e.EndedAt.IsZero() && at.Sub(e.EndedAt) <= historyDoorGrace {
			e.DoorOpened, e.DoorOpenedBy = true, by
			h.dirty[e.ID] = true
			h.inbox.Push(historyJob{id: e.ID})
		}
		return
	}
}

// Run writes the changes and snapshots until ctx ends.
func (h *History) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			h.flush()
			return nil
		case <-h.inbox.Wait():
		}
		for _, j := range h.inbox.Take() {
			if j.pic == nil {
				continue
			}
			jpg := j.pic(ctx)
			if len(jpg) == 0 {
				continue
			}
			h.mu.Lock()
			live := h.indexLocked(j.id) >= 0
			h.mu.Unlock()
			if !live {
				continue // dropped meanwhile
			}
			if err := atomicfile.WriteFile(h.path(j.id, ".jpg"), jpg, 0o600); err != nil {
				h.log.Warn("history snapshot not kept", "id", j.id, "err", err)
				continue
			}
			h.mu.Lock()
			if i := h.indexLocked(j.id); i >= 0 {
				h.entries[i].Snapshot = true
				h.dirty[j.id] = true
				h.jpgSize[j.id] = int64(len(jpg))
				h.trimLocked()
			} else {
				_ = os.Remove(h.path(j.id, ".jpg"))
			}
			h.mu.Unlock()
		}
		h.flush()
	}
}

// flush writes the dirty entries and removes the dropped ones.
func (h *History) flush() {
	h.mu.Lock()
	type write struct {
		id string
		b  []byte // nil: remove
	}
	var writes []write
	for id := range h.dirty {
		if i := h.indexLocked(id); i >= 0 {
			b, err := json.Marshal(h.entries[i])
			if err == nil {
				writes = append(writes, write{id, b})
				h.jsonSize[id] = int64(len(b))
			}
		} else {
			writes = append(writes, write{id: id})
		}
	}
	clear(h.dirty)
	h.mu.Unlock()
	for _, w := range writes {
		if w.b == nil {
			_ = os.Remove(h.path(w.id, ".json"))
			_ = os.Remove(h.path(w.id, ".jpg"))
			continue
		}
		if err := atomicfile.WriteFile(h.path(w.id, ".json"), w.b, 0o600); err != nil {
			h.log.Warn("history entry not saved", "id", w.id, "err", err)
		}
	}
}

// trimLocked drops the oldest entries beyond Keep or MaxBytes (the newest
// always stays); their files go at the next flush.
func (h *History) trimLocked() {
	var total int64
	for _, e := range h.entries {
		total += h.jpgSize[e.ID] + h.jsonSize[e.ID]
	}
	for len(h.entries) > 1 && (len(h.entries) > h.keep || total > h.maxBytes) {
		old := h.entries[0]
		h.entries = h.entries[1:]
		total -= h.jpgSize[old.ID] + h.jsonSize[old.ID]
		delete(h.jpgSize, old.ID)
		delete(h.jsonSize, old.ID)
		h.dirty[old.ID] = true // absent from entries: removed by flush
	}
}

func (h *History) indexLocked(id string) int {
	for i := len(h.entries) - 1; i >= 0; i-- {
		if h.entries[i].ID == id {
			return i
		}
	}
	return -1
}

func (h *History) path(id, ext string) string { return filepath.Join(h.dir, id+ext) }
