// Package aec is the door's acoustic echo cancellation, noise suppression,
// gain control and high-pass on the microphone path (issue 16). The door's
// microphone and loudspeaker sit centimetres apart; without it a resident
// hears their own voice come back from the door.
//
// It binds, through cgo confined to this package as the codecs are in
// media/codec, the two libraries Debian 12 ships: speexdsp 1.2.1 (the MDF
// echo canceller, then speex_preprocess for noise, gain and the echo the
// filter leaves, then a high-pass of our own) and WebRTC's AudioProcessing
// from webrtc-audio-processing 0.3 (C++, through the small C shim in
// webrtc_shim.cc). Both sit behind one Processor taking 10 ms frames of
// 48 kHz mono (the door's 20 ms frames go in whole), so the echo tests and
// benchmarks compare them on the same signals.
//
// The door uses speexdsp (Default). Measured on a synthetic conversation
// (echo_test.go: speech-like far and near talkers, a room with a 180 ms
// reverberation at −6 dB, delays 20/60/120 ms, three seeds, medians):
//
//	                        speexdsp   webrtc 0.3
//	ERLE 2–8 s               26.4 dB     48.1 dB
//	ERLE 2–4 s               24.6 dB     46.8 dB
//	ERLE after double talk   58.3 dB     49.7 dB
//	visitor lost in
//	  double talk            0.25 dB     6.4 dB (2.9–9.5)
//	CPU per 10 ms frame      ~140 µs     ~85 µs   (x86 here, all stages)
//
// WebRTC 0.3 cancels more from the first seconds, but its nonlinear
// suppressor takes 3–10 dB off the visitor whenever both talk, in every
// call, against the 3 dB; speexdsp keeps the visitor whole and,
// once converged (about 10 s of the resident talking), removes more echo
// than WebRTC. Its slower start costs once: the Processor is meant to live
// as long as the sound card, not one call, so its filter stays converged
// from call to call (the door's echo path does not move). And speexdsp is
// the same 1.2.1 in Debian and in Buildroot, so what is measured here is
// what runs on the board, while Buildroot's webrtc-audio-processing is
// 1.3, whose C++ API this shim does not build against. Speex relies on
// the delay hint (Options.Delay, SetDelay: the sound card's reported
// playback plus capture delay): its filter spans the hint −10 ms to
// +160 ms, so a hint more than 10 ms too long misses the direct echo and
// one too short loses the late reverberation (TestSpeexFollowsDelay: a
// hint 80 ms short still gives 38 dB, a followed one 48 dB). WebRTC can
// estimate the delay itself (Options.DelayAgnostic).
package aec
