// The intercom's web page: log in with the API token, show the status
// document live, play the camera over WHEP, run the installer's tests.
// Plain JavaScript, no build step. Every state-changing request carries
// the session's CSRF token in X-CSRF-Token; the session cookie itself is
// HttpOnly and never seen here.
"use strict";

const $ = (id) => document.getElementById(id);
let csrf = "";
let events = null;

async function api(method, path, body, headers = {}) {
  const h = { ...headers };
  if (method !== "GET" && csrf) h["X-CSRF-Token"] = csrf;
  if (body !== undefined && !h["Content-Type"]) h["Content-Type"] = "application/json";
  return fetch(path, {
    method,
    headers: h,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    credentials: "same-origin",
  });
}

// --- login -------------------------------------------------------------

async function boot() {
  const resp = await api("GET", "/api/session");
  if (resp.status === 401) {
    $("login").hidden = false;
    $("token").focus();
    return;
  }
  if (!resp.ok) throw new Error(`session: ${resp.status}`);
  start(await resp.json());
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  const resp = await api("POST", "/api/login", { token: $("token").value });
  if (!resp.ok) {
    $("login-error").textContent = resp.status === 401 ? "Wrong token." : `Login failed (${resp.status}).`;
    return;
  }
  const s = await resp.json();
  $("token").value = "";
  start({ csrf: s.csrf, open: !!s.open, tests: true });
});

$("logout").addEventListener("click", async () => {
  await stopLive();
  await api("POST", "/api/logout");
  location.reload();
});

function start(session) {
  csrf = session.csrf || "";
  $("login").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = !!session.open;
  $("tests").hidden = !session.tests;
  connectEvents();
  refreshStatus();
  refreshHistory();
  // Events carry changes of the call's phase, presses and the relay; the
  // rest (last sync, viewers) is read again now and then.
  setInterval(refreshStatus, 5000);
  startLive();
}

// --- status ------------------------------------------------------------

function connectEvents() {
  if (events) events.close();
  events = new EventSource("/api/events");
  events.onopen = () => setConn("live", "ok");
  events.onerror = () => setConn("reconnecting…", "bad");
  events.addEventListener("status", (e) => render(JSON.parse(e.data).data));
  events.addEventListener("relay", (e) => {
    const ev = JSON.parse(e.data).data;
    showRelay(ev.on, ev.error);
    logEvent(ev.on ? "relay on" : "relay off" + (ev.error ? `: ${ev.error}` : ""));
  });
  for (const kind of ["press", "ring", "call", "door", "error"]) {
    events.addEventListener(kind, (e) => {
      const ev = JSON.parse(e.data);
      logEvent(`${kind} ${summary(ev.data)}`);
      refreshStatus();
      if (kind !== "door") refreshHistory();
    });
  }
}

function setConn(text, cls) {
  $("conn").textContent = text;
  $("conn").className = `badge ${cls}`;
}

async function refreshStatus() {
  const resp = await api("GET", "/api/status");
  if (resp.ok) render(await resp.json());
}

function summary(d) {
  if (!d || typeof d !== "object") return "";
  return Object.entries(d)
    .filter(([, v]) => v !== "" && v !== null && typeof v !== "object")
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
}

function logEvent(text) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $("events").prepend(li);
  while ($("events").children.length > 50) $("events").lastChild.remove();
}

const ago = (t) => (t ? `${Math.round((Date.now() - Date.parse(t)) / 1000)} s ago` : "never");

function setText(id, text, cls = "") {
  $(id).textContent = text;
  $(id).className = cls;
}

function showRelay(on, err) {
  setText("st-relay", on ? "ON (door open)" : err ? `off — ${err}` : "off", on ? "bad" : err ? "bad" : "");
}

function render(st) {
  if (!st) return;
  setText("st-state", `${st.state}${st.since ? ` since ${new Date(st.since).toLocaleTimeString()}` : ""}`);
  const m = st.matrix || {};
  const syncText = m.setup ? m.setup : m.syncing ? `syncing (last ${ago(m.last_sync)})` : `not syncing${m.last_error ? `: ${m.last_error}` : ""}`;
  setText("st-sync", syncText, m.syncing ? "ok" : "bad");
  setText("st-hs", m.homeserver ? m.homeserver + (m.homeserver_unreachable_since ? " — unreachable" : "") : "–");
  setText("st-user", m.user_id ? `${m.user_id} (${m.device_id})` : "–");
  const ul = $("st-residents");
  ul.replaceChildren();
  for (const r of m.residents || []) {
    const li = document.createElement("li");
    li.textContent = `${r.user_id} — ${(r.paths || []).join(", ")}${r.room_id ? "" : " (no room yet)"}`;
    ul.append(li);
  }
  const hh = m.household;
  setText("st-household", hh ? summary(hh) || "on" : "off");
  const rtc = m.matrixrtc;
  setText("st-rtc", rtc ? (rtc.transport ? summary(rtc.transport) : "on") : "off");
  const ringer = st.ringer || {};
  setText("st-ringer", ringer.ringing ? "ringing" : "quiet", ringer.ringing ? "bad" : "");
  showRelay(st.relay && st.relay.energised);
  setText("st-presses", `${st.presses || 0}${st.last_press ? `, last ${new Date(st.last_press).toLocaleTimeString()}` : ""}`);
  const w = (st.media && st.media.whep) || {};
  setText("st-viewers", `${w.viewers || 0} of ${w.max_viewers || "?"}`);
}

// The visitor history (/api/history, newest first): time, outcome, who
// answered where, the door, and the snapshot.
async function refreshHistory() {
  const resp = await api("GET", "/api/history");
  if (!resp.ok) return;
  const doc = await resp.json();
  const ol = $("visitors");
  ol.replaceChildren();
  for (const v of doc.visitors || []) {
    const li = document.createElement("li");
    if (v.snapshot_url) {
      const img = document.createElement("img");
      img.src = v.snapshot_url;
      img.alt = "visitor at " + new Date(v.rang_at).toLocaleString();
      img.loading = "lazy";
      li.append(img);
    }
    const text = document.createElement("span");
    let what = v.outcome;
    if (v.outcome === "answered") what = `answered by ${v.answered_by || "?"}${v.path ? ` (${v.path})` : ""}`;
    if (v.door_opened) what += `, door opened${v.door_opened_by ? ` by ${v.door_opened_by}` : ""}`;
    text.textContent = `${new Date(v.rang_at).toLocaleString()} — ${what}`;
    li.append(text);
    ol.append(li);
  }
  if (!ol.children.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "none yet";
    ol.append(li);
  }
}

// --- live view (WHEP, draft-ietf-wish-whep) ----------------------------

let pc = null;
let session = null; // the WHEP session's URL
let liveWanted = true;

async function startLive() {
  liveWanted = true;
  $("live-toggle").textContent = "Stop live view";
  $("live-state").textContent = "connecting…";
  const t0 = performance.now();
  pc = new RTCPeerConnection();
  const mine = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  const video = $("video");
  video.srcObject = stream;
  pc.ontrack = (e) => stream.addTrack(e.track);
  pc.onconnectionstatechange = () => {
    if (mine !== pc) return;
    $("live-state").textContent = pc.connectionState;
    if (pc.connectionState === "failed" && liveWanted) {
      stopLive().then(() => setTimeout(() => liveWanted && startLive(), 3000));
    }
  };
  await pc.setLocalDescription(await pc.createOffer());
  // No trickle ICE (the endpoint answers PATCH with 405): the offer
  // carries the candidates gathered by then. Host candidates come within
  // milliseconds of each other; Chromium may take a second more to call
  // gathering complete, which the door on the same network does not need
  // (its answer has every candidate of its own, and it learns ours from
  // our connectivity checks). So: complete, or 30 ms after the first
  // candidate, or 250 ms at most.
  if (pc.iceGatheringState !== "complete") {
    await new Promise((r) => {
      pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && r());
      pc.addEventListener("icecandidate", (e) => e.candidate && setTimeout(r, 30));
      setTimeout(r, 250);
    });
  }
  const resp = await api("POST", "/api/whep", pc.localDescription.sdp, { "Content-Type": "application/sdp" });
  const body = await resp.text();
  if (resp.status !== 201) {
    $("live-state").textContent = `no live view: ${resp.status} ${body.trim()}`;
    pc.close();
    pc = null;
    if (resp.status === 503 && liveWanted) {
      const wait = Number(resp.headers.get("Retry-After") || 10);
      setTimeout(() => liveWanted && !pc && startLive(), wait * 1000);
    }
    return;
  }
  session = new URL(resp.headers.get("Location"), location.href).href;
  await pc.setRemoteDescription({ type: "answer", sdp: body });
  refreshStatus(); // the viewer count
  let first = true;
  const onFrame = () => {
    if (first) {
      first = false;
      // Time from the page's navigation to the first picture shown.
      performance.mark("first-frame");
      $("live-state").textContent = `live (first picture after ${Math.round(performance.now() - t0)} ms)`;
    }
  };
  video.requestVideoFrameCallback(onFrame);
}

async function stopLive() {
  liveWanted = false;
  $("live-toggle").textContent = "Start live view";
  const url = session;
  session = null;
  if (pc) {
    pc.close();
    pc = null;
  }
  if (url) await api("DELETE", url).catch(() => {});
  $("live-state").textContent = "stopped";
}

$("live-toggle").addEventListener("click", () => (pc ? stopLive() : startLive()));
$("unmute").addEventListener("click", () => {
  $("video").muted = !$("video").muted;
  $("unmute").textContent = $("video").muted ? "Sound on" : "Sound off";
});
// Leaving the page frees the viewer's slot at once rather than when ICE
// gives up (keepalive lets the request outlive the page).
addEventListener("pagehide", () => {
  if (session) fetch(session, { method: "DELETE", headers: { "X-CSRF-Token": csrf }, keepalive: true });
});

// --- installer tests ---------------------------------------------------

for (const b of document.querySelectorAll("button[data-test]")) {
  b.addEventListener("click", async () => {
    const part = b.dataset.test;
    const out = $(`t-${part}`);
    if (part === "relay" && !confirm("Pulse the door relay for 1 s? The door will open.")) return;
    out.className = "muted";
    out.textContent = part === "button" ? "press the doorbell button now…" : "running…";
    b.disabled = true;
    const meter = part === "microphone" ? setInterval(readMicLevel, 200) : null;
    try {
      const resp = await api("POST", `/api/test/${part}`, part === "relay" ? { confirm: true } : {});
      if (!resp.ok) {
        out.className = "fail";
        out.textContent = `${resp.status} ${(await resp.text()).trim()}`;
        return;
      }
      const r = await resp.json();
      out.className = r.result;
      out.textContent = `${r.result.toUpperCase()}: ${r.message}`;
    } finally {
      if (meter) clearInterval(meter);
      b.disabled = false;
    }
  });
}

// readMicLevel moves the microphone meter while its test listens: the
// level of the audio the door encodes now (after gain and echo
// cancellation), as a resident would hear it.
async function readMicLevel() {
  try {
    const resp = await api("GET", "/api/test/microphone/level");
    if (!resp.ok) return;
    const l = await resp.json();
    if (!l.live) return;
    $("mic-meter").value = Math.max(-60, l.peak_dbfs);
    setText("mic-level", `peak ${l.peak_dbfs.toFixed(1)} dBFS, RMS ${l.rms_dbfs.toFixed(1)} dBFS`,
      l.peak_dbfs > -1 ? "fail" : "muted");
  } catch (err) {
    // The next reading will do; the test's own result says what failed.
  }
}

boot().catch((err) => {
  $("login").hidden = false;
  $("login-error").textContent = String(err);
});
