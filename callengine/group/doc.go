// Package group is the household group call: the intercom as one member of
// the household room's famedly-style mesh call (../shared/matrix-voip.md
// §4.4, §4.5, §4.7, §6). It holds the event shapes (com.famedly.call.member
// membership, the MSC4075 ring notification, to-device call signalling in
// both the com.famedly.call.member.* and the m.call.* families), their
// validating decoders, the per-call seq reordering and the household call
// state machine.
//
// Like package callengine the machine is pure: no I/O, no goroutines, no
// clock reads. Machine.Step takes the time as an argument and returns
// effects that the Runner (runner.go) executes against a Transport (the
// Matrix session) and a callengine.PeerFactory, both interfaces, so the
// runner too is tested without a network.
package group
