// fhir-scribe dictation page. Talks only to its own origin; the session is an HttpOnly cookie the page cannot
// read, and every state-changing request carries the CSRF token from /smart/session. The draft lives in memory
// until the chart has it: a failed send keeps it on the page with a retry.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { csrf: "", draft: null, recorder: null, chunks: [], started: 0, paused: 0, timer: null,
                preview: null, previewStarted: 0, heard: "", previews: Promise.resolve(), refreshAt: 0 };
// The live transcript while recording comes from short pieces of the recording, each cut at a pause in speech
// (or at the longest length) and transcribed as soon as it is cut. It is provisional: the note to review is
// transcribed from the whole recording after Stop.
const PIECE_MIN_MS = 4000, PIECE_MAX_MS = 10000, PAUSE_LEVEL = 0.04;

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
    state.recorder.pause(); state.preview.pause(); state.paused = Date.now(); buttons("paused");
  });
  $("resume").addEventListener("click", () => {
    const pausedFor = Date.now() - state.paused;
    state.started += pausedFor; state.previewStarted += pausedFor;
    state.recorder.resume(); state.preview.resume(); buttons("recording");
  });
  $("stop").addEventListener("click", () => state.recorder.stop());
  $("upload").addEventListener("change", (event) => { if (event.target.files[0]) transcribe(event.target.files[0]); });
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
  const stream = await navigator.mediaDevices.getUserMedia(
    { audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
  const audio = new AudioContext();
  const analyser = audio.createAnalyser();
  audio.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  state.chunks = [];
  state.recorder = new MediaRecorder(stream, { mimeType: "audio/webm;codecs=opus" });
  state.recorder.ondataavailable = (event) => { if (event.data.size) state.chunks.push(event.data); };
  state.recorder.onstop = () => {
    clearInterval(state.timer);
    const preview = state.preview;
    state.preview = null;  // the last piece is not transcribed: the whole recording is, now
    if (preview.state !== "inactive") preview.stop();
    stream.getTracks().forEach((track) => track.stop());
    audio.close();
    buttons("idle");
    transcribe(new Blob(state.chunks, { type: "audio/webm" }));
  };
  state.started = Date.now();
  state.heard = "";
  $("live").textContent = "";
  startPiece(stream);
  state.timer = setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    const level = Math.min(1, Math.sqrt(samples.reduce((sum, x) => sum + x * x, 0) / samples.length) * 4);
    $("level").value = level;
    if (state.recorder.state === "recording") {
      const seconds = Math.floor((Date.now() - state.started) / 1000);
      $("elapsed").textContent = `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
      const age = Date.now() - state.previewStarted;
      if (age >= PIECE_MAX_MS || (age >= PIECE_MIN_MS && level < PAUSE_LEVEL)) {
        state.preview.stop();
        startPiece(stream);
      }
    }
  }, 200);
  state.recorder.start(1000);
  buttons("recording");
  say("Recording. The live transcript is provisional: the note is transcribed from the whole recording at Stop.");
}

function startPiece(stream) {
  const piece = new MediaRecorder(stream, { mimeType: "audio/webm;codecs=opus" });
  piece.ondataavailable = (event) => {
    if (event.data.size && state.preview !== null) {
      state.previews = state.previews.then(() => hearPiece(event.data));
    }
  };
  piece.start();
  state.preview = piece;
  state.previewStarted = Date.now();
}

async function hearPiece(blob) {
  const form = new FormData();
  form.append("file", blob, "piece.webm");
  form.append("prompt", state.heard.slice(-200));  // continuity across the cut
  form.append("response_format", "json");
  try {
    const response = await api("/v1/audio/transcriptions", { method: "POST", body: form });
    if (!response.ok || state.recorder.state === "inactive") return;
    const text = (await response.json()).text.trim();
    if (!text) return;
    state.heard += (state.heard ? " " : "") + text;
    await showSections(state.heard, true);
  } catch (error) {
    // The live view is a preview: a lost piece is still in the recording transcribed after Stop.
  }
}

async function transcribe(blob) {
  clearError();
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
    buffer += decoder.decode(value, { stream: true });
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

async function showSections(text, provisional = false) {
  const response = await api("/v1/sections", { method: "POST", body: JSON.stringify({ text }),
                                               headers: { "Content-Type": "application/json" } });
  const live = $("live");
  live.classList.toggle("provisional", provisional);
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
    list.append(item);
  }
  $("checks").hidden = !(draft.flags || []).length;
  $("review").hidden = false;
  say("Review the note, then send it to the chart.");
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
