package matrix

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"go.mau.fi/util/dbutil"
	// Registers the "sqlite3-fk-wal" driver: mattn/go-sqlite3 (cgo) with
	// foreign keys and WAL on, the driver mautrix's own stores are tested
	// with.
	_ "go.mau.fi/util/dbutil/litestream"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/sqlstatestore"

	"github.com/doorbell/intercom/callengine"
)

// KeyRecipients chooses which devices of a room's members get the room
// keys of what the intercom sends.
type KeyRecipients string

const (
	// ShareAllDevices: every device of every member, as current Element
	// does by default. A resident who has not set up cross-signing still
	// sees the ring notices.
	ShareAllDevices KeyRecipients = "all"
	// ShareCrossSigned: only devices cross-signed by their user (Element's
	// "only send to verified devices" setting, with trust on first use of
	// each user's identity). A device a thief added without the user's
	// recovery key sees nothing.
	ShareCrossSigned KeyRecipients = "cross_signed"
)

// EncryptionOptions turn on end-to-end encryption: Olm and Megolm through
// mautrix's crypto (its pure-Go goolm implementation, build tag goolm).
type EncryptionOptions struct {
	// Dir holds the crypto store: crypto.db (SQLite: the device's
	// identity keys, Olm and Megolm sessions, the device lists of the
	// residents and the membership of encrypted rooms) and
	// crypto-pickle.key (the key the store's secrets are encrypted with).
	// Both are created 0600. Required.
	Dir string
	// ShareWith chooses the devices that get room keys. Default
	// ShareAllDevices.
	ShareWith KeyRecipients
}

// Crypto store file names inside EncryptionOptions.Dir.
const (
	cryptoDBName    = "crypto.db"
	pickleKeyName   = "crypto-pickle.key"
	pickleKeyLength = 32
)

// Bounds of the undecryptable events the sync loop waits for keys for.
const (
	// keyRequestAfter is how long an event waits for its room key before
	// the intercom asks the sender's devices for it (m.room_key_request).
	// Keys usually arrive in the same or the next sync.
	keyRequestAfter = 3 * time.Second
	// keyWaitLimit is how long an event waits in all. A door command that
	// decrypts later than this is history, not an order; the door policy
	// would refuse it by age anyway.
	keyWaitLimit = 60 * time.Second
	// maxWaiting bounds the events kept waiting, so that a flood of
	// undecryptable events cannot grow memory.
	maxWaiting = 256
)

// e2ee is a Session's end-to-end encryption: the crypto store, mautrix's
// OlmMachine and the events waiting for their keys. Its methods run on the
// sync goroutine (sync, decrypt) or on senders' goroutines (encrypt); the
// OlmMachine and the stores are safe for that.
type e2ee struct {
	s     *Session
	db    *dbutil.Database
	store *crypto.SQLCryptoStore
	state *sqlstatestore.SQLStateStore
	mach  *crypto.OlmMachine
	// cli is the OlmMachine's client. It carries no token of its own: its
	// transport adds the session's current one, so a login that replaces
	// the token (same device) needs nothing here.
	cli    *mautrix.Client
	device id.DeviceID
	// requestAfter and waitLimit are keyRequestAfter and keyWaitLimit;
	// tests shorten them.
	requestAfter, waitLimit time.Duration

	mu      sync.Mutex
	waiting []*waitingEvent
	status  CryptoStatus
	// prepared are the rooms PrepareEncryption was asked for: the sync
	// loop's warmer keeps their room keys shared (warmLoop).
	prepared map[id.RoomID]bool
	warm     chan struct{} // capacity 1: a sync happened
}

// waitingEvent is an encrypted timeline event whose room key has not
// arrived yet.
type waitingEvent struct {
	evt       *event.Event
	raw       syncEvent
	since     time.Time
	requested bool
}

// CryptoStatus describes end-to-end encryption for the status API.
type CryptoStatus struct {
	Enabled     bool
	DeviceID    string
	Ed25519     string // the device's fingerprint key, as residents see it
	CrossSigned bool   // the device is signed by the intercom's own identity
	// Undecryptable counts events given up on (no key within
	// keyWaitLimit, or a decryption error).
	Undecryptable int
	// Waiting are events whose room key is still awaited.
	Waiting []WaitingKey
	// LastFailure is the last event that did not decrypt.
	LastFailure *WaitingKey
}

// WaitingKey names an event that could not be decrypted (yet).
type WaitingKey struct {
	Room      string
	Sender    string
	EventID   string
	SessionID string
	Since     time.Time
	Reason    string
}

// tokenTransport adds the session's current access token to each request
// of the OlmMachine's client.
type tokenTransport struct {
	s    *Session
	base http.RoundTripper
}

func (t tokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c := t.s.cli.Load()
	if c == nil {
		return nil, ErrNotLoggedIn
	}
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+c.AccessToken)
	return t.base.RoundTrip(req)
}

// openE2EE opens (or creates) the crypto store for the logged-in device
// and makes sure the device's keys on the homeserver are the store's:
//   - a new store for a device that has no keys on the homeserver uploads
//     them (first start);
//   - a store that belongs to another device, a missing pickle key, and a
//     new store for a device that already has keys on the homeserver (the
//     store was deleted while the access token was kept) are refused with
//     ErrCryptoStore: uploading new keys under the old device would make
//     every resident's client see its identity change, and the sessions
//     they share with it would be lost without a word.
func openE2EE(ctx context.Context, s *Session, c *mautrix.Client, opts EncryptionOptions) (_ *e2ee, err error) {
	if opts.Dir == "" {
		return nil, errors.New("matrix: EncryptionOptions.Dir is required")
	}
	switch opts.ShareWith {
	case "", ShareAllDevices, ShareCrossSigned:
	default:
		return nil, fmt.Errorf("matrix: unknown key recipients %q (want %q or %q)", opts.ShareWith, ShareAllDevices, ShareCrossSigned)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("crypto store: %w", err)
	}
	dbPath := filepath.Join(opts.Dir, cryptoDBName)
	_, statErr := os.Stat(dbPath)
	existed := statErr == nil
	key, err := loadPickleKey(filepath.Join(opts.Dir, pickleKeyName), existed)
	if err != nil {
		return nil, err
	}
	if !existed {
		// SQLite gives its -wal and -shm files the database file's mode,
		// so creating it 0600 first keeps all three private.
		f, err := os.OpenFile(dbPath, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("crypto store: %w", err)
		}
		f.Close()
	}
	db, err := dbutil.NewWithDialect("file:"+dbPath+"?_txlock=immediate", "sqlite3-fk-wal")
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %w", ErrCryptoStore, dbPath, err)
	}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()
	zl := newZerolog(s.log)
	e := &e2ee{s: s, db: db, device: c.DeviceID, requestAfter: keyRequestAfter, waitLimit: keyWaitLimit,
		prepared: map[id.RoomID]bool{}, warm: make(chan struct{}, 1)}
	e.store = crypto.NewSQLCryptoStore(db, dbutil.ZeroLogger(zl.With().Str("db_section", "crypto").Logger()), "", c.DeviceID, key)
	if err := e.store.DB.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("%w: %s is unreadable (%w); restore state_dir from a backup, or %s", ErrCryptoStore, dbPath, err, recoveryHint)
	}
	e.state = sqlstatestore.NewSQLStateStore(db, dbutil.ZeroLogger(zl.With().Str("db_section", "state").Logger()), false)
	if err := e.state.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("%w: %s is unreadable (%w); restore state_dir from a backup, or %s", ErrCryptoStore, dbPath, err, recoveryHint)
	}
	stored, err := e.store.FindDeviceID(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCryptoStore, dbPath, err)
	}
	if stored != "" && stored != c.DeviceID {
		return nil, fmt.Errorf("%w: %s holds the keys of device %s, but the session is device %s; restore the state directory that belongs to %s, or %s",
			ErrCryptoStore, dbPath, stored, c.DeviceID, c.DeviceID, recoveryHint)
	}
	hc := *s.http
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	hc.Transport = tokenTransport{s: s, base: base}
	e.cli = &mautrix.Client{
		HomeserverURL:   s.hsURL,
		UserID:          c.UserID,
		DeviceID:        c.DeviceID,
		UserAgent:       c.UserAgent,
		Client:          &hc,
		Log:             zl,
		IgnoreRateLimit: true,
		StateStore:      e.state,
	}
	e.mach = crypto.NewOlmMachine(e.cli, &zl, e.store, e.state)
	if opts.ShareWith == ShareCrossSigned {
		e.mach.SendKeysMinTrust = id.TrustStateCrossSignedTOFU
	}
	if err := e.mach.Load(ctx); err != nil {
		return nil, fmt.Errorf("%w: load the Olm account from %s: %w", ErrCryptoStore, dbPath, err)
	}
	if err := e.checkServerKeys(ctx, dbPath); err != nil {
		return nil, err
	}
	own := e.mach.OwnIdentity()
	e.status = CryptoStatus{Enabled: true, DeviceID: string(c.DeviceID), Ed25519: string(own.SigningKey)}
	// Whether residents see this device as verified: a status, not a
	// reason to refuse to start (provision sets it up).
	_, fetchErr := e.mach.FetchKeys(ctx, []id.UserID{c.UserID}, true)
	// mautrix caches the own cross-signing keys on first use without a
	// lock; use it here, before the sync loop and the warmer share the
	// machine.
	_, _ = e.mach.GetOwnCrossSigningPublicKeys(ctx)
	if fetchErr != nil {
		s.log.Warn("fetch the intercom's own keys", "err", fetchErr)
	} else if signed, err := e.ownDeviceSigned(ctx); err != nil {
		s.log.Warn("check the intercom's cross-signing", "err", err)
	} else {
		e.status.CrossSigned = signed
		if !signed {
			s.log.Warn("the intercom's device is not cross-signed: residents' clients show it as unverified; run intercom provision")
		}
	}
	return e, nil
}

// recoveryHint is the way out of a crypto store that does not match the
// homeserver, for the errors that refuse to start.
const recoveryHint = "remove the stored credentials so that the intercom logs in as a new device (its residents then see a new device of the intercom)"

// checkServerKeys compares the device's keys on the homeserver with the
// store's, and uploads them on first start.
func (e *e2ee) checkServerKeys(ctx context.Context, dbPath string) error {
	var resp *mautrix.RespQueryKeys
	err := e.s.do(ctx, "query own device keys", loopPolicy, func(ctx context.Context) (err error) {
		resp, err = e.cli.QueryKeys(ctx, &mautrix.ReqQueryKeys{
			DeviceKeys: map[id.UserID]mautrix.DeviceIDList{e.cli.UserID: {e.cli.DeviceID}},
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("query own device keys: %w", err)
	}
	shared := e.mach.GetAccount().Shared
	own := e.mach.OwnIdentity()
	dev, onServer := resp.DeviceKeys[e.cli.UserID][e.cli.DeviceID]
	onServer = onServer && len(dev.Keys) > 0
	switch {
	case !onServer && !shared:
		if err := e.s.do(ctx, "upload device keys", loopPolicy, func(ctx context.Context) error {
			return e.mach.ShareKeys(ctx, -1)
		}); err != nil {
			return fmt.Errorf("upload device keys: %w", err)
		}
		e.s.log.Info("uploaded the intercom's device keys", "device_id", e.cli.DeviceID, "ed25519", own.SigningKey)
		return nil
	case !onServer:
		return fmt.Errorf("%w: the homeserver no longer lists the keys of device %s that %s holds (the device was deleted?); %s",
			ErrCryptoStore, e.cli.DeviceID, dbPath, recoveryHint)
	case !shared:
		return fmt.Errorf("%w: device %s already has keys on the homeserver but %s is new (deleted or replaced while the access token was kept); "+
			"refusing to upload new keys under the old device: restore the crypto store, or %s",
			ErrCryptoStore, e.cli.DeviceID, dbPath, recoveryHint)
	case dev.Keys.GetEd25519(e.cli.DeviceID) != own.SigningKey:
		return fmt.Errorf("%w: the homeserver lists identity key %s for device %s, %s holds %s; %s",
			ErrCryptoStore, dev.Keys.GetEd25519(e.cli.DeviceID), e.cli.DeviceID, dbPath, own.SigningKey, recoveryHint)
	}
	return nil
}

// loadPickleKey reads the store's pickle key, or creates it for a new
// store. A store without its key cannot be read: that is an error, never
// a reason to start over.
func loadPickleKey(path string, storeExists bool) ([]byte, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		key, derr := hex.DecodeString(strings.TrimSpace(string(b)))
		if derr != nil || len(key) != pickleKeyLength {
			return nil, fmt.Errorf("%w: %s is not a %d-byte hex key", ErrCryptoStore, path, pickleKeyLength)
		}
		return key, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%w: %w", ErrCryptoStore, err)
	case storeExists:
		return nil, fmt.Errorf("%w: %s is missing, so the crypto store beside it cannot be read; restore it, or %s",
			ErrCryptoStore, path, recoveryHint)
	}
	key := make([]byte, pickleKeyLength)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCryptoStore, err)
	}
	return key, nil
}

func (e *e2ee) close() error {
	e.mach.Destroy()
	return e.db.Close()
}

// cryptoSync is the part of a /sync response the crypto reads: what the
// hooks read (to-device events, joined rooms' state and timeline) and the
// device lists and key counts, each left raw and decoded on its own, so
// that one odd part cannot hide the others.
type cryptoSync struct {
	householdSync
	DeviceLists json.RawMessage `json:"device_lists"`
	OTKCount    json.RawMessage `json:"device_one_time_keys_count"`
}

// handleSync feeds one /sync response to the crypto before anything else
// reads it: the state of joined rooms (membership and m.room.encryption)
// into the state store, device list changes, one-time key counts (keys
// are topped up when fewer than half are left), and the to-device events,
// Olm-decrypted. Room keys are taken in here; the decrypted to-device
// events that are not crypto's own (call signalling) are returned for the
// household hooks.
func (e *e2ee) handleSync(ctx context.Context, resp *cryptoSync, initial bool) []ToDeviceEvent {
	for room, j := range resp.Rooms.Join {
		for _, list := range [][]json.RawMessage{j.State.Events, j.Timeline.Events} {
			for _, raw := range list {
				evt := parseEvent(raw, room)
				if evt == nil || evt.StateKey == nil {
					continue
				}
				mautrix.UpdateStateStore(ctx, e.state, evt)
				if evt.Type == event.StateMember && !initial {
					// Rotates the room's outbound session when a member
					// leaves, so that they cannot read what follows.
					e.mach.HandleMemberEvent(ctx, evt)
				}
			}
		}
	}
	var dl mautrix.DeviceLists
	if len(resp.DeviceLists) > 0 && json.Unmarshal(resp.DeviceLists, &dl) == nil {
		e.mach.HandleDeviceLists(ctx, &dl, "")
	}
	var out []ToDeviceEvent
	for _, raw := range resp.ToDevice.Events {
		evt := parseEvent(raw, "")
		if evt == nil {
			continue
		}
		if evt.Type != event.ToDeviceEncrypted {
			// Key requests, withheld notices; call signalling in the
			// clear reaches the household hooks from the raw response.
			e.mach.HandleToDeviceEvent(ctx, evt)
			continue
		}
		dec := e.mach.HandleEncryptedEvent(ctx, evt)
		if dec == nil || initial {
			continue
		}
		content := dec.Content.VeryRaw
		if len(content) == 0 {
			content, _ = json.Marshal(dec.Content.Raw)
		}
		td := ToDeviceEvent{Sender: callengine.UserID(dec.Sender), Type: dec.Type.Type, Content: content, Encrypted: true}
		if dec.SenderDevice != nil {
			td.Device = string(dec.SenderDevice.DeviceID)
		}
		out = append(out, td)
	}
	var otk mautrix.OTKCount
	if len(resp.OTKCount) > 0 && json.Unmarshal(resp.OTKCount, &otk) == nil {
		e.mach.HandleOTKCounts(ctx, &otk)
	}
	e.mach.MarkOlmHashSavePoint(ctx)
	return out
}

// parseEvent decodes one client-format event with its content parsed as
// mautrix knows it, or nil if it does not decode. Room events (room set)
// are state or message events by their state key; without a room it is a
// to-device event. The class must be right before parsing: mautrix picks
// the content type by type and class (m.room_key_request is only known as
// a to-device event).
func parseEvent(raw json.RawMessage, room id.RoomID) *event.Event {
	var evt event.Event
	if json.Unmarshal(raw, &evt) != nil || evt.Type.Type == "" {
		return nil
	}
	switch {
	case room == "":
		evt.Type.Class = event.ToDeviceEventType
	case evt.StateKey != nil:
		evt.RoomID, evt.Type.Class = room, event.StateEventType
	default:
		evt.RoomID, evt.Type.Class = room, event.MessageEventType
	}
	if err := evt.Content.ParseRaw(evt.Type); err != nil && !errors.Is(err, event.ErrUnsupportedContentType) {
		return nil
	}
	return &evt
}

// roomEncrypted reports whether room has m.room.encryption. The state
// store learns it from the sync, which may not have shown a room just
// joined or created yet: a room whose state was never fetched is asked
// for once (GET /state), so that nothing goes out in the clear into an
// encrypted room because the sync lagged.
func (e *e2ee) roomEncrypted(ctx context.Context, room id.RoomID) bool {
	enc, err := e.state.IsEncrypted(ctx, room)
	if err == nil && !enc {
		err = e.fetchState(ctx, room)
		if err == nil {
			enc, err = e.state.IsEncrypted(ctx, room)
		}
	}
	if err != nil {
		e.s.log.Error("find out whether a room is encrypted", "room_id", room, "err", err)
		// Unknown is treated as encrypted: the door then refuses
		// plaintext commands, and senders encrypt (or fail).
		return true
	}
	return enc
}

// fetchState fills the state store with room's current state (members,
// encryption) unless that was done before; the sync keeps it current
// after.
func (e *e2ee) fetchState(ctx context.Context, room id.RoomID) error {
	fetched, err := e.state.HasFetchedMembers(ctx, room)
	if err != nil || fetched {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	if _, err := e.cli.State(rctx, room); err != nil {
		return fmt.Errorf("fetch state of %s: %w", room, err)
	}
	return e.state.MarkMembersFetched(ctx, room)
}

// decryptTimeline decrypts one m.room.encrypted timeline event. ok is
// false if it did not decrypt: it then waits for its key (no session yet)
// or is given up (any other error), logged either way.
func (e *e2ee) decryptTimeline(ctx context.Context, room id.RoomID, raw json.RawMessage, se syncEvent) (callengine.RoomEvent, bool) {
	evt := parseEvent(raw, room)
	if evt == nil {
		e.fail(se, room, "", "undecodable m.room.encrypted event")
		return callengine.RoomEvent{}, false
	}
	return e.decrypt(ctx, evt, se, nil)
}

func (e *e2ee) decrypt(ctx context.Context, evt *event.Event, se syncEvent, w *waitingEvent) (callengine.RoomEvent, bool) {
	content, _ := evt.Content.Parsed.(*event.EncryptedEventContent)
	if content == nil {
		e.fail(se, evt.RoomID, "", "m.room.encrypted without encrypted content")
		return callengine.RoomEvent{}, false
	}
	dec, err := e.mach.DecryptMegolmEvent(ctx, evt)
	if errors.Is(err, crypto.ErrNoSessionFound) {
		if w == nil {
			e.wait(evt, se)
		}
		return callengine.RoomEvent{}, false
	}
	if err != nil {
		e.fail(se, evt.RoomID, string(content.SessionID), err.Error())
		return callengine.RoomEvent{}, false
	}
	body := dec.Content.VeryRaw
	if len(body) == 0 {
		body, _ = json.Marshal(dec.Content.Raw)
	}
	se.Type, se.Content = dec.Type.Type, body
	ev := se.roomEvent(evt.RoomID)
	ev.Seal = sealOf(dec)
	return ev, true
}

// sealOf maps mautrix's trust state of a decrypted event onto the door's
// three ranks (callengine.Trust).
func sealOf(dec *event.Event) callengine.Seal {
	seal := callengine.Seal{RoomEncrypted: true, Encrypted: true}
	if src := dec.Mautrix.TrustSource; src != nil && src.UserID == dec.Sender {
		seal.Device = string(src.DeviceID)
	}
	if dec.Mautrix.ForwardedKeys || seal.Device == "" {
		return seal
	}
	switch dec.Mautrix.TrustState {
	case id.TrustStateCrossSignedTOFU, id.TrustStateCrossSignedVerified, id.TrustStateVerified:
		seal.Trust = callengine.TrustCrossSigned
	case id.TrustStateUnset, id.TrustStateCrossSignedUntrusted:
		seal.Trust = callengine.TrustDevice
	}
	return seal
}

// wait keeps an event whose room key has not arrived, to be retried after
// each sync (retryWaiting).
func (e *e2ee) wait(evt *event.Event, se syncEvent) {
	content := evt.Content.AsEncrypted()
	e.s.log.Info("encrypted event without its room key yet, waiting for it",
		"room_id", evt.RoomID, "sender", evt.Sender, "event_id", evt.ID, "session_id", content.SessionID)
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, w := range e.waiting {
		if w.evt.ID == evt.ID {
			return // the same event again (a sync that repeated it)
		}
	}
	if len(e.waiting) >= maxWaiting {
		old := e.waiting[0]
		e.waiting = e.waiting[1:]
		e.failLocked(old.raw, old.evt.RoomID, string(old.evt.Content.AsEncrypted().SessionID), "dropped: too many events waiting for keys")
	}
	e.waiting = append(e.waiting, &waitingEvent{evt: evt, raw: se, since: e.s.now()})
	e.refreshWaitingLocked()
}

// retryWaiting tries the waiting events again (after a sync that may have
// brought their keys), asks the senders' devices for keys that are late,
// and gives up on those that waited keyWaitLimit. It returns the events
// that decrypted, in arrival order.
func (e *e2ee) retryWaiting(ctx context.Context) []callengine.RoomEvent {
	e.mu.Lock()
	pending := e.waiting
	e.waiting = nil
	e.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	now := e.s.now()
	var out []callengine.RoomEvent
	var keep []*waitingEvent
	for _, w := range pending {
		if ev, ok := e.decrypt(ctx, w.evt, w.raw, w); ok {
			e.s.log.Info("decrypted an event once its room key arrived", "room_id", w.evt.RoomID, "event_id", w.evt.ID,
				"waited_ms", now.Sub(w.since).Milliseconds())
			out = append(out, ev)
			continue
		}
		content := w.evt.Content.AsEncrypted()
		switch {
		case now.Sub(w.since) >= e.waitLimit:
			e.fail(w.raw, w.evt.RoomID, string(content.SessionID), fmt.Sprintf("no room key within %s", e.waitLimit))
			continue
		case !w.requested && now.Sub(w.since) >= e.requestAfter:
			w.requested = true
			rctx, cancel := context.WithTimeout(ctx, requestTimeout)
			err := e.mach.SendRoomKeyRequest(rctx, w.evt.RoomID, content.SenderKey, content.SessionID, "",
				map[id.UserID][]id.DeviceID{w.evt.Sender: {"*"}})
			cancel()
			if err != nil {
				e.s.log.Warn("ask for a missing room key", "room_id", w.evt.RoomID, "sender", w.evt.Sender, "session_id", content.SessionID, "err", err)
			} else {
				e.s.log.Info("asked the sender's devices for a missing room key", "room_id", w.evt.RoomID, "sender", w.evt.Sender, "session_id", content.SessionID)
			}
		}
		keep = append(keep, w)
	}
	e.mu.Lock()
	e.waiting = append(keep, e.waiting...)
	e.refreshWaitingLocked()
	e.mu.Unlock()
	return out
}

// nextRetry is how long until a waiting event needs attention without a
// sync bringing anything (a key request or giving up); 0 if none waits.
func (e *e2ee) nextRetry() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.waiting) == 0 {
		return 0
	}
	now := e.s.now()
	next := e.waitLimit
	for _, w := range e.waiting {
		at := e.waitLimit - now.Sub(w.since)
		if !w.requested {
			at = e.requestAfter - now.Sub(w.since)
		}
		next = min(next, max(at, 10*time.Millisecond))
	}
	return next
}

func (e *e2ee) fail(se syncEvent, room id.RoomID, session, reason string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failLocked(se, room, session, reason)
}

func (e *e2ee) failLocked(se syncEvent, room id.RoomID, session, reason string) {
	e.s.log.Warn("undecryptable event ignored", "room_id", room, "sender", se.Sender, "event_id", se.ID, "session_id", session, "reason", reason)
	e.status.Undecryptable++
	e.status.LastFailure = &WaitingKey{Room: string(room), Sender: se.Sender, EventID: se.ID, SessionID: session, Since: e.s.now(), Reason: reason}
}

func (e *e2ee) refreshWaitingLocked() {
	e.status.Waiting = e.status.Waiting[:0]
	for _, w := range e.waiting {
		e.status.Waiting = append(e.status.Waiting, WaitingKey{
			Room: string(w.evt.RoomID), Sender: string(w.evt.Sender), EventID: string(w.evt.ID),
			SessionID: string(w.evt.Content.AsEncrypted().SessionID), Since: w.since, Reason: "waiting for the room key",
		})
	}
}

func (e *e2ee) statusCopy() CryptoStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.status
	st.Waiting = append([]WaitingKey(nil), e.status.Waiting...)
	if st.LastFailure != nil {
		f := *st.LastFailure
		st.LastFailure = &f
	}
	return st
}

// seal encrypts content for room if the room is encrypted, sharing the
// room's Megolm session with its members' devices first if that has not
// happened (prepare does it ahead of time). It returns the type and
// content to send.
func (e *e2ee) seal(ctx context.Context, room id.RoomID, eventType string, body json.RawMessage) (event.Type, any, error) {
	typ := event.Type{Type: eventType, Class: event.MessageEventType}
	if !e.roomEncrypted(ctx, room) {
		return typ, body, nil
	}
	enc, err := e.mach.EncryptMegolmEvent(ctx, room, typ, body)
	if crypto.IsShareError(err) {
		if err = e.share(ctx, room); err != nil {
			return typ, nil, err
		}
		enc, err = e.mach.EncryptMegolmEvent(ctx, room, typ, body)
	}
	if err != nil {
		return typ, nil, fmt.Errorf("encrypt %s for %s: %w", eventType, room, err)
	}
	return event.EventEncrypted, enc, nil
}

// share makes sure room has an outbound Megolm session that every member's
// devices (as ShareWith chooses) have the key of. The members are fetched
// from the homeserver once per room; the sync keeps them current after.
func (e *e2ee) share(ctx context.Context, room id.RoomID) error {
	if err := e.fetchState(ctx, room); err != nil {
		return fmt.Errorf("share room key of %s: %w", room, err)
	}
	users, err := e.state.GetRoomJoinedOrInvitedMembers(ctx, room)
	if err != nil {
		return fmt.Errorf("share room key of %s: %w", room, err)
	}
	if err := e.mach.ShareGroupSession(ctx, room, users); err != nil {
		return fmt.Errorf("share room key of %s: %w", room, err)
	}
	return nil
}

// prepare shares room's Megolm session ahead of a send if the room is
// encrypted and has no usable one, so that a press costs one encryption,
// not a round of key claims and to-device messages.
func (e *e2ee) prepare(ctx context.Context, room id.RoomID) error {
	if !e.roomEncrypted(ctx, room) {
		return nil
	}
	sess, err := e.store.GetOutboundGroupSession(ctx, room)
	if err != nil {
		return fmt.Errorf("prepare room key of %s: %w", room, err)
	}
	if sess != nil && sess.Shared && !sess.Expired() {
		return nil
	}
	return e.share(ctx, room)
}

// sealToDevices encrypts content with Olm for each device in to, in one
// go (mautrix claims the missing one-time keys in one request). A device
// with no Olm session to be had is left out of the request and named in
// missing; only when no device is left is it an error. Sending is the
// caller's, so that a retry can send the same ciphertext under the same
// transaction ID.
func (e *e2ee) sealToDevices(ctx context.Context, eventType string, to map[id.UserID][]id.DeviceID, body json.RawMessage) (req *mautrix.ReqSendToDevice, missing, err error) {
	var content event.Content
	if err := json.Unmarshal(body, &content); err != nil {
		return nil, nil, fmt.Errorf("encrypt %s: %w", eventType, err)
	}
	want := &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{}}
	for user, devices := range to {
		want.Messages[user] = map[id.DeviceID]*event.Content{}
		for _, d := range devices {
			want.Messages[user][d] = &content
		}
	}
	req, err = e.mach.EncryptToDevices(ctx, event.Type{Type: eventType, Class: event.ToDeviceEventType}, want)
	if err != nil {
		return nil, nil, fmt.Errorf("encrypt %s for %s: %w", eventType, devicesOf(to), err)
	}
	lost := map[id.UserID][]id.DeviceID{}
	sealed := 0
	for user, devices := range to {
		for _, d := range devices {
			if req.Messages[user][d] == nil {
				lost[user] = append(lost[user], d)
			} else {
				sealed++
			}
		}
	}
	if len(lost) > 0 {
		missing = fmt.Errorf("encrypt %s for %s: no Olm session with the device (no one-time key to claim)", eventType, devicesOf(lost))
	}
	if sealed == 0 {
		return nil, nil, missing
	}
	return req, missing, nil
}

// trustedEnough applies matrix.share_keys to a device that is to get a
// secret outside Megolm (a MatrixRTC media key, which shows the camera):
// with cross_signed, only devices cross-signed by their user, as for room
// keys. A device the homeserver has no keys for (logged out, or never
// was) fails here, so that it cannot fail a send to the others: mautrix
// encrypts a batch of to-device events all or nothing.
func (e *e2ee) trustedEnough(ctx context.Context, user id.UserID, device id.DeviceID) error {
	d, err := e.mach.GetOrFetchDevice(ctx, user, device)
	if err != nil {
		return fmt.Errorf("device %s/%s: %w", user, device, err)
	}
	if min := e.mach.SendKeysMinTrust; min > id.TrustStateUnset {
		if got := e.mach.ResolveTrust(d); got < min {
			return fmt.Errorf("device %s/%s is %s, matrix.share_keys wants %s", user, device, got, min)
		}
	}
	return nil
}

// PrepareEncryption shares the Megolm session of each encrypted room
// among rooms with its members' devices ahead of the first send, so that a
// press costs one encryption (microseconds) instead of claiming one-time
// keys and sending room keys (round trips to the homeserver). Rooms in the
// clear and a session without encryption are left alone. It is cheap when
// the rooms are prepared already; the daemon calls it at start, and the
// sync loop after changes of members or devices (warm).
func (s *Session) PrepareEncryption(ctx context.Context, rooms ...callengine.RoomID) error {
	e := s.crypt.Load()
	if e == nil {
		return nil
	}
	var errs []error
	for _, r := range rooms {
		e.mu.Lock()
		e.prepared[id.RoomID(r)] = true
		e.mu.Unlock()
		if err := e.prepare(ctx, id.RoomID(r)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// kick tells the warmer that a sync happened: members may have come or
// gone, devices changed (mautrix then drops the room's outbound session),
// or the session may have reached its rotation.
func (e *e2ee) kick() {
	select {
	case e.warm <- struct{}{}:
	default:
	}
}

// warmLoop keeps the prepared rooms' Megolm sessions shared, after each
// sync, off the sync goroutine: a rotated or dropped session is shared
// again before the next press needs it, not during it. Checking a room
// whose session is fine costs one read of the store. It returns when ctx
// ends; Run owns it.
func (e *e2ee) warmLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.warm:
		}
		e.mu.Lock()
		rooms := slices.Collect(maps.Keys(e.prepared))
		e.mu.Unlock()
		for _, r := range rooms {
			if err := e.prepare(ctx, r); err != nil && ctx.Err() == nil {
				e.s.log.Warn("share a room key ahead", "room_id", r, "err", err)
			}
		}
	}
}
