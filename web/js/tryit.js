// Try it: a streamed reply (POST /api/v1/llm/stream, read with fetch and a ReadableStream,
// since EventSource can neither POST nor send a header) and structured output.

import { api, ApiError, request } from "./api.js";
import { $, busy, h, say } from "./dom.js";

let controller = null;

function stats(element, entries) {
  element.replaceChildren(
    ...entries
      .filter(([, value]) => value !== undefined && value !== null && value !== "")
      .map(([label, value]) => h("div", {}, h("dt", {}, label), h("dd", { dataset: { stat: label } }, value))),
  );
}

/** Server-sent events from a fetch Response: yields {event, data}. */
async function* events(response, signal) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener("abort", () => reader.cancel().catch(() => {}), { once: true });
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (signal.aborted) throw new DOMException("The stream was stopped.", "AbortError");
    if (done) return;
    buffer += value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: data.join("\n") };
    }
  }
}

async function stream(event) {
  event.preventDefault();
  const prompt = $("#stream-prompt").value;
  const output = $("#stream-output");
  const message = $("#stream-message");
  const send = $("#stream-send");
  const stop = $("#stream-stop");
  const table = $("#stream-stats");
  if (!prompt.trim()) {
    say(message, "Write a prompt first.", "error");
    return;
  }
  controller = new AbortController();
  const signal = controller.signal;
  output.textContent = "";
  say(message, "");
  stats(table, [["status", "waiting for the first token…"]]);
  send.disabled = true;
  stop.disabled = false;
  const started = performance.now();
  let firstToken = null;
  let pieces = 0;
  try {
    const response = await request("/api/v1/llm/stream", {
      method: "POST",
      json: { prompt },
      signal,
      headers: { Accept: "text/event-stream" },
    });
    for await (const { event: kind, data } of events(response, signal)) {
      const payload = JSON.parse(data);
      if (kind === "delta") {
        if (firstToken === null) firstToken = performance.now() - started;
        pieces += 1;
        output.append(payload.text);
        stats(table, [["status", "streaming"], ["first token", `${Math.round(firstToken)} ms`], ["chunks", pieces]]);
      } else if (kind === "done") {
        stats(table, [
          ["provider", payload.provider],
          ["model", payload.model],
          ["first token", firstToken === null ? "—" : `${Math.round(firstToken)} ms`],
          ["latency", `${Math.round(performance.now() - started)} ms`],
          ["prompt tokens", payload.usage.prompt_tokens],
          ["completion tokens", payload.usage.completion_tokens],
          ["finish", payload.finish_reason],
        ]);
      } else if (kind === "error") {
        say(message, payload.detail, "error");
        stats(table, [["status", "failed"]]);
      }
    }
  } catch (error) {
    if (error.name === "AbortError" || signal.aborted) {
      stats(table, [["status", "stopped"], ["first token", firstToken === null ? "—" : `${Math.round(firstToken)} ms`], ["chunks", pieces]]);
      say(message, "Stopped: the request was cancelled.", "info");
    } else {
      stats(table, [["status", "failed"]]);
      say(message, error instanceof ApiError ? error.message : `The stream broke off: ${error.message}`, "error");
    }
  } finally {
    controller = null;
    send.disabled = false;
    stop.disabled = true;
  }
}

function showStructuredError(element, error) {
  const body = error.body ?? {};
  const parts = [h("p", {}, error.message)];
  if (body.raw_text !== undefined) {
    parts.push(h("p", {}, `The model's last reply (after ${body.attempts ?? "?"} attempts):`));
    parts.push(h("pre", { className: "mono" }, body.raw_text));
  }
  element.replaceChildren(...parts);
  element.classList.add("error");
  element.hidden = false;
}

async function structured(event) {
  event.preventDefault();
  const output = $("#structured-output");
  const message = $("#structured-message");
  const table = $("#structured-stats");
  output.textContent = "";
  stats(table, []);
  say(message, "");
  let schema;
  try {
    schema = JSON.parse($("#structured-schema").value);
  } catch (error) {
    say(message, `The schema is not valid JSON: ${error.message}`, "error");
    return;
  }
  await busy($("#structured-send"), "Working…", async () => {
    try {
      const result = await api("/api/v1/llm/structured", {
        method: "POST",
        json: { prompt: $("#structured-prompt").value, schema },
      });
      output.textContent = JSON.stringify(result.data, null, 2);
      stats(table, [
        ["provider", result.provider],
        ["model", result.model],
        ["latency", `${Math.round(result.latency_ms)} ms`],
        ["attempts", result.attempts],
        ["mode", result.mode],
      ]);
    } catch (error) {
      showStructuredError(message, error);
    }
  });
}

function selectTab(tab) {
  for (const other of document.querySelectorAll("#try [role=tab]")) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
  }
  tab.focus();
}

export function initTry({ first }) {
  if (!first) return;
  $("#try-stream").addEventListener("submit", stream);
  $("#stream-stop").addEventListener("click", () => controller?.abort());
  $("#try-structured").addEventListener("submit", structured);
  const tabs = [...document.querySelectorAll("#try [role=tab]")];
  tabs.forEach((tab, index) => {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (step) selectTab(tabs[(index + step + tabs.length) % tabs.length]);
    });
  });
}
