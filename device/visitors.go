package device

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/internal/atomicfile"
	"github.com/doorbell/intercom/internal/runloop"
)

// VisitorQueue keeps the missed-visitor notices that have not reached
// the residents yet, in the state directory, until they do: a visitor who
// rang while the homeserver was away is told of once it is back, after a
// restart too (issue 15). Add writes a record; Run delivers the records in
// the order they rang, retrying with backoff, and deletes each once every
// room has its text and snapshot.
//
// Delivery is at least once per room: a record is rewritten after each
// room it reached, so only a crash between a room's send and that write
// can post to that room again.
type VisitorQueue struct {
	dir  string
	msg  Messenger
	log  *slog.Logger
	kick chan struct{}

	mu      sync.Mutex // serialises the records' files
	pending int
}

// Bounds of the queue.
const (
	// maxVisitors bounds the records kept: a homeserver away for days
	// must not fill the board's storage. The oldest goes first.
	maxVisitors = 64
	// visitorRetryMax caps the wait between delivery attempts.
	visitorRetryMax = 30 * time.Second
)

// visitorRecord is one queued notice (visitors/<id>.json; its snapshot,
// if any, is visitors/<id>.jpg).
type visitorRecord struct {
	ID       string              `json:"id"`
	RangAt   time.Time           `json:"rang_at"`
	Text     string              `json:"text"`
	Rooms    []callengine.RoomID `json:"rooms"`
	Done     []callengine.RoomID `json:"done"`
	Snapshot bool                `json:"snapshot"`
}

// NewVisitorQueue opens (creating if needed) stateDir/visitors. msg posts
// the notices; log may be nil.
func NewVisitorQueue(stateDir string, msg Messenger, log *slog.Logger) (*VisitorQueue, error) {
	if msg == nil {
		return nil, errors.New("visitor queue: no messenger")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Join(stateDir, "visitors")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("visitor queue: %w", err)
	}
	q := &VisitorQueue{dir: dir, msg: msg, log: log, kick: make(chan struct{}, 1)}
	recs, err := q.load()
	if err != nil {
		return nil, err
	}
	q.pending = len(recs)
	return q, nil
}

// Pending is the number of records not delivered yet.
func (q *VisitorQueue) Pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pending
}

// Add queues a notice of a visitor who rang at rangAt for rooms, with its
// snapshot (nil: none). It returns once the record is on disk.
func (q *VisitorQueue) Add(rangAt time.Time, text string, rooms []callengine.RoomID, jpeg []byte) error {
	if len(rooms) == 0 {
		return nil
	}
	rec := visitorRecord{ID: fmt.Sprintf("%020d", rangAt.UnixNano()), RangAt: rangAt, Text: text,
		Rooms: slices.Clone(rooms), Snapshot: len(jpeg) > 0}
	q.mu.Lock()
	defer q.mu.Unlock()
	if rec.Snapshot {
		if err := atomicfile.WriteFile(q.path(rec.ID, ".jpg"), jpeg, 0o600); err != nil {
			return fmt.Errorf("queue visitor: %w", err)
		}
	}
	if err := q.saveLocked(rec); err != nil {
		return err
	}
	q.pending++
	recs, err := q.load()
	if err == nil && len(recs) > maxVisitors {
		for _, old := range recs[:len(recs)-maxVisitors] {
			q.log.Warn("visitor queue full: dropping the oldest undelivered notice", "rang_at", old.RangAt)
			q.removeLocked(old.ID)
		}
	}
	select {
	case q.kick <- struct{}{}:
	default:
	}
	return nil
}

// Run delivers the queued records until ctx ends; it returns ctx's cause.
// A failed delivery is retried after a backoff (1 s doubling to 30 s); a
// new record tries again at once.
func (q *VisitorQueue) Run(ctx context.Context) error {
	retry := runloop.Backoff{Base: time.Second, Max: visitorRetryMax}
	for {
		wait := time.Duration(0)
		if err := q.deliverAll(ctx); err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			wait = retry.Next()
			q.log.Warn("missed-visitor notices not delivered yet; retrying", "pending", q.Pending(), "in", wait, "err", err)
		} else {
			retry.Reset()
		}
		var timer <-chan time.Time
		if wait > 0 {
			timer = time.After(wait)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-q.kick:
		case <-timer:
		}
	}
}

// deliverAll delivers every record, oldest first, and stops at the first
// failure (the homeserver is likely still away).
func (q *VisitorQueue) deliverAll(ctx context.Context) error {
	q.mu.Lock()
	recs, err := q.load()
	q.mu.Unlock()
	if err != nil {
		return err
	}
	for _, rec := range recs {
		if err := q.deliver(ctx, rec); err != nil {
			return err
		}
	}
	return nil
}

// deliver posts one record into each room it has not reached yet.
func (q *VisitorQueue) deliver(ctx context.Context, rec visitorRecord) error {
	var jpeg []byte
	if rec.Snapshot {
		b, err := os.ReadFile(q.path(rec.ID, ".jpg"))
		if err != nil {
			q.log.Warn("queued visitor's snapshot unreadable; posting the text alone", "rang_at", rec.RangAt, "err", err)
		}
		jpeg = b
	}
	for _, room := range rec.Rooms {
		if slices.Contains(rec.Done, room) {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, sendTimeout)
		id, err := q.msg.SendText(sctx, room, rec.Text, true)
		if err == nil && len(jpeg) > 0 {
			name := fmt.Sprintf("door-%s.jpg", rec.RangAt.UTC().Format("20060102-150405"))
			_, err = q.msg.SendJPEG(sctx, room, "Snapshot from the door", name, jpeg)
		}
		cancel()
		if err != nil {
			return fmt.Errorf("post the notice of %s into %s: %w", rec.RangAt.Format(time.RFC3339), room, err)
		}
		q.log.Info("missed-visitor notice delivered", "room_id", room, "event_id", id, "rang_at", rec.RangAt,
			"late_by", time.Since(rec.RangAt).Round(time.Second))
		rec.Done = append(rec.Done, room)
		q.mu.Lock()
		err = q.saveLocked(rec)
		q.mu.Unlock()
		if err != nil {
			return err
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.removeLocked(rec.ID)
	return nil
}

// load reads the records, oldest first. A record that does not decode is
// set aside (renamed .bad) with a log line, not retried forever.
func (q *VisitorQueue) load() ([]visitorRecord, error) {
	names, err := filepath.Glob(filepath.Join(q.dir, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("visitor queue: %w", err)
	}
	slices.Sort(names) // IDs are zero-padded ring times
	var recs []visitorRecord
	for _, name := range names {
		b, err := os.ReadFile(name)
		var rec visitorRecord
		if err == nil {
			err = json.Unmarshal(b, &rec)
		}
		if err == nil && (rec.ID == "" || rec.ID != strings.TrimSuffix(filepath.Base(name), ".json")) {
			err = errors.New("record ID does not match its file")
		}
		if err != nil {
			q.log.Error("unreadable visitor record set aside", "file", name, "err", err)
			_ = os.Rename(name, name+".bad")
			continue
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

func (q *VisitorQueue) saveLocked(rec visitorRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(q.path(rec.ID, ".json"), b, 0o600); err != nil {
		return fmt.Errorf("queue visitor: %w", err)
	}
	return nil
}

func (q *VisitorQueue) removeLocked(id string) {
	if err := os.Remove(q.path(id, ".json")); err == nil || errors.Is(err, os.ErrNotExist) {
		_ = os.Remove(q.path(id, ".jpg"))
		if q.pending > 0 {
			q.pending--
		}
	} else {
		q.log.Error("remove a delivered visitor record", "id", id, "err", err)
	}
}

func (q *VisitorQueue) path(id, ext string) string { return filepath.Join(q.dir, id+ext) }
