package device

import "errors"

// ErrOpenAPI is returned by Guard for an API that would listen beyond
// loopback without a token: anyone on the network could ring, hang up
// calls and watch the camera.
var ErrOpenAPI = errors.New("device: local API reachable from other machines without a token")

// ErrRelayBusy is returned by Door.TestPulse while a pulse is under way or
// waiting.
var ErrRelayBusy = errors.New("device: door relay busy")
