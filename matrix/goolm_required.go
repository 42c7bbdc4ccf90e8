//go:build !goolm

package matrix

// The intercom's end-to-end encryption is mautrix's pure-Go Olm (goolm),
// chosen so that no libolm is needed on the board. Without the build tag
// mautrix's crypto wants libolm's C headers; this file turns that into
// one clear message instead. Build and test with -tags goolm (the
// Makefile exports GOFLAGS=-tags=goolm).
var _ = buildWithTagGoolm // undefined on purpose: build with -tags goolm
