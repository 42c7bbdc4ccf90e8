package rtc

import "sync"

// CallKeys carries one encrypted room's media keys from the runner to that
// room's SFU connection, which encrypts the door's frames with the
// intercom's current key and decrypts each participant's frames with
// theirs. The runner writes, the connection watches; safe for concurrent
// use.
type CallKeys struct {
	mu      sync.Mutex
	updates []KeyUpdate // every update so far, replayed to a new watcher
	watch   []func(KeyUpdate)
}

// KeyUpdate is one key: the intercom's own to use from now on (Own), or a
// participant's, by LiveKit identity, for frames that name Index.
type KeyUpdate struct {
	Own      bool
	Identity string
	Index    uint8
	Key      []byte
}

// maxKeyUpdates bounds the replay log: far more than a call's rotations.
const maxKeyUpdates = 1024

// Add gives one more key (the runner does, as the machine hands keys out).
func (k *CallKeys) Add(u KeyUpdate) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.updates) == maxKeyUpdates {
		k.updates = k.updates[1:]
	}
	k.updates = append(k.updates, u)
	for _, fn := range k.watch {
		fn(u)
	}
}

// Watch calls fn with every key given so far, in order, and then with
// each new one. fn runs with the keys locked and must not block or call
// back into k.
func (k *CallKeys) Watch(fn func(KeyUpdate)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, u := range k.updates {
		fn(u)
	}
	k.watch = append(k.watch, fn)
}
