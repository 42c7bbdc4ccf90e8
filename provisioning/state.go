package provisioning

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/doorbell/intercom/internal/atomicfile"
)

// Files in the state directory. Each is small and written on its own, so
// that saving the sync position after every /sync rewrites a few bytes, not
// the token and every room.
const (
	credentialsFile = "credentials.json"
	syncFile        = "sync.json"
	filterFile      = "filter.json"
	directRoomsFile = "direct_rooms.json"
)

// maxStateFile bounds a state file read; all of them are a few hundred bytes.
const maxStateFile = 1 << 20

// Credentials are what a login returns and every later request needs.
type Credentials struct {
	Homeserver, UserID, DeviceID, AccessToken string
}

// credentialsJSON is the file format of Credentials, kept apart from the
// type so that renaming a Go field cannot silently change the file.
type credentialsJSON struct {
	Homeserver  string `json:"homeserver"`
	UserID      string `json:"user_id"`
	DeviceID    string `json:"device_id"`
	AccessToken string `json:"access_token"`
}

type syncJSON struct {
	NextBatch string `json:"next_batch"`
}

type filterJSON struct {
	FilterID string `json:"filter_id"`
}

// State is the intercom's state directory. It is safe for concurrent use.
type State struct {
	dir string

	mu sync.Mutex
	// nextBatch caches the last sync token read or written, so that saving
	// an unchanged token (an idle /sync) costs nothing.
	nextBatch      string
	nextBatchKnown bool
}

// OpenState opens the state directory dir, creating it with mode 0700 if it
// does not exist. It fails if the directory cannot be written, so that a
// read-only state directory is found at start-up rather than after a login
// whose token then could not be kept.
func OpenState(dir string) (*State, error) {
	if dir == "" {
		return nil, errors.New("open state: no directory given")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("open state directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("open state directory %s: not a directory", dir)
	}
	// Temporary files left by a crash between create and rename are never
	// read; remove them so they do not accumulate.
	_ = atomicfile.RemoveTemps(dir) // best effort: a leftover only wastes space
	probe, err := os.CreateTemp(dir, ".probe.tmp-*")
	if err != nil {
		return nil, fmt.Errorf("open state directory: %w", err)
	}
	probe.Close()
	if err := os.Remove(probe.Name()); err != nil {
		return nil, fmt.Errorf("open state directory: %w", err)
	}
	return &State{dir: filepath.Clean(dir)}, nil
}

// Dir returns the state directory.
func (s *State) Dir() string { return s.dir }

// Credentials returns the stored credentials, and false if none are stored
// yet.
func (s *State) Credentials() (Credentials, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok, err := s.credentials()
	if err != nil {
		return Credentials{}, false, fmt.Errorf("load credentials: %w", err)
	}
	return c, ok, nil
}

func (s *State) credentials() (Credentials, bool, error) {
	var f credentialsJSON
	ok, err := s.readJSON(credentialsFile, &f)
	if err != nil || !ok {
		return Credentials{}, false, err
	}
	if f.Homeserver == "" || f.UserID == "" || f.DeviceID == "" || f.AccessToken == "" {
		return Credentials{}, false, fmt.Errorf("%s: %w: a field is missing", s.path(credentialsFile), ErrCorruptState)
	}
	return Credentials(f), true, nil
}

// SaveCredentials stores c, replacing any stored credentials.
//
// State that belongs to the previous login is dropped first: the sync
// position when the device changes (a new device must start with a full
// sync to receive its to-device messages), and also the filter and direct
// rooms when the account or homeserver changes, since those IDs mean
// nothing to another account.
func (s *State) SaveCredentials(c Credentials) error {
	if c.Homeserver == "" || c.UserID == "" || c.DeviceID == "" || c.AccessToken == "" {
		return fmt.Errorf("save credentials: %w", ErrIncompleteCredentials)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// A corrupt old file counts as a different login: drop everything.
	old, ok, err := s.credentials()
	if err == nil && !ok {
		// Nothing stored yet, so nothing can belong to an older login.
		old = c
	}
	var drop []string
	if old.Homeserver != c.Homeserver || old.UserID != c.UserID {
		drop = append(drop, syncFile, filterFile, directRoomsFile)
	} else if old.DeviceID != c.DeviceID {
		drop = append(drop, syncFile)
	}
	// Remove before writing: a crash in between leaves the old login with
	// less state, which only costs a full sync, never the new login with
	// the old one's state.
	for _, name := range drop {
		if err := s.remove(name); err != nil {
			return fmt.Errorf("save credentials: %w", err)
		}
		if name == syncFile {
			s.nextBatch, s.nextBatchKnown = "", true
		}
	}
	if err := s.writeJSON(credentialsFile, credentialsJSON(c)); err != nil {
		return fmt.Errorf("save credentials: %w", err)
	}
	return nil
}

// NextBatch returns the stored sync token, "" if none.
func (s *State) NextBatch() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nextBatchKnown {
		return s.nextBatch, nil
	}
	var f syncJSON
	if _, err := s.readJSON(syncFile, &f); err != nil {
		return "", fmt.Errorf("load sync token: %w", err)
	}
	s.nextBatch, s.nextBatchKnown = f.NextBatch, true
	return f.NextBatch, nil
}

// SaveNextBatch stores the sync token; "" removes it. Saving the token
// already stored does not touch the disk.
func (s *State) SaveNextBatch(token string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nextBatchKnown && s.nextBatch == token {
		return nil
	}
	// Forget the cache until the disk agrees, so a failed write is retried.
	s.nextBatchKnown = false
	var err error
	if token == "" {
		err = s.remove(syncFile)
	} else {
		err = s.writeJSON(syncFile, syncJSON{NextBatch: token})
	}
	if err != nil {
		return fmt.Errorf("save sync token: %w", err)
	}
	s.nextBatch, s.nextBatchKnown = token, true
	return nil
}

// FilterID returns the stored sync filter ID, "" if none.
func (s *State) FilterID() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var f filterJSON
	if _, err := s.readJSON(filterFile, &f); err != nil {
		return "", fmt.Errorf("load filter ID: %w", err)
	}
	return f.FilterID, nil
}

// SaveFilterID stores the sync filter ID; "" removes it.
func (s *State) SaveFilterID(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if id == "" {
		err = s.remove(filterFile)
	} else {
		err = s.writeJSON(filterFile, filterJSON{FilterID: id})
	}
	if err != nil {
		return fmt.Errorf("save filter ID: %w", err)
	}
	return nil
}

// DirectRoom returns the direct room the intercom shares with the resident
// user, and false if none is stored.
func (s *State) DirectRoom(user string) (room string, ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rooms, err := s.directRooms()
	if err != nil {
		return "", false, fmt.Errorf("load direct room of %s: %w", user, err)
	}
	room, ok = rooms[user]
	return room, ok, nil
}

// SaveDirectRoom stores the direct room shared with user; room "" forgets
// it, for when the resident leaves the room.
func (s *State) SaveDirectRoom(user, room string) error {
	if user == "" {
		return errors.New("save direct room: empty user ID")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rooms, err := s.directRooms()
	if err != nil {
		return fmt.Errorf("save direct room of %s: %w", user, err)
	}
	if old, ok := rooms[user]; ok && old == room || !ok && room == "" {
		return nil
	}
	if room == "" {
		delete(rooms, user)
	} else {
		rooms[user] = room
	}
	if err := s.writeJSON(directRoomsFile, rooms); err != nil {
		return fmt.Errorf("save direct room of %s: %w", user, err)
	}
	return nil
}

func (s *State) directRooms() (map[string]string, error) {
	var rooms map[string]string
	if _, err := s.readJSON(directRoomsFile, &rooms); err != nil {
		return nil, err
	}
	if rooms == nil {
		rooms = map[string]string{}
	}
	return rooms, nil
}

func (s *State) path(name string) string { return filepath.Join(s.dir, name) }

// readJSON decodes the state file name into v. It returns false, and leaves
// v alone, if the file does not exist.
func (s *State) readJSON(name string, v any) (bool, error) {
	p := s.path(name)
	data, err := readFileLimited(p, maxStateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if len(data) > maxStateFile {
		return false, fmt.Errorf("%s: %w: larger than %d bytes", p, ErrCorruptState, maxStateFile)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("%s: %w: %w", p, ErrCorruptState, err)
	}
	return true, nil
}

func (s *State) writeJSON(name string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	// Mode 0600: the credentials hold the access token.
	return atomicfile.WriteFile(s.path(name), append(data, '\n'), 0o600)
}

// remove deletes a state file, durably.
func (s *State) remove(name string) error {
	if err := os.Remove(s.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return atomicfile.SyncDir(s.dir)
}

// PeekCredentials reads the credentials kept in dir without opening the
// state (which creates the directory and probes it): for check-config,
// which must change nothing. ok is false when there are none.
func PeekCredentials(dir string) (c Credentials, ok bool, err error) {
	return (&State{dir: filepath.Clean(dir)}).Credentials()
}
