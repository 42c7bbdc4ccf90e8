package provisioning

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func openState(t *testing.T) *State {
	t.Helper()
	s, err := OpenState(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatalf("OpenState: %v", err)
	}
	return s
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

var alice = Credentials{Homeserver: "https://matrix.example.org", UserID: "@intercom:example.org", DeviceID: "ABCDEF", AccessToken: "syt_1"}

func TestOpenStateCreatesPrivateDirectory(t *testing.T) {
	s := openState(t)
	if m := mode(t, s.Dir()); m != 0o700 {
		t.Errorf("state directory mode = %04o, want 0700", m)
	}
	// Opening again is fine, and clears temporary files a crash left.
	stale := filepath.Join(s.Dir(), ".sync.json.tmp-123")
	writeFile(t, s.Dir(), ".sync.json.tmp-123", "{", 0o600)
	if _, err := OpenState(s.Dir()); err != nil {
		t.Fatalf("OpenState again: %v", err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temporary file not removed: %v", err)
	}
}

func TestOpenStateErrors(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "file", "", 0o600)
	if _, err := OpenState(file); err == nil {
		t.Errorf("OpenState of a file succeeded")
	}
	if _, err := OpenState(""); err == nil {
		t.Errorf("OpenState of \"\" succeeded")
	}
	if os.Geteuid() != 0 { // root can write anywhere
		ro := filepath.Join(dir, "ro")
		if err := os.Mkdir(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenState(ro); err == nil {
			t.Errorf("OpenState of a read-only directory succeeded")
		}
	}
}

func TestStateRoundTrips(t *testing.T) {
	s := openState(t)

	if _, ok, err := s.Credentials(); ok || err != nil {
		t.Fatalf("Credentials of a new state = %v, %v; want none", ok, err)
	}
	if b, err := s.NextBatch(); b != "" || err != nil {
		t.Fatalf("NextBatch of a new state = %q, %v", b, err)
	}
	if f, err := s.FilterID(); f != "" || err != nil {
		t.Fatalf("FilterID of a new state = %q, %v", f, err)
	}
	if _, ok, err := s.DirectRoom("@alice:example.org"); ok || err != nil {
		t.Fatalf("DirectRoom of a new state = %v, %v", ok, err)
	}

	must(t, s.SaveCredentials(alice))
	must(t, s.SaveNextBatch("s72594_4483_1934"))
	must(t, s.SaveFilterID("filter1"))
	must(t, s.SaveDirectRoom("@alice:example.org", "!a:example.org"))
	must(t, s.SaveDirectRoom("@bob:example.org", "!b:example.org"))

	// A new State on the same directory, as after a restart, sees it all.
	s2, err := OpenState(s.Dir())
	must(t, err)
	if c, ok, err := s2.Credentials(); !ok || err != nil || c != alice {
		t.Errorf("Credentials = %v, %v, %v; want %v", c, ok, err, alice)
	}
	if b, err := s2.NextBatch(); b != "s72594_4483_1934" || err != nil {
		t.Errorf("NextBatch = %q, %v", b, err)
	}
	if f, err := s2.FilterID(); f != "filter1" || err != nil {
		t.Errorf("FilterID = %q, %v", f, err)
	}
	for user, want := range map[string]string{"@alice:example.org": "!a:example.org", "@bob:example.org": "!b:example.org"} {
		if r, ok, err := s2.DirectRoom(user); !ok || err != nil || r != want {
			t.Errorf("DirectRoom(%s) = %q, %v, %v; want %q", user, r, ok, err, want)
		}
	}

	// Every file is private.
	entries, err := os.ReadDir(s.Dir())
	must(t, err)
	if len(entries) != 4 {
		t.Errorf("state directory holds %d files, want 4", len(entries))
	}
	for _, e := range entries {
		if m := mode(t, filepath.Join(s.Dir(), e.Name())); m != 0o600 {
			t.Errorf("%s mode = %04o, want 0600", e.Name(), m)
		}
	}

	// Empty values forget.
	must(t, s2.SaveNextBatch(""))
	must(t, s2.SaveFilterID(""))
	must(t, s2.SaveDirectRoom("@bob:example.org", ""))
	s3, err := OpenState(s.Dir())
	must(t, err)
	if b, _ := s3.NextBatch(); b != "" {
		t.Errorf("NextBatch after clearing = %q", b)
	}
	if f, _ := s3.FilterID(); f != "" {
		t.Errorf("FilterID after clearing = %q", f)
	}
	if _, ok, _ := s3.DirectRoom("@bob:example.org"); ok {
		t.Errorf("DirectRoom(bob) still stored after clearing")
	}
	if _, ok, _ := s3.DirectRoom("@alice:example.org"); !ok {
		t.Errorf("DirectRoom(alice) lost when clearing bob's")
	}
}

func TestSaveCredentialsDropsStateOfOtherLogins(t *testing.T) {
	tests := []struct {
		name                             string
		next                             Credentials
		keepBatch, keepFilter, keepRooms bool
	}{
		{"new token, same device", Credentials{alice.Homeserver, alice.UserID, alice.DeviceID, "syt_2"}, true, true, true},
		{"new device", Credentials{alice.Homeserver, alice.UserID, "GHIJKL", "syt_2"}, false, true, true},
		{"new account", Credentials{alice.Homeserver, "@other:example.org", "GHIJKL", "syt_2"}, false, false, false},
		{"new homeserver", Credentials{"https://other.example", alice.UserID, alice.DeviceID, "syt_2"}, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openState(t)
			must(t, s.SaveCredentials(alice))
			must(t, s.SaveNextBatch("batch"))
			must(t, s.SaveFilterID("filter"))
			must(t, s.SaveDirectRoom("@alice:example.org", "!a:example.org"))
			must(t, s.SaveCredentials(tt.next))

			s2, err := OpenState(s.Dir())
			must(t, err)
			for _, st := range []*State{s, s2} { // the cache and the disk agree
				b, _ := st.NextBatch()
				f, _ := st.FilterID()
				_, r, _ := st.DirectRoom("@alice:example.org")
				if (b != "") != tt.keepBatch || (f != "") != tt.keepFilter || r != tt.keepRooms {
					t.Errorf("after SaveCredentials: batch %q, filter %q, room %v", b, f, r)
				}
			}
		})
	}
}

func TestSaveCredentialsRejectsIncomplete(t *testing.T) {
	s := openState(t)
	c := alice
	c.DeviceID = ""
	if err := s.SaveCredentials(c); !errors.Is(err, ErrIncompleteCredentials) {
		t.Errorf("SaveCredentials without device = %v, want ErrIncompleteCredentials", err)
	}
}

func TestCorruptStateFiles(t *testing.T) {
	tests := []struct {
		file    string
		content string
		read    func(*State) error
	}{
		{credentialsFile, "{\"user_id\": ", func(s *State) error { _, _, err := s.Credentials(); return err }},
		{credentialsFile, "", func(s *State) error { _, _, err := s.Credentials(); return err }},
		{credentialsFile, `{"user_id": "@i:h"}`, func(s *State) error { _, _, err := s.Credentials(); return err }},
		{syncFile, "[1]", func(s *State) error { _, err := s.NextBatch(); return err }},
		{filterFile, "\x00", func(s *State) error { _, err := s.FilterID(); return err }},
		{directRoomsFile, `{"@a:b": 5}`, func(s *State) error { _, _, err := s.DirectRoom("@a:b"); return err }},
		{directRoomsFile, `{`, func(s *State) error { return s.SaveDirectRoom("@a:b", "!r:b") }},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %q", tt.file, tt.content), func(t *testing.T) {
			s := openState(t)
			path := writeFile(t, s.Dir(), tt.file, tt.content, 0o600)
			err := tt.read(s)
			if !errors.Is(err, ErrCorruptState) {
				t.Fatalf("error = %v, want ErrCorruptState", err)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file %s", err, path)
			}
		})
	}
}

// TestAtomicReplace checks that a save replaces the file by rename (a new
// inode), so a reader never sees it half written, and leaves no temporary
// file behind.
func TestAtomicReplace(t *testing.T) {
	s := openState(t)
	must(t, s.SaveNextBatch("one"))
	path := filepath.Join(s.Dir(), syncFile)
	before, err := os.Stat(path)
	must(t, err)
	must(t, s.SaveNextBatch("two"))
	after, err := os.Stat(path)
	must(t, err)
	if os.SameFile(before, after) {
		t.Errorf("%s was rewritten in place, not replaced", syncFile)
	}
	entries, err := os.ReadDir(s.Dir())
	must(t, err)
	if len(entries) != 1 {
		t.Errorf("state directory holds %v, want only %s", entries, syncFile)
	}
	data, err := os.ReadFile(path)
	must(t, err)
	if string(data) != "{\n  \"next_batch\": \"two\"\n}\n" {
		t.Errorf("%s = %q", syncFile, data)
	}

	// Saving the same token again does not touch the disk.
	must(t, s.SaveNextBatch("two"))
	again, err := os.Stat(path)
	must(t, err)
	if !os.SameFile(after, again) {
		t.Errorf("saving an unchanged token rewrote %s", syncFile)
	}
}

func TestStateConcurrentUse(t *testing.T) {
	s := openState(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("@u%d:example.org", i)
			for j := range 20 {
				if err := s.SaveNextBatch(fmt.Sprintf("b%d_%d", i, j)); err != nil {
					t.Error(err)
				}
				if _, err := s.NextBatch(); err != nil {
					t.Error(err)
				}
				if err := s.SaveDirectRoom(user, fmt.Sprintf("!r%d:example.org", j)); err != nil {
					t.Error(err)
				}
				if _, _, err := s.DirectRoom(user); err != nil {
					t.Error(err)
				}
				if j%5 == 0 {
					c := alice
					c.AccessToken = fmt.Sprintf("syt_%d_%d", i, j)
					if err := s.SaveCredentials(c); err != nil {
						t.Error(err)
					}
					if _, _, err := s.Credentials(); err != nil {
						t.Error(err)
					}
					if err := s.SaveFilterID(fmt.Sprint(j)); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	// No update was lost to a read-modify-write race.
	for i := range 8 {
		if r, ok, err := s.DirectRoom(fmt.Sprintf("@u%d:example.org", i)); !ok || err != nil || r != "!r19:example.org" {
			t.Errorf("DirectRoom(u%d) = %q, %v, %v", i, r, ok, err)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
