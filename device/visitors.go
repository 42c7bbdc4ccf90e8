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
// Delivery is once per room: a record is rewritten after each room it
// reached, and the sends carry transaction IDs of their own
// (OnceMessenger), so a crash between a room's send and that write posts
// to that room again only if the homeserver has forgotten the
// transaction by the restart.
type VisitorQueue struct {
	// Online, if set before Run, says whether the homeserver answers
	// (the Matrix sync is healthy): while a failed delivery waits out
	// its backoff, its turning true retries at once, so a visitor is
	// told of within a second of the homeserver's return, not at the
	// next backoff step.
	Online func() bool

	dir   string
	msg   Messenger
	rooms func() []callengine.RoomID
	log   *slog.Logger
	kick  chan struct{}

	mu      sync.Mutex // serialises the records' files
	pending int
	// early holds what Cancel and Hold said of records whose Add had not
	// arrived yet (the Add waits for the camera's snapshot, they do
	// not): a zero time drops the Add, another time becomes its
	// NotBefore. Bounded by maxVisitors.
	early map[string]time.Time
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
	ID     string              `json:"id"`
	RangAt time.Time           `json:"rang_at"`
	Text   string              `json:"text"`
	Rooms  []callengine.RoomID `json:"rooms"`
	// AllRooms: the rooms are every resident's (and the household's),
	// as known when it is delivered: a press before the intercom had
	// ever reached the homeserver knows no room yet. They are fixed
	// into Rooms at the first delivery attempt that knows some.
	AllRooms bool                `json:"all_rooms,omitempty"`
	Done     []callengine.RoomID `json:"done"`
	Snapshot bool                `json:"snapshot"`
	// NotBefore holds the notice back: while the bell still rings for
	// the visitor, the residents may yet be rung (the homeserver back
	// within the ring timeout) and the notice withdrawn.
	NotBefore time.Time `json:"not_before,omitzero"`
}

// Visitor is one missed-visitor notice to keep until delivered.
type Visitor struct {
	RangAt time.Time
	Text   string
	// Rooms to post into; nil: every resident's room as known at
	// delivery (VisitorQueue's rooms function).
	Rooms []callengine.RoomID
	// JPEG is the snapshot; nil: none.
	JPEG []byte
	// NotBefore: not delivered before this time (zero: at once).
	NotBefore time.Time
}

// visitorID names the record of a visitor who rang at t: one record per
// ring time, so Cancel finds it from the time alone.
func visitorID(t time.Time) string { return fmt.Sprintf("%020d", t.UnixNano()) }

// NewVisitorQueue opens (creating if needed) stateDir/visitors. msg posts
// the notices; rooms says which rooms a Visitor without rooms goes to
// (nil: none known, such a record waits); log may be nil.
func NewVisitorQueue(stateDir string, msg Messenger, rooms func() []callengine.RoomID, log *slog.Logger) (*VisitorQueue, error) {
	if msg == nil {
		return nil, errors.New("visitor queue: no messenger")
	}
	if rooms == nil {
		rooms = func() []callengine.RoomID { return nil }
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Join(stateDir, "visitors")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("visitor queue: %w", err)
	}
	q := &VisitorQueue{dir: dir, msg: msg, rooms: rooms, log: log, kick: make(chan struct{}, 1)}
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

// Add queues the notice of v. It returns once the record is on disk. A
// record of the same ring time replaces the earlier one.
func (q *VisitorQueue) Add(v Visitor) error {
	rec := visitorRecord{ID: visitorID(v.RangAt), RangAt: v.RangAt, Text: v.Text,
		Rooms: slices.Clone(v.Rooms), AllRooms: v.Rooms == nil, Snapshot: len(v.JPEG) > 0, NotBefore: v.NotBefore}
	q.mu.Lock()
	defer q.mu.Unlock()
	if t, ok := q.early[rec.ID]; ok {
		delete(q.early, rec.ID)
		if t.IsZero() {
			q.log.Info("missed-visitor notice withdrawn before it was queued", "rang_at", v.RangAt)
			return nil
		}
		rec.NotBefore = t
	}
	if _, err := os.Stat(q.path(rec.ID, ".json")); err == nil {
		q.pending-- // replaced, not added
	}
	if rec.Snapshot {
		if err := atomicfile.WriteFile(q.path(rec.ID, ".jpg"), v.JPEG, 0o600); err != nil {
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

// Cancel withdraws the notice of the visitor who rang at rangAt, if it
// has not been delivered yet: the residents were rung after all. One
// already partly delivered is left to finish, so every room tells the
// same story.
func (q *VisitorQueue) Cancel(rangAt time.Time) { q.amend(rangAt, time.Time{}) }

// Hold holds the notice of the visitor who rang at rangAt back until
// notBefore, if it has not been delivered yet: the residents are being
// rung, and it is withdrawn if that reaches them. Held in the record, so
// a restart meanwhile delivers it after all.
func (q *VisitorQueue) Hold(rangAt, notBefore time.Time) {
	if !notBefore.IsZero() {
		q.amend(rangAt, notBefore)
	}
}

// amend removes (notBefore zero) or holds back the record of rangAt, or
// remembers it for the record's Add.
func (q *VisitorQueue) amend(rangAt, notBefore time.Time) {
	id := visitorID(rangAt)
	q.mu.Lock()
	defer q.mu.Unlock()
	b, err := os.ReadFile(q.path(id, ".json"))
	if errors.Is(err, os.ErrNotExist) {
		if q.early == nil {
			q.early = map[string]time.Time{}
		}
		if len(q.early) >= maxVisitors {
			clear(q.early) // Adds that never came; a real one is rare
		}
		q.early[id] = notBefore
		return
	}
	var rec visitorRecord
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	if err != nil || len(rec.Done) > 0 {
		return // unreadable (load sets it aside), or under way
	}
	if notBefore.IsZero() {
		q.log.Info("missed-visitor notice withdrawn: the residents were rung", "rang_at", rangAt)
		q.removeLocked(id)
		return
	}
	rec.NotBefore = notBefore
	if err := q.saveLocked(rec); err != nil {
		q.log.Error("hold a missed-visitor notice", "rang_at", rangAt, "err", err)
	}
	select {
	case q.kick <- struct{}{}: // Run recomputes its wake-up
	default:
	}
}

// Run delivers the queued records until ctx ends; it returns ctx's cause.
// A failed delivery is retried after a backoff (1 s doubling to 30 s); a
// new record tries again at once, and a record held back (NotBefore) when
// its time comes.
func (q *VisitorQueue) Run(ctx context.Context) error {
	retry := runloop.Backoff{Base: time.Second, Max: visitorRetryMax}
	for {
		wait := time.Duration(0)
		next, err := q.deliverAll(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			wait = retry.Next()
			q.log.Warn("missed-visitor notices not delivered yet; retrying", "pending", q.Pending(), "in", wait, "err", err)
		} else {
			retry.Reset()
		}
		if !next.IsZero() {
			if d := time.Until(next); wait == 0 || d < wait {
				wait = max(d, time.Millisecond)
			}
		}
		if !q.sleep(ctx, wait, err != nil) {
			return context.Cause(ctx)
		}
	}
}

// sleep waits for wait (0: until kicked), a kick, or, after a failure
// (failed), the homeserver's return; false if ctx ended.
func (q *VisitorQueue) sleep(ctx context.Context, wait time.Duration, failed bool) bool {
	var timer <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timer = t.C
	}
	var poll <-chan time.Time
	if failed && q.Online != nil && !q.Online() {
		t := time.NewTicker(onlinePoll)
		defer t.Stop()
		poll = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return false
		case <-q.kick:
			return true
		case <-timer:
			return true
		case <-poll:
			if q.Online() {
				return true
			}
		}
	}
}

// onlinePoll is how often a waiting queue asks Online.
const onlinePoll = 250 * time.Millisecond

// deliverAll delivers every record that is due, oldest first, and stops
// at the first failure (the homeserver is likely still away). next is
// when the earliest record held back falls due (zero: none is).
func (q *VisitorQueue) deliverAll(ctx context.Context) (next time.Time, err error) {
	q.mu.Lock()
	recs, err := q.load()
	q.mu.Unlock()
	if err != nil {
		return time.Time{}, err
	}
	now := time.Now()
	for _, rec := range recs {
		if now.Before(rec.NotBefore) {
			if next.IsZero() || rec.NotBefore.Before(next) {
				next = rec.NotBefore
			}
			continue
		}
		if err := q.deliver(ctx, rec); err != nil {
			return next, err
		}
	}
	return next, nil
}

// deliver posts one record into each room it has not reached yet.
func (q *VisitorQueue) deliver(ctx context.Context, rec visitorRecord) error {
	if rec.AllRooms && len(rec.Rooms) == 0 {
		rec.Rooms = slices.Clone(q.rooms())
		if len(rec.Rooms) == 0 {
			return fmt.Errorf("the notice of %s: no resident room known yet", rec.RangAt.Format(time.RFC3339))
		}
	}
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
		id, err := q.sendText(sctx, room, rec.Text, rec.ID+"|"+string(room)+"|text")
		if err == nil && len(jpeg) > 0 {
			name := fmt.Sprintf("door-%s.jpg", rec.RangAt.UTC().Format("20060102-150405"))
			_, err = q.sendJPEG(sctx, room, "Snapshot from the door", name, jpeg, rec.ID+"|"+string(room)+"|image")
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

// OnceMessenger sends a message under a key that makes the homeserver
// take it once (a transaction ID of its own: matrix.Session implements it).
// The queue sends through it when its Messenger has it, so that a crash
// between a room's send and the record's rewrite does not post there
// twice after the restart.
type OnceMessenger interface {
	SendTextOnce(ctx context.Context, room callengine.RoomID, text string, notify bool, key string) (string, error)
	SendJPEGOnce(ctx context.Context, room callengine.RoomID, body, name string, jpeg []byte, key string) (string, error)
}

func (q *VisitorQueue) sendText(ctx context.Context, room callengine.RoomID, text, key string) (string, error) {
	if o, ok := q.msg.(OnceMessenger); ok {
		return o.SendTextOnce(ctx, room, text, true, key)
	}
	return q.msg.SendText(ctx, room, text, true)
}

func (q *VisitorQueue) sendJPEG(ctx context.Context, room callengine.RoomID, body, name string, jpeg []byte, key string) (string, error) {
	if o, ok := q.msg.(OnceMessenger); ok {
		return o.SendJPEGOnce(ctx, room, body, name, jpeg, key)
	}
	return q.msg.SendJPEG(ctx, room, body, name, jpeg)
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
