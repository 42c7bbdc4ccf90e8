// A C face for WebRTC's AudioProcessing (the C++ API of
// webrtc-audio-processing 0.3), so that cgo can call it.
#ifndef INTERCOM_AEC_WEBRTC_SHIM_H
#define INTERCOM_AEC_WEBRTC_SHIM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct intercom_apm intercom_apm;

// intercom_apm_new builds a processor for mono 16-bit frames of 10 ms at
// rate Hz. aec, ns, agc, hpf switch the stages on (non-zero) or off;
// aec_level is EchoCancellation::SuppressionLevel (0 low, 1 moderate,
// 2 high); delay_agnostic lets the canceller find the delay itself. It
// returns NULL and sets *err to AudioProcessing's error code on failure.
intercom_apm *intercom_apm_new(int rate, int aec, int ns, int agc, int hpf, int aec_level, int delay_agnostic, int *err);
// intercom_apm_far hands one 10 ms frame of what the speaker plays.
int intercom_apm_far(intercom_apm *a, const int16_t *pcm, int samples);
// intercom_apm_near cleans one 10 ms microphone frame in place; delay_ms
// is the playout-to-capture delay hint.
int intercom_apm_near(intercom_apm *a, int16_t *pcm, int samples, int delay_ms);
void intercom_apm_free(intercom_apm *a);

#ifdef __cplusplus
}
#endif

#endif
