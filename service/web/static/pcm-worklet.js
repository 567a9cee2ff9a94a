// fhir-scribe dictation page: the microphone as PCM16 for the live transcript (/v1/realtime). Runs on the audio
// thread, which keeps time even when the page's thread is busy, so no audio is dropped between chunks; the page
// only sends what it is given.
"use strict";

class PcmChunks extends AudioWorkletProcessor {
  constructor() {
    super();
    this.bytes = Math.round(sampleRate / 10) * 2;  // ~100 ms: small enough to stay live, few enough messages
    this.chunk = new DataView(new ArrayBuffer(this.bytes));
    this.at = 0;
  }

  process(inputs) {
    const samples = inputs[0][0];  // mono (the node downmixes); absent until the microphone is connected
    if (!samples) return true;
    for (const x of samples) {
      const s = Math.max(-1, Math.min(1, x));
      this.chunk.setInt16(this.at, s < 0 ? s * 0x8000 : s * 0x7fff, true);  // little-endian, whatever the CPU
      this.at += 2;
      if (this.at === this.bytes) {
        this.port.postMessage(this.chunk.buffer, [this.chunk.buffer]);  // handed over, not copied
        this.chunk = new DataView(new ArrayBuffer(this.bytes));
        this.at = 0;
      }
    }
    return true;  // keep running while the page listens: it disconnects the node when done
  }
}

registerProcessor("pcm-chunks", PcmChunks);
