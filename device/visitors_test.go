package device

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// awayMessenger fails every send while down is set, as a Session does
// while the homeserver is away; it records what reached each room.
type awayMessenger struct {
	fakeMessenger
	mu   sync.Mutex
	down bool
}

func (m *awayMessenger) setDown(v bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down = v
}

func (m *awayMessenger) isDown() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.down
}

func (m *awayMessenger) SendText(ctx context.Context, room callengine.RoomID, text string, notify bool) (string, error) {
	if m.isDown() {
		return "", errors.New("homeserver unreachable")
	}
	return m.fakeMessenger.SendText(ctx, room, text, notify)
}

func (m *awayMessenger) SendJPEG(ctx context.Context, room callengine.RoomID, body, name string, jpeg []byte) (string, error) {
	if m.isDown() {
		return "", errors.New("homeserver unreachable")
	}
	return m.fakeMessenger.SendJPEG(ctx, room, body, name, jpeg)
}

func (m *awayMessenger) posted() (texts, images []string) {
	m.fakeMessenger.mu.Lock()
	defer m.fakeMessenger.mu.Unlock()
	return append([]string(nil), m.texts...), append([]string(nil), m.images...)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestVisitorQueueOutage: a notice queued while the homeserver is away
// survives a restart of the queue, is delivered once it is back, into
// every room with its snapshot, and never twice.
func TestVisitorQueueOutage(t *testing.T) {
	dir := t.TempDir()
	msg := &awayMessenger{down: true}
	q, err := NewVisitorQueue(dir, msg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rang := time.Date(2026, 12, 6, 14, 3, 0, 0, time.UTC)
	rooms := []callengine.RoomID{"!a:hs", "!b:hs"}
	if err := q.Add(Visitor{RangAt: rang, Text: "someone rang at 14:03", Rooms: rooms, JPEG: []byte("jpeg-bytes")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()
	time.Sleep(50 * time.Millisecond) // one failed attempt
	cancel()
	<-done
	if texts, _ := msg.posted(); len(texts) != 0 || q.Pending() != 1 {
		t.Fatalf("posted %v while away; pending %d", texts, q.Pending())
	}
	for _, f := range []string{"json", "jpg"} {
		fi, err := os.Stat(filepath.Join(dir, "visitors", fmt.Sprintf("%020d.%s", rang.UnixNano(), f)))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("record file .%s: %v %v", f, fi, err)
		}
	}

	// A restart: the record is read back and delivered once the
	// homeserver answers.
	msg.setDown(false)
	q2, err := NewVisitorQueue(dir, msg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q2.Pending() != 1 {
		t.Fatalf("pending after restart %d, want 1", q2.Pending())
	}
	ctx2, cancel2 := context.WithCancel(t.Context())
	done2 := make(chan error, 1)
	go func() { done2 <- q2.Run(ctx2) }()
	waitUntil(t, "delivery", func() bool { return q2.Pending() == 0 })
	cancel2()
	<-done2
	texts, images := msg.posted()
	if len(texts) != 2 || len(images) != 2 || !strings.Contains(texts[0], "!a:hs|true|someone rang at 14:03") || !strings.Contains(texts[1], "!b:hs") {
		t.Fatalf("texts %v, images %v", texts, images)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "visitors", "*"))
	if len(left) != 0 {
		t.Errorf("files left after delivery: %v", left)
	}
	// A third start delivers nothing again.
	q3, err := NewVisitorQueue(dir, msg, nil, nil)
	if err != nil || q3.Pending() != 0 {
		t.Fatalf("third start: pending %d, %v", q3.Pending(), err)
	}
}

// TestVisitorQueuePartial: a room already reached is not posted to again
// when delivery resumes; the queue keeps at most maxVisitors records.
func TestVisitorQueuePartial(t *testing.T) {
	dir := t.TempDir()
	msg := &awayMessenger{}
	q, err := NewVisitorQueue(dir, msg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := visitorRecord{ID: "00000000000000000001", RangAt: time.Unix(0, 1), Text: "t",
		Rooms: []callengine.RoomID{"!a:hs", "!b:hs"}, Done: []callengine.RoomID{"!a:hs"}}
	if err := q.saveLocked(rec); err != nil {
		t.Fatal(err)
	}
	if _, err := q.deliverAll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if texts, _ := msg.posted(); len(texts) != 1 || !strings.HasPrefix(texts[0], "!b:hs|") {
		t.Fatalf("texts %v, want !b:hs only", texts)
	}

	msg.setDown(true)
	for i := range maxVisitors + 5 {
		if err := q.Add(Visitor{RangAt: time.Unix(100+int64(i), 0), Text: "t", Rooms: []callengine.RoomID{"!a:hs"}}); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := q.load()
	if err != nil || len(recs) != maxVisitors || !recs[0].RangAt.Equal(time.Unix(105, 0)) {
		t.Fatalf("%d records kept (first %v), want the newest %d: %v", len(recs), recs[0].RangAt, maxVisitors, err)
	}
	if q.Pending() != maxVisitors {
		t.Errorf("pending %d, want %d", q.Pending(), maxVisitors)
	}
	// An unreadable record is set aside, not retried forever.
	if err := os.WriteFile(filepath.Join(dir, "visitors", "00000000000000000009.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if recs, _ := q.load(); len(recs) != maxVisitors {
		t.Errorf("%d records after a bad one", len(recs))
	}
	if _, err := os.Stat(filepath.Join(dir, "visitors", "00000000000000000009.json.bad")); err != nil {
		t.Errorf("bad record not set aside: %v", err)
	}
}

// TestVisitorQueueHeldAllRoomsCancel: a visitor without rooms (rung
// before any room was known) waits until rooms are known and goes to
// every one; a record held back (NotBefore) is not posted before its
// time, and then without waiting for another kick; a withdrawn record is
// never posted, whether Cancel comes after its Add or before it.
func TestVisitorQueueHeldAllRoomsCancel(t *testing.T) {
	dir := t.TempDir()
	msg := &awayMessenger{}
	var mu sync.Mutex
	var known []callengine.RoomID
	rooms := func() []callengine.RoomID { mu.Lock(); defer mu.Unlock(); return known }
	q, err := NewVisitorQueue(dir, msg, rooms, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()

	// Withdrawn before its Add arrives (the snapshot was slow).
	early := time.Unix(50, 0)
	q.Cancel(early)
	if err := q.Add(Visitor{RangAt: early, Text: "withdrawn early"}); err != nil {
		t.Fatal(err)
	}
	// Held back 300 ms, for every room.
	held := time.Now()
	if err := q.Add(Visitor{RangAt: held, Text: "held", NotBefore: held.Add(300 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	// Withdrawn after its Add, while held back.
	late := held.Add(time.Millisecond)
	if err := q.Add(Visitor{RangAt: late, Text: "withdrawn late", NotBefore: held.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	q.Cancel(late)
	if q.Pending() != 1 {
		t.Fatalf("pending %d, want the held one only", q.Pending())
	}
	time.Sleep(500 * time.Millisecond) // past NotBefore, but no room known
	if texts, _ := msg.posted(); len(texts) != 0 {
		t.Fatalf("posted %v before any room was known", texts)
	}
	mu.Lock()
	known = []callengine.RoomID{"!a:hs", "!b:hs"}
	mu.Unlock()
	waitUntil(t, "delivery to every known room", func() bool { return q.Pending() == 0 })
	texts, _ := msg.posted()
	if len(texts) != 2 || !strings.HasPrefix(texts[0], "!a:hs|true|held") || !strings.HasPrefix(texts[1], "!b:hs|true|held") {
		t.Fatalf("texts %v", texts)
	}
	cancel()
	<-done
}

// TestVisitorQueueHold: Hold moves a record's delivery time, before its
// Add arrives too, and the running queue follows it; a held record is
// kept on disk with its new time, so a restart honours it.
func TestVisitorQueueHold(t *testing.T) {
	dir := t.TempDir()
	msg := &awayMessenger{}
	rooms := func() []callengine.RoomID { return []callengine.RoomID{"!a:hs"} }
	q, err := NewVisitorQueue(dir, msg, rooms, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()

	now := time.Now()
	a, b := now, now.Add(time.Millisecond)
	if err := q.Add(Visitor{RangAt: a, Text: "a", NotBefore: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	q.Hold(b, now.Add(time.Hour)) // before b's Add
	if err := q.Add(Visitor{RangAt: b, Text: "b"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if texts, _ := msg.posted(); len(texts) != 0 {
		t.Fatalf("posted %v while held", texts)
	}
	recs, _ := q.load()
	if len(recs) != 2 || !recs[1].NotBefore.Equal(now.Add(time.Hour)) {
		t.Fatalf("records %+v", recs)
	}
	q.Hold(a, time.Now().Add(100*time.Millisecond))
	waitUntil(t, "a delivered once its hold is shortened", func() bool { return q.Pending() == 1 })
	if texts, _ := msg.posted(); len(texts) != 1 || !strings.HasSuffix(texts[0], "|a") {
		t.Fatalf("posted %v", texts)
	}
	cancel()
	<-done
}

// onceMessenger records the keys of its "once" sends.
type onceMessenger struct {
	awayMessenger
	keys []string
}

func (m *onceMessenger) SendTextOnce(ctx context.Context, room callengine.RoomID, text string, notify bool, key string) (string, error) {
	m.mu.Lock()
	m.keys = append(m.keys, key)
	m.mu.Unlock()
	return m.SendText(ctx, room, text, notify)
}

func (m *onceMessenger) SendJPEGOnce(ctx context.Context, room callengine.RoomID, body, name string, jpeg []byte, key string) (string, error) {
	m.mu.Lock()
	m.keys = append(m.keys, key)
	m.mu.Unlock()
	return m.SendJPEG(ctx, room, body, name, jpeg)
}

// TestVisitorQueueSendsOnce: with a messenger that can send once, a
// record's sends carry keys of its own per room and part, the same when
// it is delivered again after a crash that lost the record's progress
// (the homeserver then takes the repeat as the first).
func TestVisitorQueueSendsOnce(t *testing.T) {
	dir := t.TempDir()
	msg := &onceMessenger{}
	q, err := NewVisitorQueue(dir, msg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := visitorRecord{ID: "00000000000000000007", RangAt: time.Unix(0, 7), Text: "t",
		Rooms: []callengine.RoomID{"!a:hs", "!b:hs"}, Snapshot: true}
	if err := os.WriteFile(q.path(rec.ID, ".jpg"), []byte("jpeg"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := q.saveLocked(rec); err != nil {
		t.Fatal(err)
	}
	if err := q.deliver(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	// The crash: the record as it was before any room was marked.
	if err := os.WriteFile(q.path(rec.ID, ".jpg"), []byte("jpeg"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := q.deliver(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	want := []string{"00000000000000000007|!a:hs|text", "00000000000000000007|!a:hs|image",
		"00000000000000000007|!b:hs|text", "00000000000000000007|!b:hs|image"}
	if got := msg.keys; len(got) != 8 || !slices.Equal(got[:4], want) || !slices.Equal(got[4:], want) {
		t.Fatalf("keys %q, want %q twice", got, want)
	}
}
