//go:build !noaecwebrtc

// The C++ half of the binding to webrtc-audio-processing 0.3; see
// webrtc_shim.h. Kept as thin as possible: configuration at creation, one
// call per 10 ms frame in each direction.
#include "webrtc_shim.h"

#include <string.h>

#include "webrtc/common.h"
#include "webrtc/modules/audio_processing/include/audio_processing.h"
#include "webrtc/modules/interface/module_common_types.h"

struct intercom_apm {
	webrtc::AudioProcessing *apm;
	int rate;
	int aec;
	webrtc::AudioFrame far;
	webrtc::AudioFrame near;
};

static void fill(webrtc::AudioFrame *f, int rate, const int16_t *pcm, int samples) {
	f->sample_rate_hz_ = rate;
	f->num_channels_ = 1;
	f->samples_per_channel_ = samples;
	memcpy(f->data_, pcm, samples * sizeof(int16_t));
}

extern "C" intercom_apm *intercom_apm_new(int rate, int aec, int ns, int agc, int hpf, int aec_level, int delay_agnostic, int *err) {
	webrtc::Config cfg;
	// The extended filter covers a longer echo tail and copes better with
	// delay jumps (a resampled path, a USB sound card) than the default.
	cfg.Set<webrtc::ExtendedFilter>(new webrtc::ExtendedFilter(true));
	cfg.Set<webrtc::DelayAgnostic>(new webrtc::DelayAgnostic(delay_agnostic != 0));
	// The experimental AGC drives an analog microphone volume the door
	// does not expose; the digital AGC below is the one we want.
	cfg.Set<webrtc::ExperimentalAgc>(new webrtc::ExperimentalAgc(false));
	webrtc::AudioProcessing *apm = webrtc::AudioProcessing::Create(cfg);
	if (apm == NULL) {
		*err = webrtc::AudioProcessing::kCreationFailedError;
		return NULL;
	}
	int rc = apm->Initialize(rate, rate, rate, webrtc::AudioProcessing::kMono,
	                         webrtc::AudioProcessing::kMono, webrtc::AudioProcessing::kMono);
	if (rc == 0) rc = apm->high_pass_filter()->Enable(hpf != 0);
	if (rc == 0 && aec) {
		webrtc::EchoCancellation::SuppressionLevel lvl = webrtc::EchoCancellation::kModerateSuppression;
		if (aec_level == 0) lvl = webrtc::EchoCancellation::kLowSuppression;
		if (aec_level == 2) lvl = webrtc::EchoCancellation::kHighSuppression;
		rc = apm->echo_cancellation()->set_suppression_level(lvl);
		if (rc == 0) rc = apm->echo_cancellation()->enable_drift_compensation(false);
		if (rc == 0) rc = apm->echo_cancellation()->Enable(true);
	}
	if (rc == 0 && ns) {
		rc = apm->noise_suppression()->set_level(webrtc::NoiseSuppression::kModerate);
		if (rc == 0) rc = apm->noise_suppression()->Enable(true);
	}
	if (rc == 0 && agc) {
		webrtc::GainControl *g = apm->gain_control();
		rc = g->set_mode(webrtc::GainControl::kAdaptiveDigital);
		if (rc == 0) rc = g->set_target_level_dbfs(3);
		if (rc == 0) rc = g->set_compression_gain_db(9);
		if (rc == 0) rc = g->enable_limiter(true);
		if (rc == 0) rc = g->Enable(true);
	}
	if (rc != 0) {
		delete apm;
		*err = rc;
		return NULL;
	}
	intercom_apm *a = new intercom_apm;
	a->apm = apm;
	a->rate = rate;
	a->aec = aec;
	*err = 0;
	return a;
}

extern "C" int intercom_apm_far(intercom_apm *a, const int16_t *pcm, int samples) {
	fill(&a->far, a->rate, pcm, samples);
	return a->apm->ProcessReverseStream(&a->far);
}

extern "C" int intercom_apm_near(intercom_apm *a, int16_t *pcm, int samples, int delay_ms) {
	fill(&a->near, a->rate, pcm, samples);
	if (a->aec) {
		// Out-of-range hints are clamped by the library and reported as
		// a warning (kBadStreamParameterWarning), which is not an error here.
		a->apm->set_stream_delay_ms(delay_ms);
	}
	int rc = a->apm->ProcessStream(&a->near);
	if (rc == webrtc::AudioProcessing::kBadStreamParameterWarning) rc = 0;
	memcpy(pcm, a->near.data_, samples * sizeof(int16_t));
	return rc;
}

extern "C" void intercom_apm_free(intercom_apm *a) {
	if (a == NULL) return;
	delete a->apm;
	delete a;
}
