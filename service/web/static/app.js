// fhir-scribe dictation page. Talks only to its own origin; the session is an HttpOnly cookie the page cannot
// read, and every state-changing request carries the CSRF token from /smart/session. The draft lives in memory
// until the chart has it: a failed send keeps it on the page with a retry.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { csrf: "", draft: null, recorder: null, chunks: [], started: 0, paused: 0, timer: null,
                socket: null, items: null, streamable: false, refreshAt: 0,
                // The recording the draft was made from, kept in this page's memory only (never in storage, never
                // sent again), so that each flag can play the seconds it was heard in; decoded on first need.
                recording: null, decoding: null, player: null, source: null, plays: 0 };
// The live transcript while recording streams the microphone to /v1/realtime (the OpenAI Realtime transcription
// protocol) and shows each utterance's confirmed words, then the words that may still change. It is a preview:
// the note to review is transcribed from the whole recording after Stop, which is the more accurate of the two.
const LIVE_URL = (location.protocol === "https:" ? "wss://" : "ws://") + location.host
  + "/v1/realtime?intent=transcription";
const LIVE_SESSION = { type: "session.update", session: { type: "transcription",
  audio: { input: { format: { type: "audio/pcm", rate: 16000 },
                    turn_detection: { type: "server_vad", silence_duration_ms: 500 } } },
  include: ["item.input_audio_transcription.tentative"] } };
const LIVE_QUEUE = 30;  // chunks (~3 s) held while the socket opens: the server takes at most 5 s ahead of time
const LIVE_LAST_WORDS_MS = 2000;  // after Stop or Pause, how long the last utterance may take to complete
const RECORDING = "Recording. Words appear as they are confirmed; grey italic words may still change. The note "
  + "is transcribed from the whole recording at Stop.";
// Why a stream closed, by close code; 1006 is all a browser tells of a refused handshake (busy 503, 401, 403).
const CLOSED = { 1006: "the server refused the stream or could not be reached", 1008: "the stream was refused",
                 1011: "the server failed", 1012: "the server is restarting", 1013: "the service is busy" };

async function api(path, options = {}) {
  const headers = { "X-CSRF-Token": state.csrf, ...(options.headers || {}) };
  return fetch(path, { credentials: "same-origin", ...options, headers });
}

function say(text) { $("status").textContent = text; }

function fail(problem) {
  const box = $("error");
  box.textContent = `${problem.title || "Error"}: ${problem.detail || "unknown error"}`;
  box.hidden = false;
}

function clearError() { $("error").hidden = true; $("retry").hidden = true; }

async function start() {
  const session = await fetch("/smart/session", { credentials: "same-origin" });
  if (!session.ok) { fail(await session.json()); return; }
  const context = await session.json();
  state.context = context;
  state.csrf = context.csrf;
  $("relaunch").href = `/smart/launch?iss=${encodeURIComponent(context.iss)}`;
  if (context.refreshable) scheduleRefresh(context.expires_at);
  if (context.need_patient_banner) {
    const response = await fetch("/smart/context", { credentials: "same-origin" });
    if (response.ok) {
      const c = await response.json();
      $("patient-name").textContent = c.patient_name || context.patient;
      $("patient-dob").textContent = c.birth_date || "unknown";
      $("patient-identifier").textContent = c.identifier || context.patient;
      $("encounter").textContent = c.encounter || "";
      $("banner").hidden = false;
    }
  }
  $("record").addEventListener("click", record);
  $("pause").addEventListener("click", () => {
    state.recorder.pause(); endLive(); state.paused = Date.now(); buttons("paused");
  });
  $("resume").addEventListener("click", () => {
    state.started += Date.now() - state.paused;
    state.recorder.resume(); buttons("recording");
    say(RECORDING);
    // A new stream: a paused one would be closed as idle anyway, and keeps no state worth keeping.
    if (state.streamable) openLive();
    else liveUnavailable("this browser cannot stream the microphone");
  });
  $("stop").addEventListener("click", () => state.recorder.stop());
  $("upload").addEventListener("change", (event) => { if (event.target.files[0]) transcribe(event.target.files[0]); });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.source) { stopPlaying(); sayPlaying("Stopped."); }
  });
  $("send").addEventListener("click", send);
  $("retry").addEventListener("click", send);
  say("Ready to dictate.");
}

// The session's access token is renewed (refresh token, server side) a little before it expires. Timers in a
// hidden tab may be late, so a tab coming back into view checks too.
function scheduleRefresh(expiresAt) {
  const left = expiresAt * 1000 - Date.now();
  state.refreshAt = Date.now() + Math.max(left - Math.min(120000, left / 2), 0);
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(refresh, state.refreshAt - Date.now());
}

async function refresh() {
  const response = await api("/smart/refresh", { method: "POST" });
  if (response.ok) { scheduleRefresh((await response.json()).expires_at); return; }
  sessionEnded(await response.json());
}

// The EHR ended the session (refresh refused, token expired or refused): nothing on the page is lost, and the
// clinician is told how to go on rather than that the app is ready.
function sessionEnded(problem) {
  state.ended = true;
  clearTimeout(state.refreshTimer);
  fail(problem);
  $("relaunch").hidden = false;
  say("Your session with the EHR has ended. Your note stays on this page: launch the app again from the EHR "
      + "(or sign in again) to send it.");
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState !== "visible") return;
  if (state.ended) resume();
  else if (state.refreshAt && Date.now() >= state.refreshAt) refresh();
});

// Back from signing in again in another tab: carry on only in the very same launch context (patient,
// encounter, user), never send this note under another patient's session.
async function resume() {
  const response = await fetch("/smart/session", { credentials: "same-origin" });
  if (!response.ok) return;
  const context = await response.json();
  const same = ["patient", "encounter", "fhir_user"].every((key) => context[key] === state.context[key]);
  if (!same) {
    fail({ title: "Another patient", detail: "the new session is for a different patient, encounter or user; "
      + "this note was not sent" });
    return;
  }
  state.ended = false;
  state.csrf = context.csrf;
  if (context.refreshable) scheduleRefresh(context.expires_at);
  clearError();
  $("relaunch").hidden = true;
  say("Session renewed. You can send the note now.");
}

function buttons(mode) {
  $("record").disabled = mode !== "idle";
  $("pause").disabled = mode !== "recording";
  $("resume").disabled = mode !== "paused";
  $("stop").disabled = mode === "idle";
}

async function record() {
  clearError();
  stopPlaying();  // the microphone would hear it
  sayPlaying("");
  const stream = await navigator.mediaDevices.getUserMedia(
    { audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
  // The recording comes first and depends on nothing else: whatever happens to the live transcript (or the level
  // meter), the note is made from it.
  let audio = null, analyser = null;
  state.chunks = [];
  state.recorder = new MediaRecorder(stream, { mimeType: "audio/webm;codecs=opus" });
  state.recorder.ondataavailable = (event) => { if (event.data.size) state.chunks.push(event.data); };
  state.recorder.onstop = () => {
    clearInterval(state.timer);
    endLive();
    state.items = null;  // the whole recording's transcript takes the view now; late live words are not shown
    stream.getTracks().forEach((track) => track.stop());
    if (audio) audio.close();
    buttons("idle");
    transcribe(new Blob(state.chunks, { type: "audio/webm" }));
  };
  state.recorder.start(1000);
  state.started = Date.now();
  buttons("recording");
  say(RECORDING);
  $("live").textContent = "";
  state.items = new Map();
  const samples = new Float32Array(2048);  // the analyser's default fftSize
  state.timer = setInterval(() => {
    if (analyser) {
      analyser.getFloatTimeDomainData(samples);
      $("level").value = Math.min(1, Math.sqrt(samples.reduce((sum, x) => sum + x * x, 0) / samples.length) * 4);
    }
    if (state.recorder.state === "recording") {
      const seconds = Math.floor((Date.now() - state.started) / 1000);
      $("elapsed").textContent = `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
    }
  }, 200);
  state.streamable = true;
  openLive();  // the handshake overlaps loading the worklet
  try {
    // 16 kHz is what the server transcribes at: the browser resamples, and a third of 48 kHz goes over the wire.
    audio = new AudioContext({ sampleRate: 16000 });
    const source = audio.createMediaStreamSource(stream);
    analyser = audio.createAnalyser();
    source.connect(analyser);
    await audio.audioWorklet.addModule("/app/static/pcm-worklet.js");
    const chunker = new AudioWorkletNode(audio, "pcm-chunks",
      { channelCount: 1, channelCountMode: "explicit", channelInterpretation: "speakers" });
    chunker.port.onmessage = (event) => sendAudio(event.data);
    source.connect(chunker);
    chunker.connect(audio.destination);  // silent (it writes no output), but a node nobody pulls may not run
  } catch (error) {
    state.streamable = false;  // Resume opens no stream either
    if (state.recorder.state === "inactive") return;  // stopped before the worklet was ready: nothing to say
    endLive();
    liveUnavailable("this browser cannot stream the microphone");
  }
}

// One stream per stretch of recording (Record or Resume to Pause or Stop); its words go to the same view.
function openLive() {
  const socket = new WebSocket(LIVE_URL);
  socket.queue = [];
  socket.waiting = new Set();  // items begun or committed, not yet completed
  state.socket = socket;
  socket.onopen = () => {
    socket.send(JSON.stringify(LIVE_SESSION));
    for (const audio of socket.queue) socket.send(audio);
    socket.queue = [];
  };
  socket.onmessage = (event) => heard(socket, JSON.parse(event.data));
  socket.onclose = (event) => {
    clearTimeout(socket.lastWords);
    if (state.socket === socket) state.socket = null;
    if (!socket.ending) liveUnavailable(socket.problem || CLOSED[event.code] || `closed (${event.code})`);
  };
}

function sendAudio(buffer) {
  const socket = state.socket;
  if (!socket || socket.ending) return;  // paused, or the stream failed: the recording still has this audio
  let bytes = "";
  for (const byte of new Uint8Array(buffer)) bytes += String.fromCharCode(byte);
  const message = JSON.stringify({ type: "input_audio_buffer.append", audio: btoa(bytes) });
  if (socket.readyState === WebSocket.OPEN) socket.send(message);
  else if (socket.readyState === WebSocket.CONNECTING && socket.queue.length < LIVE_QUEUE) {
    socket.queue.push(message);
  }
}

// Commit what was said since the last pause in speech, let its last words arrive, then close. Nothing waits on
// it: the draft upload at Stop goes ahead at once.
function endLive() {
  const socket = state.socket;
  if (!socket) return;
  state.socket = null;
  socket.ending = true;
  if (socket.readyState !== WebSocket.OPEN) { socket.close(); return; }
  socket.send(JSON.stringify({ type: "input_audio_buffer.commit" }));
  socket.lastWords = setTimeout(() => socket.close(), LIVE_LAST_WORDS_MS);
}

function heard(socket, message) {
  const id = message.item_id;
  if (message.type === "input_audio_buffer.speech_started" || message.type === "input_audio_buffer.committed") {
    socket.waiting.add(id);
  } else if (message.type === "conversation.item.input_audio_transcription.delta") {
    showWords(id, message.delta, null, false);
  } else if (message.type === "conversation.item.input_audio_transcription.tentative") {
    showWords(id, "", message.text, false);
  } else if (message.type === "conversation.item.input_audio_transcription.completed") {
    socket.waiting.delete(id);
    showWords(id, message.transcript, "", true);
  } else if (message.type === "error") {
    const error = message.error || {};
    if (error.code === "transcription_lagging") {  // the stream goes on; if it falls further behind it is closed
      say("Live transcript is running behind (the service is busy); the note will still be transcribed from the "
          + "whole recording at Stop.");
    } else if (error.code !== "input_audio_buffer_commit_empty") {  // that one: the server had committed already
      socket.problem = error.message || error.code;
      if (!socket.ending) {  // e.g. the session refused: audio sent on would be misread, so the stream ends here
        liveUnavailable(socket.problem);
        socket.ending = true;
        if (state.socket === socket) state.socket = null;
        socket.close();
      }
    }
  }
  if (socket.ending && socket.readyState === WebSocket.OPEN && !socket.waiting.size
      && message.type !== "input_audio_buffer.speech_started") {
    socket.close();
  }
}

// Each utterance (item) is a span of confirmed words, then its tentative tail. Deltas are added as text nodes,
// so a screen reader (aria-live polite) reads each new word once; the tail changes several times a second, so it
// is hidden from screen readers.
function showWords(id, words, tentative, completed) {
  if (!state.items) return;
  let item = state.items.get(id);
  if (!item) {
    if (!words && !tentative) return;  // no words yet: no empty gap in the transcript
    item = { confirmed: document.createElement("span"), gap: document.createTextNode(""),
             tentative: document.createElement("span") };
    item.confirmed.className = "confirmed";
    item.tentative.className = "tentative";
    item.tentative.setAttribute("aria-hidden", "true");
    const live = $("live");
    if (live.childNodes.length) live.append(" ");
    live.append(item.confirmed, item.gap, item.tentative);
    state.items.set(id, item);
  }
  const had = item.confirmed.textContent;
  if (completed && !words.startsWith(had)) item.confirmed.textContent = words;  // the final decode heard otherwise
  else {
    const more = completed ? words.slice(had.length) : words;  // a completed item that grew: only its new words
    if (more) item.confirmed.append(more);
  }
  if (tentative !== null) {
    // Words carry their own leading space; one goes between the spans, where the tail's underline does not reach.
    item.tentative.textContent = tentative.trim();
    item.gap.data = item.tentative.textContent && item.confirmed.textContent ? " " : "";
  }
}

function liveUnavailable(reason) {
  say(`Live transcript unavailable (${reason}); the note will still be transcribed from the whole recording at `
      + "Stop.");
}

async function transcribe(blob) {
  clearError();
  stopPlaying();
  sayPlaying("");
  state.recording = blob;  // the File itself for an upload: either way a Blob in memory, nothing more
  state.decoding = null;
  say("Transcribing...");
  $("live").textContent = "";
  const form = new FormData();
  form.append("file", blob, "dictation");
  form.append("note_type", $("note-type").value);
  const response = await api("/v1/dictations/draft", { method: "POST", body: form,
                                                       headers: { Accept: "text/event-stream" } });
  if (!response.ok) { fail(await response.json()); say(""); return; }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", heard = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");  // SSE allows CRLF, CR or LF
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").find((line) => line.startsWith("data: "));
      if (!data) continue;
      const message = JSON.parse(data.slice(6));
      if (message.type === "segment") { heard += message.text; await showSections(heard); }
      if (message.type === "draft") review(message.draft);
      if (message.type === "error") {
        fail(message.problem);
        if (message.problem.draft) review(message.problem.draft);  // nothing dictated is lost
      }
    }
  }
}

async function showSections(text) {
  const response = await api("/v1/sections", { method: "POST", body: JSON.stringify({ text }),
                                               headers: { "Content-Type": "application/json" } });
  const live = $("live");
  if (!response.ok) { live.textContent = text; return; }
  const note = await response.json();
  live.textContent = "";
  for (const section of note.sections) {
    if (section.category) {
      const heading = document.createElement("h3");
      heading.textContent = section.title;
      live.append(heading);
    }
    const body = document.createElement("p");
    body.textContent = section.text;
    live.append(body);
  }
}

const SOURCES = { MedicationRequest: "prescriptions", MedicationStatement: "medications taken",
                  AllergyIntolerance: "allergies", Condition: "problems", static: "department list" };

const UNUSED = {
  empty: "The chart lists no active medications, allergies or problems to listen for.",
  "no-scope": "Transcribed without the chart's vocabulary: this launch may not read medications or problems.",
  failed: "Transcribed without the chart's vocabulary: the chart could not be read.",
  "timed-out": "Transcribed without the chart's vocabulary: the chart did not answer in time.",
};

function review(draft) {
  state.draft = draft;
  $("note-text").value = draft.text;
  const use = draft.vocabulary;
  if (use && use.status === "applied") {
    const parts = Object.entries(use.by_source).map(([source, n]) => `${n} ${SOURCES[source] || source}`);
    $("vocabulary").textContent = `Heard with ${use.terms} terms from the chart (${parts.join(", ")}).`;
  } else if (use) {
    $("vocabulary").textContent = UNUSED[use.status] || "";
  }
  const list = $("flags");
  list.textContent = "";
  for (const flag of draft.flags || []) {
    const item = document.createElement("li");
    const words = document.createElement("strong");
    words.textContent = flag.text;
    item.append(words, ` — ${flag.message}`);
    const span = heardIn([flag]);
    if (span) {
      const listen = document.createElement("button");
      listen.type = "button";
      listen.className = "listen";
      listen.textContent = `Listen (${during(span)})`;
      listen.setAttribute("aria-label", `Listen (${during(span)}) to: ${flag.text || "the gap"}`);
      listen.addEventListener("click", () => play(span, flag.text));
      item.append(" ", listen);
    }
    list.append(item);
  }
  $("checks").hidden = !(draft.flags || []).length;
  showHeard(draft);
  $("review").hidden = false;
  say("Review the note, then send it to the chart.");
}

// The note as heard, read-only, with each flagged passage marked. Flags that overlap are one mark (one button
// playing from the first one's start to the last one's end) that names every reason. The draft's text is set as
// text nodes only: it comes from the server and is never parsed as HTML.
const KINDS = { "low-confidence": "Engine unsure", "possible-omission": "Possibly missed words",
                "drug-sound-alike": "Sounds like a chart drug", "dose-vs-chart": "Dose differs from the chart",
                "unit-symbol": "Unit symbol", "unit-vs-chart": "Unit differs from the chart" };

function showHeard(draft) {
  const view = $("heard");
  view.textContent = "";
  const text = draft.text || "";
  const flags = (draft.flags || [])
    .filter((f) => Number.isInteger(f.start) && Number.isInteger(f.end) && f.start >= 0 && f.start <= f.end
                   && f.end <= text.length)
    .sort((a, b) => a.start - b.start || a.end - b.end);
  const groups = [];
  for (const flag of flags) {
    const last = groups[groups.length - 1];
    if (last && flag.start < last.end) {
      last.flags.push(flag);
      last.end = Math.max(last.end, flag.end);
    } else {
      groups.push({ start: flag.start, end: flag.end, flags: [flag] });
    }
  }
  let at = 0;
  for (const group of groups) {
    if (group.start > at) view.append(text.slice(at, group.start));
    view.append(marked(group, text.slice(group.start, group.end)));
    at = group.end;
  }
  if (at < text.length) view.append(text.slice(at));
  $("heard-view").hidden = !groups.length;
  if (groups.some((group) => heardIn(group.flags))) decoded().catch(() => {});  // ready by the first press
}

function marked(group, words) {
  const mark = document.createElement("mark");
  mark.className = "flagged";
  const shown = words || "…";  // a flag with no words of its own (a gap): still something to press
  const why = group.flags.map((f) => `${KINDS[f.kind] || f.kind}: ${f.message}`).join("; ");
  const span = heardIn(group.flags);
  if (!span) {
    mark.classList.add("unplayable");
    mark.title = why;
    const reason = document.createElement("span");
    reason.className = "visually-hidden";
    reason.textContent = ` (${why}; no recording for these words)`;
    mark.append(shown, reason);
    return mark;
  }
  const button = document.createElement("button");
  button.type = "button";
  const icon = document.createElement("span");
  icon.className = "icon";
  icon.setAttribute("aria-hidden", "true");
  icon.textContent = "▶";
  button.append(icon, shown);
  button.title = why;
  button.setAttribute("aria-label", `${shown} (${why}). Listen, ${during(span)}`);
  button.addEventListener("click", () => play(span, shown));
  mark.append(button);
  return mark;
}

// Where flags were heard, in seconds: from the first start to the last end among those that know; null if none.
function heardIn(flags) {
  const known = flags.filter((f) => Number.isFinite(f.audio_start) && Number.isFinite(f.audio_end)
                                    && f.audio_end >= f.audio_start);
  if (!known.length) return null;
  return { start: Math.min(...known.map((f) => f.audio_start)), end: Math.max(...known.map((f) => f.audio_end)) };
}

function clock(seconds) {  // 72.34 -> "1:12.3"
  const total = Number(seconds.toFixed(1));
  const minutes = Math.floor(total / 60);
  return `${minutes}:${(total - minutes * 60).toFixed(1).padStart(4, "0")}`;
}

function during(span) { return `${clock(span.start)}–${clock(span.end)}`; }

const PLAY_PAD_S = 0.3;  // a little before and after: word timings are approximate, and a clipped word misleads

function sayPlaying(text) { $("playback").textContent = text; }

// The recording decoded once, from memory, at the rate the engine heard it (16 kHz: speech stays clear, and an
// hour of it takes a quarter of the memory 48 kHz would).
function decoded() {
  if (!state.decoding) {
    const blob = state.recording;
    if (!blob) return Promise.reject(new Error("no recording in memory"));
    state.decoding = blob.arrayBuffer().then((bytes) => new OfflineAudioContext(1, 1, 16000).decodeAudioData(bytes));
    state.decoding.catch(() => { if (state.recording === blob) state.decoding = null; });
  }
  return state.decoding;
}

async function play(span, words) {
  stopPlaying();
  const press = ++state.plays;  // a later press wins over one still decoding
  if (!state.recording) { sayPlaying("The recording is no longer in this page's memory."); return; }
  if (state.recorder && state.recorder.state !== "inactive") {
    sayPlaying("Stop recording before listening: the microphone would hear it.");
    return;
  }
  // Made and resumed within the press (a user gesture), so the browser lets it sound.
  if (!state.player) state.player = new AudioContext();
  const resumed = state.player.resume();
  let buffer;
  try {
    if (!state.decoding) sayPlaying("Preparing the recording...");
    buffer = await decoded();
    await resumed;
  } catch (error) {
    if (press === state.plays) sayPlaying("This browser could not play the recording.");
    return;
  }
  if (press !== state.plays) return;
  const from = Math.max(0, span.start - PLAY_PAD_S);
  const to = Math.min(buffer.duration, span.end + PLAY_PAD_S);
  if (to <= from) { sayPlaying(`${during(span)} is past the end of the recording.`); return; }
  const source = state.player.createBufferSource();
  source.buffer = buffer;
  source.connect(state.player.destination);
  source.onended = () => {
    if (state.source !== source) return;
    state.source = null;
    sayPlaying(`Stopped (played ${during(span)}).`);
  };
  state.source = source;
  source.start(0, from, to - from);
  sayPlaying(`Playing ${during(span)}: “${words}”`);
}

function stopPlaying() {
  state.plays += 1;
  const source = state.source;
  if (!source) return;
  state.source = null;
  source.onended = null;
  try { source.stop(); } catch (error) { /* already ended */ }
  source.disconnect();
}

async function send() {
  clearError();
  const draft = { ...state.draft, text: $("note-text").value };
  say("Sending...");
  $("send").disabled = true;
  try {
    const response = await api("/v1/dictations/commit", {
      method: "POST", body: JSON.stringify(draft), headers: { "Content-Type": "application/json" } });
    const body = await response.json();
    if (response.ok) {
      say(`Sent to the chart: DocumentReference/${body.document_reference_id}`);
      return;
    }
    if (response.status === 401 || body.type === "urn:fhir-scribe:problem:fhir-refused-user") {
      state.draft = draft;
      sessionEnded(body);
      return;
    }
    fail(body);
  } catch (error) {
    fail({ title: "Network error", detail: String(error) });
  } finally {
    $("send").disabled = false;
  }
  state.draft = draft;  // keep the clinician's edits
  $("retry").hidden = false;
  say("Not sent. The note is still here; retry when the chart is reachable.");
}

document.addEventListener("DOMContentLoaded", start);
