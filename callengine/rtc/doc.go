// Package rtc rings residents through MatrixRTC, the call model of Element
// X and Element Call (matrix-voip.md §4.2, §4.7, §5): the intercom joins
// the room-wide call of each resident room by publishing its per-device
// org.matrix.msc3401.call.member state event, rings with an
// org.matrix.msc4075.rtc.notification, and publishes its camera and
// microphone to a LiveKit SFU. A resident answers by joining the call.
//
// Like callengine and callengine/group, the machine is pure: Machine.Step
// takes events (the bell, Matrix state seen in sync, SFU presence, timers)
// and returns effects (state events to send, SFU rooms to join or leave,
// timers) that the Runner (runner.go) executes against a Transport (the
// Matrix session) and an SFU (the daemon's LiveKit join), both
// interfaces. The package imports neither mautrix nor pion nor LiveKit, so
// every rule is tested with a fake clock and the runner without a network.
package rtc
