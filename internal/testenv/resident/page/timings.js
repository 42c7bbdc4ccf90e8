// videoTimings picks the cumulative receive-side timings of a video
// inbound-rtp (W3C webrtc-stats, seconds): the jitter buffer's delay over
// the frames it emitted, decoding, and first packet → decoded per frame;
// a glass-to-glass figure is split with their differences over a call.
export function videoTimings(r) {
  return {
    jitterBufferDelay: (r && r.jitterBufferDelay) || 0,
    jitterBufferEmittedCount: (r && r.jitterBufferEmittedCount) || 0,
    totalDecodeTime: (r && r.totalDecodeTime) || 0,
    totalProcessingDelay: (r && r.totalProcessingDelay) || 0,
  };
}
