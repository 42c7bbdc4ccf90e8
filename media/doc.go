// Package media produces the door's audio and video and meters what comes
// back.
//
// Raw media comes from a VideoSource and an AudioSource (the synthetic
// TestPattern and Tone here; the camera in media/v4l2, the microphone in
// media/alsa). A camera that encodes H.264 itself delivers Frame.H264,
// which the Stream passes through without an encoder. A Stream encodes
// each codec once, whatever the number of viewers, and writes the encoded
// samples to one shared pion track per codec that every peer connection
// adds (encode once, fan out). Encoders run only while a peer uses their
// codec. Remote Opus audio is decoded and metered by an OpusReceiver feeding
// an AudioMeter and one input of a Mixer (media/alsa's Speaker): each
// input is a bounded Playout buffer, and the Mixer sums them. The levels
// senders write into their packets (RFC 6464) decide which streams are
// worth decoding at all: not the silent ones, and at most MaxVoices.
//
// The codec implementations live in media/codec (cgo); the WebRTC peer
// connections in media/webrtc. Everything in this package builds with
// CGO_ENABLED=0.
package media
