package rtc

import "crypto/rand"

// randomKey is a fresh media key of MediaKeyBytes random bytes, as
// js-sdk's generateRandomKey makes.
func randomKey() []byte {
	k := make([]byte, MediaKeyBytes)
	_, _ = rand.Read(k) // crypto/rand.Read never fails (Go ≥ 1.24)
	return k
}
