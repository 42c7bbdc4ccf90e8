package livekit

import "errors"

// ErrExited is returned (wrapped) by Stop when the livekit-server process
// had already exited by itself, i.e. it crashed during the test.
var ErrExited = errors.New("livekit: process exited unexpectedly")

// errAddrInUse marks a start that failed because a port was taken.
var errAddrInUse = errors.New("address already in use")
