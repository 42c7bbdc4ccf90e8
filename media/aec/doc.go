// Package aec is the door's acoustic echo cancellation, noise suppression,
// gain control and high-pass on the microphone path (issue 16). The door's
// microphone and loudspeaker sit centimetres apart; without it a resident
// hears their own voice come back from the door.
//
// It binds, through cgo confined to this package as the codecs are in
// media/codec, both libraries Debian 12 and Buildroot ship: WebRTC's
// AudioProcessing (webrtc-audio-processing 0.3, C++, through the small
// shim in webrtc_shim.cc) and speexdsp 1.2.1 (the MDF canceller and
// speex_preprocess). Both sit behind one Processor so the echo tests and
// benchmarks compare them on the same signals.
//
// CHOICE: filled in from the measurements below.
package aec
