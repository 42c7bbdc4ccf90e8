// Package media produces the door's audio and video and meters what comes
// back.
//
// Raw media comes from a VideoSource and an AudioSource (the synthetic
// TestPattern and Tone here; V4L2 and ALSA adapters later). A Stream encodes
// each codec once, whatever the number of viewers, and writes the encoded
// samples to one shared pion track per codec that every peer connection
// adds (encode once, fan out). Encoders run only while a peer uses their
// codec. Remote Opus audio is decoded and metered by an OpusReceiver feeding
// an AudioMeter and, later, a speaker through PCMSink.
//
// The codec implementations live in media/codec (cgo); the WebRTC peer
// connections in media/webrtc. Everything in this package builds with
// CGO_ENABLED=0.
package media
