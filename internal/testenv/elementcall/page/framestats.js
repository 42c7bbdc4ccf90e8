// framestats.js is injected by the driver into every frame of the page
// before the frame's own scripts run (Playwright's addInitScript reaches
// iframes too), so that it sees the peer connections Element Call's
// livekit-client makes inside its iframe without any change to Element
// Call. It reports, through the driver's exposed ecEmit:
//   frameFirst  the first decoded remote video frame of the frame's peer
//               connections (W3C webrtc-stats inbound-rtp framesDecoded
//               turning non-zero), with its size and codec, and when that
//               peer connection got its remote video track (trackTs) and
//               became connected (connectedTs): from the later of the two
//               on, only the sender's key frame, the SFU and the decoder
//               stand between the call and its first frame;
//   frameStats  every ~250 ms while a peer connection lives: decoded video
//               frames, remote audio energy and packets, and what the frame
//               sends (outbound-rtp).
// Before the first frame it samples every 20 ms, so that the first frame is
// timed to within that.
(() => {
  const Orig = window.RTCPeerConnection;
  if (typeof Orig !== "function" || Orig.__framestats) return;
  const FIRST_POLL_MS = 20;
  const POLL_MS = 250;
  const pcs = new Set();
  let firstSeen = false;
  let timer = null;
  let lastStats = 0;

  const emit = (name, fields) => {
    const ev = JSON.stringify({ event: name, ts: Date.now(), origin: location.origin, ...fields });
    if (typeof window.ecEmit === "function") window.ecEmit(ev).catch(() => {});
  };

  // When each peer connection got its first remote video track and became
  // connected (this frame's clock).
  const trackTs = new WeakMap();
  const connectedTs = new WeakMap();

  class PeerConnection extends Orig {
    constructor(...args) {
      super(...args);
      pcs.add(this);
      this.addEventListener("connectionstatechange", () => {
        if (this.connectionState === "connected" && !connectedTs.has(this)) connectedTs.set(this, Date.now());
        if (this.connectionState === "closed") pcs.delete(this);
      });
      this.addEventListener("track", (ev) => {
        if (ev.track.kind === "video" && !trackTs.has(this)) trackTs.set(this, Date.now());
      });
      schedule();
    }
  }
  PeerConnection.__framestats = true;
  window.RTCPeerConnection = PeerConnection;
  if (window.webkitRTCPeerConnection) window.webkitRTCPeerConnection = PeerConnection;

  function schedule() {
    if (timer === null) timer = setTimeout(poll, firstSeen ? POLL_MS : FIRST_POLL_MS);
  }

  async function poll() {
    timer = null;
    const live = [...pcs].filter((pc) => pc.connectionState !== "closed");
    const s = {
      peerConnections: live.length,
      framesDecoded: 0,
      frameWidth: 0,
      frameHeight: 0,
      videoCodec: "",
      videoPacketsReceived: 0,
      totalAudioEnergy: 0,
      audioPacketsReceived: 0,
      audioCodec: "",
      audioBytesSent: 0,
      audioPacketsSent: 0,
      videoFramesSent: 0,
    };
    let firstPc = null;
    for (const pc of live) {
      // The state change event may still be queued behind this poll.
      if (pc.connectionState === "connected" && !connectedTs.has(pc)) connectedTs.set(pc, Date.now());
      let report;
      try {
        report = await pc.getStats();
      } catch {
        continue;
      }
      const codec = (id) => {
        const c = id && report.get(id);
        return c ? c.mimeType : "";
      };
      report.forEach((r) => {
        if (r.type === "inbound-rtp" && r.kind === "video") {
          s.videoPacketsReceived += r.packetsReceived || 0;
          if ((r.framesDecoded || 0) > s.framesDecoded) {
            firstPc = pc;
            s.framesDecoded = r.framesDecoded || 0;
            s.frameWidth = r.frameWidth || 0;
            s.frameHeight = r.frameHeight || 0;
            s.videoCodec = codec(r.codecId);
          }
        } else if (r.type === "inbound-rtp" && r.kind === "audio") {
          s.totalAudioEnergy += r.totalAudioEnergy || 0;
          s.audioPacketsReceived += r.packetsReceived || 0;
          if (!s.audioCodec) s.audioCodec = codec(r.codecId);
        } else if (r.type === "outbound-rtp" && r.kind === "audio") {
          s.audioBytesSent += r.bytesSent || 0;
          s.audioPacketsSent += r.packetsSent || 0;
        } else if (r.type === "outbound-rtp" && r.kind === "video") {
          s.videoFramesSent += r.framesSent || 0;
        }
      });
    }
    if (!firstSeen && s.framesDecoded > 0) {
      firstSeen = true;
      emit("frameFirst", {
        width: s.frameWidth,
        height: s.frameHeight,
        codec: s.videoCodec,
        trackTs: trackTs.get(firstPc) || 0,
        connectedTs: connectedTs.get(firstPc) || 0,
      });
    }
    const now = Date.now();
    if (live.length > 0 && now - lastStats >= POLL_MS - 5) {
      lastStats = now;
      emit("frameStats", s);
    }
    if (live.length > 0 || pcs.size > 0) schedule();
  }
})();
