// Package runloop is the kit every event loop of the intercom is built
// from, so that the concepts they share are written, reviewed and tested
// once (issue 13):
//
//   - [Queue]: the loop's inputs. Library callbacks, timers and other
//     goroutines only push; the loop's own goroutine takes.
//   - [Sender]: ordered work (Matrix sends) run by one goroutine, flushed
//     at shutdown.
//   - [Timers]: the loop's timer table, on an injectable clock.
//   - [Latest]: the latest value of something (a status) for any number of
//     readers, none of which can hold the publisher up.
//   - [Backoff], [Retry], [Sleep]: waiting between attempts.
//   - [Group]: goroutines that have an owner who waits for them.
//
// The package uses the standard library only: the pure call engines
// (callengine and below) import it, and they must stay free of network
// and hardware libraries (callengine/deps_test.go).
//
// There is deliberately no bounded queue: a loop's inputs are state
// machine events (a hangup, a timer, an answer) that must not be dropped,
// and their producers are library callbacks that must not block. What
// arrives at a door is bounded by people and peers, so the queues stay
// short. A stream that may lose items under load, such as the events
// pushed to web clients, is a different thing with its own drop policy
// (device's broadcaster).
package runloop
