// Package callengine implements Matrix VoIP calls (Matrix client-server spec,
// "Voice over IP" module, protocol version "1"; MSC2746 and MSC3077) for the
// intercom.
//
// The package is pure protocol logic: it imports neither pion, mautrix nor
// periph. Signalling reaches it through Transport, media through Peer, and
// its call state lives in a Machine that never performs I/O. The Engine runs
// one Machine on one goroutine and executes the machine's effects.
package callengine
