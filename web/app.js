// The omni-tis page: ask by text, file or microphone; read the SSE stream of POST /v1/stream with
// fetch (EventSource cannot POST); show the spoken text live and, when toggled, the reasoning and the
// speak/think blocks; schedule each audio chunk right after the previous one with Web Audio (gapless).
// window.omniStats holds what the page measured (the browser test reads it).
"use strict";

const $ = (id) => document.getElementById(id);
const stats = (window.omniStats = {});
let ctx = null;          // one AudioContext, made on the first click (autoplay rules)
let nextTime = 0;        // where the next chunk starts, in ctx.currentTime seconds
let pcmParts = [];       // Int16Array chunks of this answer, for the download link
let sampleRate = null;
let controller = null;   // aborts the running request (the server then stops the answer)
let lastBlock = null;    // the speak/think block the last delta went to
let recorder = null;

function reset() {
  Object.assign(stats, { state: "starting", error: null, firstTextMs: null, firstAudioMs: null, chunks: 0,
    scheduledSeconds: 0, gaps: 0, text: "", reasoning: "", events: 0, blocks: 0, done: null });
  pcmParts = []; sampleRate = null; lastBlock = null; nextTime = 0;
  $("spoken").textContent = ""; $("thinking").textContent = ""; $("tape").textContent = ""; $("server").textContent = "";
  $("first-text").textContent = "–"; $("first-audio").textContent = "–"; $("gaps").textContent = "0";
  $("scheduled").textContent = "0 chunks, 0.00 s"; $("download-wrap").classList.add("hidden");
  const show = $("show-reasoning").checked;
  $("thinking-pane").classList.toggle("hidden", !show);
  $("tape-card").classList.toggle("hidden", !show);
  $("cols").classList.toggle("reasoning", show);
  setStatus("waiting");
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function audio() {
  if (!ctx) ctx = new (window.AudioContext || window.webkitAudioContext)();
  if (ctx.state === "suspended") ctx.resume();
  return ctx;
}

function options() {
  const o = { show_reasoning: $("show-reasoning").checked };
  const ints = { speak: "speak", think: "think", max_new_tokens: "max-new-tokens", seed: "seed" };
  for (const [k, id] of Object.entries(ints)) if ($(id).value !== "") o[k] = parseInt($(id).value, 10);
  if ($("temperature").value !== "") o.temperature = parseFloat($("temperature").value);
  return o;
}

function headers(extra = {}) {
  const h = { ...extra };
  const token = $("token").value.trim();
  localStorage.setItem("omni-tis-token", token);
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

// ---- the stream ----------------------------------------------------------------------------------
async function ask(body, hdrs) {
  audio();  // inside the click: lets the page play sound
  if (controller) controller.abort();
  controller = new AbortController();
  reset();
  $("stop").disabled = false;
  const t0 = performance.now();
  let resp;
  try {
    resp = await fetch("/v1/stream", { method: "POST", body, headers: hdrs, signal: controller.signal });
  } catch (e) {
    return fail("request failed: " + e.message);
  }
  if (!resp.ok) {
    let detail = resp.statusText;
    try { detail = (await resp.json()).detail; } catch (_) { /* not JSON */ }
    return fail(`${resp.status}: ${detail}`);
  }
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const ev = parse(frame);
        if (ev) handle(ev, t0);
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") return fail("stream broke: " + e.message);
    setStatus("stopped"); stats.state = "stopped";
  } finally {
    $("stop").disabled = true;
  }
  if (stats.state !== "done" && stats.state !== "error" && stats.state !== "stopped") fail("the stream ended early");
}

function parse(frame) {
  let event = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (line.startsWith(":")) continue;  // keepalive comment
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return null;
  return { event, data: JSON.parse(data.join("\n")) };
}

function handle({ event, data }, t0) {
  stats.events++;
  const ms = () => Math.round(performance.now() - t0);
  if (event === "start") {
    sampleRate = data.sample_rate;
    stats.state = "streaming";
    setStatus(data.queued ? `waiting (${data.queued} ahead, about ${Math.ceil(data.wait_estimate_s)} s)` : "speaking");
  } else if (event === "text") {
    if (stats.firstTextMs === null) { stats.firstTextMs = ms(); $("first-text").textContent = stats.firstTextMs + " ms"; }
    stats.text += data.delta;
    $("spoken").textContent = stats.text;
    addToTape("speak", data.delta);
    setStatus("speaking");
  } else if (event === "reasoning") {
    stats.reasoning += data.delta;
    $("thinking").textContent = stats.reasoning;
    addToTape("think", data.delta);
  } else if (event === "audio") {
    if (stats.firstAudioMs === null) { stats.firstAudioMs = ms(); $("first-audio").textContent = stats.firstAudioMs + " ms"; }
    schedule(data);
  } else if (event === "done") {
    stats.done = data;
    stats.state = "done";
    setStatus(`done (${data.finish_reason})`);
    const t = data.timings || {};
    $("server").textContent = `answer ${data.answer ?? "–"} · model: first text after ${t.positions_to_first_text ?? "–"} ` +
      `positions, first audio after ${t.positions_to_first_audio ?? "–"} positions / ${t.talker_steps_to_first_audio ?? "–"} ` +
      `talker steps; ${t.thinker_positions} positions, ${t.reasoning_tokens} reasoning tokens, ${t.audio_seconds ?? 0} s audio`;
    offerDownload();
  } else if (event === "error") {
    fail(data.message);
  }
}

function addToTape(kind, delta) {
  if (!$("show-reasoning").checked) return;
  if (!lastBlock || lastBlock.dataset.kind !== kind) {
    lastBlock = document.createElement("span");
    lastBlock.className = "blk " + kind;
    lastBlock.dataset.kind = kind;
    $("tape").appendChild(lastBlock);
    stats.blocks++;
  }
  lastBlock.textContent += delta;
}

function fail(message) {
  stats.state = "error"; stats.error = message;
  setStatus(message, true);
  $("stop").disabled = true;
}

// ---- audio: gapless scheduling -------------------------------------------------------------------
function pcmFromBase64(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Int16Array(bytes.buffer, 0, bytes.length >> 1);  // little-endian, as every browser is
}

function schedule(chunk) {
  const ac = audio();
  const pcm = pcmFromBase64(chunk.pcm16);
  if (!pcm.length) return;
  pcmParts.push(pcm);
  const buffer = ac.createBuffer(1, pcm.length, chunk.sample_rate);
  const ch = buffer.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) ch[i] = pcm[i] / 32768;
  const src = ac.createBufferSource();
  src.buffer = buffer;
  src.connect(ac.destination);
  const now = ac.currentTime;
  if (nextTime < now + 0.01) {          // first chunk, or the stream fell behind playback
    if (stats.chunks > 0) stats.gaps++;
    nextTime = now + 0.06;               // a little lead so the start is not clipped
  }
  src.start(nextTime);                   // exactly where the previous chunk ends
  nextTime += buffer.duration;
  stats.chunks++;
  stats.scheduledSeconds += buffer.duration;
  $("scheduled").textContent = `${stats.chunks} chunks, ${stats.scheduledSeconds.toFixed(2)} s`;
  $("gaps").textContent = String(stats.gaps);
}

function offerDownload() {
  if (!pcmParts.length || !sampleRate) return;
  const n = pcmParts.reduce((a, p) => a + p.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * n));
  const str = (o, s) => { for (let i = 0; i < s.length; i++) view.setUint8(o + i, s.charCodeAt(i)); };
  str(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); str(8, "WAVEfmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, sampleRate, true); view.setUint32(28, 2 * sampleRate, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true); str(36, "data"); view.setUint32(40, 2 * n, true);
  let o = 44;
  for (const p of pcmParts) for (let i = 0; i < p.length; i++, o += 2) view.setInt16(o, p[i], true);
  const link = $("download");
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([view], { type: "audio/wav" }));
  $("download-wrap").classList.remove("hidden");
}

// ---- microphone: raw PCM through an AudioWorklet, sent as a WAV file --------------------------------
const WORKLET = `class Rec extends AudioWorkletProcessor {
  process(inputs) { const ch = inputs[0] && inputs[0][0]; if (ch) this.port.postMessage(ch.slice(0)); return true; }
}
registerProcessor("omni-rec", Rec);`;

async function startRecording() {
  const ac = audio();
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return fail("this browser cannot record");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
  } catch (e) {
    return fail("microphone: " + e.message);
  }
  if (!ac.omniWorklet) {
    const url = URL.createObjectURL(new Blob([WORKLET], { type: "text/javascript" }));
    await ac.audioWorklet.addModule(url);
    ac.omniWorklet = true;
  }
  const source = ac.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ac, "omni-rec");
  const mute = ac.createGain();
  mute.gain.value = 0;                   // pulled by the graph, never heard
  const parts = [];
  node.port.onmessage = (e) => parts.push(e.data);
  source.connect(node); node.connect(mute); mute.connect(ac.destination);
  recorder = { stream, source, node, mute, parts, rate: ac.sampleRate };
  $("record").classList.add("on"); $("record").textContent = "■ Stop recording";
  setStatus("recording");
}

function stopRecording() {
  const r = recorder;
  recorder = null;
  $("record").classList.remove("on"); $("record").innerHTML = "&#9679; Record";
  r.source.disconnect(); r.node.disconnect(); r.mute.disconnect();
  r.stream.getTracks().forEach((t) => t.stop());
  const n = r.parts.reduce((a, p) => a + p.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * n));
  const str = (o, s) => { for (let i = 0; i < s.length; i++) view.setUint8(o + i, s.charCodeAt(i)); };
  str(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); str(8, "WAVEfmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, r.rate, true); view.setUint32(28, 2 * r.rate, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true); str(36, "data"); view.setUint32(40, 2 * n, true);
  let o = 44;
  for (const p of r.parts) for (let i = 0; i < p.length; i++, o += 2) view.setInt16(o, Math.max(-1, Math.min(1, p[i])) * 32767, true);
  askWithFile(new Blob([view], { type: "audio/wav" }), "recording.wav");
}

function askWithFile(blob, name) {
  const form = new FormData();
  form.append("audio", blob, name);
  form.append("options", JSON.stringify(options()));
  ask(form, headers());
}

// ---- wiring --------------------------------------------------------------------------------------
$("token").value = localStorage.getItem("omni-tis-token") || "";
$("ask").addEventListener("click", () => {
  const text = $("question").value.trim();
  if (!text) return fail("type a question, pick a file or record one");
  ask(JSON.stringify({ text, options: options() }), headers({ "Content-Type": "application/json" }));
});
$("question").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("ask").click(); });
$("file").addEventListener("change", () => {
  const f = $("file").files[0];
  if (f) askWithFile(f, f.name);
});
$("record").addEventListener("click", () => (recorder ? stopRecording() : startRecording()));
$("stop").addEventListener("click", () => { if (controller) controller.abort(); });
reset();
setStatus("idle");
stats.state = "idle";
