package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/internal/atomicfile"
	"github.com/doorbell/intercom/matrix"
	"github.com/doorbell/intercom/provisioning"
)

// provisionTimeout bounds `intercom provision`: it is run by hand, and an
// installer waiting on a homeserver that never answers should be told so
// rather than watch a silent terminal. (The daemon, by contrast, waits
// forever.)
const provisionTimeout = 2 * time.Minute

// provision makes the account and rooms match the configuration: the
// first login (password → access token and device ID in state_dir), then
// one usable direct room per resident, created or replaced where needed.
// It prints what it found and what it changed; a second run changes
// nothing.
// Provision is `intercom provision`: the first login and the residents'
// rooms, created or repaired; it prints what it found and changed.
//
// With encryption on it also makes the intercom's device cross-signed by
// its own identity (EnsureCrossSigning). A new identity's recovery key is
// saved as recovery-key in state_dir (0600), or, with printRecoveryKey,
// printed once and kept nowhere.
func Provision(ctx context.Context, path string, printRecoveryKey bool, stdout, stderr io.Writer) int {
	cfg, code := LoadConfig(path, stderr)
	if cfg == nil {
		return code
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if msg := stateOwnerProblem(cfg.StateDir); msg != "" {
		fmt.Fprintln(stderr, "intercom provision:", msg)
		return 1
	}
	ctx, cancel := context.WithTimeoutCause(ctx, provisionTimeout,
		fmt.Errorf("homeserver %s did not finish within %v", cfg.Matrix.Homeserver, provisionTimeout))
	defer cancel()
	// Warnings and errors only: the summary below says what happened.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: max(cfg.Log.SlogLevel(), slog.LevelWarn)}))
	sum, err := provisionAccount(ctx, cfg, printRecoveryKey, log)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", err, cause)
		}
		fmt.Fprintln(stderr, "intercom provision:", err)
		return 1
	}
	sum.print(stdout, cfg)
	return 0
}

// provisionSummary is what provision found and changed.
type provisionSummary struct {
	UserID, DeviceID string
	NewLogin         bool // a login happened now (none was kept, or it was refused)
	Rooms            []roomChange
	// Household is the household room, when household.room is set.
	Household *matrix.HouseholdRoom
	// Identity is the cross-signing outcome; nil with encryption off.
	Identity *matrix.CrossSigning
	// RecoveryKeyFile is where a new identity's recovery key was saved;
	// "" when it was printed instead (RecoveryKey) or nothing was made.
	RecoveryKeyFile, RecoveryKey string
}

type roomChange struct {
	Resident, Room, Was string
	Change              string   // "unchanged", "created", "replaced"
	Look                []string // what of the room's look was set: "name", "avatar"
}

// changed reports whether provision changed anything about the room.
func (r roomChange) changed() bool { return r.Change != "unchanged" || len(r.Look) > 0 }

// Changes counts what this run changed: the login, and each room that was
// created, replaced or repaired.
func (s provisionSummary) Changes() int {
	n := 0
	if s.NewLogin {
		n++
	}
	for _, r := range s.Rooms {
		if r.changed() {
			n++
		}
	}
	if h := s.Household; h != nil {
		if h.Created {
			n++
		} else {
			n += len(h.Invited)
		}
	}
	if id := s.Identity; id != nil && (id.Created || id.Signed) {
		n++
	}
	return n
}

// provisionAccount logs in (or resumes the kept session) and makes sure
// every resident has a direct room, through the same Session the daemon
// uses, so that provision and run can never disagree about what a usable
// room is.
func provisionAccount(ctx context.Context, cfg *provisioning.Config, printRecoveryKey bool, log *slog.Logger) (provisionSummary, error) {
	var sum provisionSummary
	state, err := provisioning.OpenState(cfg.StateDir)
	if err != nil {
		return sum, err
	}
	before, hadLogin, err := state.Credentials()
	if err != nil {
		return sum, err
	}
	wasRoom := map[string]string{}
	for _, r := range cfg.Residents {
		room, ok, err := state.DirectRoom(r)
		if err != nil {
			return sum, err
		}
		if ok {
			wasRoom[r] = room
		}
	}
	session, err := newSession(cfg, state, log)
	if err != nil {
		return sum, err
	}
	defer session.Close()
	if err := session.Login(ctx); err != nil {
		return sum, fmt.Errorf("log in: %w", err)
	}
	after, _, err := state.Credentials()
	if err != nil {
		return sum, err
	}
	sum.UserID, sum.DeviceID = string(session.UserID()), session.DeviceID()
	sum.NewLogin = !hadLogin || before.AccessToken != after.AccessToken || before.DeviceID != after.DeviceID
	if cfg.Matrix.Encryption {
		if err := provisionIdentity(ctx, cfg, session, printRecoveryKey, &sum); err != nil {
			return sum, err
		}
	}
	look, err := roomLook(cfg)
	if err != nil {
		return sum, err
	}
	rooms, err := session.EnsureDirectRooms(ctx)
	if err != nil {
		return sum, fmt.Errorf("direct rooms: %w", err)
	}
	for _, r := range cfg.Residents {
		room := string(rooms[callengine.UserID(r)])
		c := roomChange{Resident: r, Room: room, Was: wasRoom[r], Change: "unchanged"}
		switch {
		case c.Was == "":
			c.Change = "created"
		case c.Was != room:
			c.Change = "replaced"
		}
		if c.Look, err = session.EnsureRoomLook(ctx, callengine.RoomID(room), look); err != nil {
			return sum, fmt.Errorf("name and avatar of %s's room: %w", r, err)
		}
		sum.Rooms = append(sum.Rooms, c)
	}
	if cfg.Household.Room != "" {
		h, err := session.EnsureHouseholdRoom(ctx, cfg.Household.Room, householdRoomName(cfg))
		if err != nil {
			return sum, fmt.Errorf("household room: %w", err)
		}
		sum.Household = &h
	}
	return sum, nil
}

// recoveryKeyFile is where provision keeps a new identity's recovery key
// unless told to print it.
const recoveryKeyFile = "recovery-key"

// provisionIdentity cross-signs the intercom's device by its own identity,
// creating the identity on first run. A kept recovery key unlocks an
// identity that does not sign this device yet (a new device).
func provisionIdentity(ctx context.Context, cfg *provisioning.Config, session *matrix.Session, printKey bool, sum *provisionSummary) error {
	keyPath := filepath.Join(cfg.StateDir, recoveryKeyFile)
	kept := ""
	if b, err := os.ReadFile(keyPath); err == nil {
		kept = strings.TrimSpace(string(b))
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("recovery key: %w", err)
	}
	cs, err := session.EnsureCrossSigning(ctx, kept)
	if errors.Is(err, matrix.ErrIdentityLocked) {
		return fmt.Errorf("cross-signing: %w; put its recovery key into %s and run provision again", err, keyPath)
	}
	if err != nil {
		return fmt.Errorf("cross-signing: %w", err)
	}
	sum.Identity = &cs
	if !cs.Created {
		return nil
	}
	if printKey {
		sum.RecoveryKey = cs.RecoveryKey
		return nil
	}
	if err := atomicfile.WriteFile(keyPath, []byte(cs.RecoveryKey+"\n"), 0o600); err != nil {
		// The identity exists now; its key must not be lost unseen.
		sum.RecoveryKey = cs.RecoveryKey
		return fmt.Errorf("save the recovery key to %s: %w (the key is %s: write it down)", keyPath, err, cs.RecoveryKey)
	}
	sum.RecoveryKeyFile = keyPath
	return nil
}

// householdRoomName names a household room the intercom creates.
func householdRoomName(cfg *provisioning.Config) string {
	return cfg.Matrix.DeviceName + " (household)"
}

// roomLook is how the configuration wants the direct rooms to look: named
// after the device, with matrix.room_avatar as avatar if set. Without
// room_avatar the avatar is left alone rather than set to a built-in
// picture: clients already draw the name's initial, what a room shows is
// the installer's choice, and a built-in image would be uploaded again by
// the first provision after any release that changed it.
func roomLook(cfg *provisioning.Config) (matrix.RoomLook, error) {
	look := matrix.RoomLook{Name: cfg.Matrix.DeviceName}
	if cfg.Matrix.RoomAvatar == "" {
		return look, nil
	}
	f, err := os.Open(cfg.Matrix.RoomAvatar)
	if err != nil {
		return look, fmt.Errorf("matrix.room_avatar: %w", err)
	}
	defer f.Close()
	// One byte over the limit, so CheckAvatar sees a file that is too big.
	data, err := io.ReadAll(io.LimitReader(f, maxAvatarFile+1))
	if err != nil {
		return look, fmt.Errorf("matrix.room_avatar: %w", err)
	}
	if _, _, _, err := matrix.CheckAvatar(data); err != nil {
		return look, fmt.Errorf("matrix.room_avatar %s: %w", cfg.Matrix.RoomAvatar, err)
	}
	look.Avatar = data
	return look, nil
}

// maxAvatarFile is how much of matrix.room_avatar is read; CheckAvatar
// refuses anything over 1 MiB.
const maxAvatarFile = 1 << 20

// roomLookTimeout bounds the daemon's best-effort naming of its rooms.
const roomLookTimeout = time.Minute

// applyRoomLook names the rooms and sets their avatar, as provision does,
// for the daemon at start and after a residents reload. It is best effort:
// a room without its name or avatar still rings, so problems are logged
// and never stop the daemon.
func applyRoomLook(ctx context.Context, cfg *provisioning.Config, s interface {
	EnsureRoomLook(context.Context, callengine.RoomID, matrix.RoomLook) ([]string, error)
}, rooms map[callengine.UserID]callengine.RoomID, log *slog.Logger) {
	look, err := roomLook(cfg)
	if err != nil {
		log.Error("room avatar not set", "err", err)
	}
	ctx, cancel := context.WithTimeout(ctx, roomLookTimeout)
	defer cancel()
	for user, room := range rooms {
		if _, err := s.EnsureRoomLook(ctx, room, look); err != nil {
			log.Warn("room name and avatar not set", "room_id", room, "user_id", user, "err", err)
		}
	}
}

// newSession builds the Matrix session from the configuration, as the
// daemon does.
// newSession is the intercom's Matrix session as the configuration makes
// it, for provision and run alike (the same device, crypto store and
// residents).
func newSession(cfg *provisioning.Config, state *provisioning.State, log *slog.Logger) (*matrix.Session, error) {
	residents := make([]callengine.UserID, len(cfg.Residents))
	for i, r := range cfg.Residents {
		residents[i] = callengine.UserID(r)
	}
	return matrix.New(matrix.Options{
		Homeserver: cfg.Matrix.Homeserver, UserID: callengine.UserID(cfg.Matrix.UserID),
		Password: cfg.Matrix.Password, AccessToken: cfg.Matrix.AccessToken,
		DeviceName: cfg.Matrix.DeviceName, Residents: residents,
		Store: stateStore{state}, Logger: log.With("component", "matrix"),
		Messages:   true, // door commands (door.go)
		Encryption: encryptionOptions(cfg),
	})
}

func (s provisionSummary) print(w io.Writer, cfg *provisioning.Config) {
	fmt.Fprintf(w, "intercom provision: %s\n", cfg.Path)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  homeserver\t%s\n", cfg.Matrix.Homeserver)
	login := "kept session (no new login)"
	if s.NewLogin {
		login = "logged in now; access token and device ID kept in " + cfg.StateDir
	}
	fmt.Fprintf(tw, "  account\t%s, device %s\t%s\n", s.UserID, s.DeviceID, login)
	for _, r := range s.Rooms {
		change := r.Change
		if r.Change == "replaced" {
			change += " (" + r.Was + " was no longer a usable direct room)"
		}
		if r.Change != "unchanged" {
			change += "; " + r.Resident + " is invited"
		}
		if len(r.Look) > 0 {
			if r.Change == "unchanged" {
				change = "repaired"
			}
			change += "; set " + strings.Join(r.Look, " and ")
		}
		fmt.Fprintf(tw, "  resident %s\troom %s\t%s\n", r.Resident, r.Room, change)
	}
	if id := s.Identity; id != nil {
		what := "device already cross-signed"
		switch {
		case id.Created && s.RecoveryKeyFile != "":
			what = "new identity; device cross-signed; recovery key saved in " + s.RecoveryKeyFile
		case id.Created:
			what = "new identity; device cross-signed; recovery key printed below, kept nowhere"
		case id.Signed:
			what = "device cross-signed now with the recovery key"
		}
		fmt.Fprintf(tw, "  identity\tmaster key %s\t%s\n", id.MasterKey, what)
	}
	if h := s.Household; h != nil {
		change := "unchanged"
		switch {
		case h.Created:
			change = "created; every resident is invited"
		case len(h.Invited) > 0:
			change = fmt.Sprintf("invited %d resident(s)", len(h.Invited))
		}
		fmt.Fprintf(tw, "  household\troom %s\t%s\n", h.Room, change)
	}
	tw.Flush()
	if s.RecoveryKey != "" {
		fmt.Fprintf(w, "recovery key (shown once; it restores the intercom's identity on a new device): %s\n", s.RecoveryKey)
	}
	if n := s.Changes(); n == 0 {
		fmt.Fprintln(w, "nothing changed: the account and rooms already match the configuration")
	} else {
		fmt.Fprintf(w, "%d change(s)\n", n)
	}
	if cfg.Matrix.PasswordFile != "" && cfg.Matrix.Password != "" {
		fmt.Fprintf(w, "The session is kept in %s: %s is no longer needed and may be removed.\n", cfg.StateDir, cfg.Matrix.PasswordFile)
	}
}

// stateOwnerProblem refuses to provision as root into a state directory
// that belongs to another user (the service's): the files written would be
// root's, and the service could then not read its own session.
func stateOwnerProblem(dir string) string {
	if os.Geteuid() != 0 {
		return ""
	}
	st, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) || err != nil {
		return ""
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 {
		return fmt.Sprintf("%s belongs to user %d, not root; run provision as that user, e.g. runuser -u intercom -- intercom provision --config FILE", dir, sys.Uid)
	}
	return ""
}
