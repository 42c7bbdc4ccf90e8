// Loopback-only ICE for tests.
//
// Chromium gathers host candidates on every interface of the machine. The
// end-to-end tests run the homeserver, the intercom and this page on one host
// and must not depend on (or leak onto) the machine's other networks, so when
// the page runs with loopback=1 it replaces window.RTCPeerConnection with a
// subclass that hides every non-loopback candidate from matrix-js-sdk (local
// candidates it would send, and the candidate lines in the local description it
// copies into m.call.invite / m.call.answer) and ignores non-loopback remote
// candidates. Chromium only gathers loopback candidates at all when it runs
// with --allow-loopback-in-peer-connection.

// isLoopbackAddress reports whether a candidate's connection address is on the
// loopback network (127.0.0.0/8 or ::1).
export function isLoopbackAddress(addr) {
  if (!addr) return false;
  const a = addr.replace(/^\[|\]$/g, "").toLowerCase();
  return a.startsWith("127.") || a === "::1" || a === "0:0:0:0:0:0:0:1" || a === "localhost";
}

// candidateAddress returns the connection address of an ICE candidate
// attribute value (RFC 8839 section 5.1: foundation, component, transport,
// priority, address, port, "typ", type, ...), with or without the "candidate:"
// or "a=candidate:" prefix.
export function candidateAddress(candidate) {
  const fields = candidate.replace(/^a=/, "").replace(/^candidate:/, "").trim().split(/\s+/);
  return fields.length >= 5 ? fields[4] : "";
}

export function isLoopbackCandidate(candidate) {
  return isLoopbackAddress(candidateAddress(candidate));
}

// filterSdp drops the a=candidate lines whose address is not loopback.
export function filterSdp(sdp) {
  if (!sdp) return sdp;
  return sdp
    .split("\r\n")
    .filter((line) => !line.startsWith("a=candidate:") || isLoopbackCandidate(line))
    .join("\r\n");
}

export function installLoopbackOnly(win) {
  const Native = win.RTCPeerConnection;
  if (!Native || Native.loopbackOnly) return;
  const NativeDescription = win.RTCSessionDescription;

  class LoopbackPeerConnection extends Native {
    #wrapped = new Map();

    addEventListener(type, listener, options) {
      if (type !== "icecandidate" || typeof listener !== "function") {
        return super.addEventListener(type, listener, options);
      }
      let w = this.#wrapped.get(listener);
      if (!w) {
        w = (ev) => {
          // A null candidate or an empty one is end-of-candidates: keep it.
          const c = ev.candidate && ev.candidate.candidate;
          if (!c || isLoopbackCandidate(c)) listener.call(this, ev);
        };
        this.#wrapped.set(listener, w);
      }
      return super.addEventListener(type, w, options);
    }

    removeEventListener(type, listener, options) {
      const w = type === "icecandidate" ? this.#wrapped.get(listener) : undefined;
      return super.removeEventListener(type, w || listener, options);
    }

    // livekit-client sets pc.onicecandidate rather than adding a listener:
    // route the handler property through the filtering addEventListener.
    #onIceCandidate = null;

    get onicecandidate() {
      return this.#onIceCandidate;
    }

    set onicecandidate(handler) {
      if (this.#onIceCandidate) this.removeEventListener("icecandidate", this.#onIceCandidate);
      this.#onIceCandidate = typeof handler === "function" ? handler : null;
      if (this.#onIceCandidate) this.addEventListener("icecandidate", this.#onIceCandidate);
    }

    get localDescription() {
      const d = super.localDescription;
      return d && new NativeDescription({ type: d.type, sdp: filterSdp(d.sdp) });
    }

    setRemoteDescription(desc, ...rest) {
      if (desc && desc.sdp) desc = { type: desc.type, sdp: filterSdp(desc.sdp) };
      return super.setRemoteDescription(desc, ...rest);
    }

    addIceCandidate(c, ...rest) {
      if (c && c.candidate && !isLoopbackCandidate(c.candidate)) return Promise.resolve();
      return super.addIceCandidate(c, ...rest);
    }
  }
  LoopbackPeerConnection.loopbackOnly = true;
  win.RTCPeerConnection = LoopbackPeerConnection;
}
