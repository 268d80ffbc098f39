// Settings: every field the API describes (GET /api/v1/llm-settings/fields), where its value
// comes from, each provider's model picked from what discovery offers, the fallback order,
// and saving it all with one PATCH /api/v1/llm-settings, whose warnings are shown.
// A new provider or field arrives as data from the API: nothing here names one.

import { api } from "./api.js";
import { $, busy, h, say } from "./dom.js";
import { fallbackChanges, initFallback, setActiveProvider, showFallback } from "./fallback.js";
import { forgetDiscoveries, modelControl } from "./modelpicker.js";

const SOURCE_WORDS = { database: "saved", environment: "from the environment", unset: "not set" };
let fields = [];

function providerControl(field, id) {
  return h(
    "select",
    { id, name: field.name, onchange: (event) => setActiveProvider(event.target.value) },
    field.choices.map((choice) =>
      h("option", { value: choice.value, selected: choice.value === field.value }, `${choice.label} (${choice.value})`),
    ),
  );
}

function render() {
  $("#settings-fields").replaceChildren(
    ...fields
      .filter((field) => field.kind !== "fallback")
      .map((field) => {
        const id = `setting-${field.name}`;
        const note = h("p", { className: "note", id: `${id}-note` });
        const controls = field.kind === "provider" ? [providerControl(field, id)] : modelControl(field, id, note);
        controls[0].setAttribute("aria-describedby", note.id);
        return h(
          "div",
          { className: "field", dataset: { field: field.name } },
          h(
            "div",
            { className: "field-head" },
            h("label", { htmlFor: id }, field.label),
            h("span", { className: "source" }, `${SOURCE_WORDS[field.source] ?? field.source} · ${field.env}`),
          ),
          ...controls,
          note,
        );
      }),
  );
}

async function load() {
  forgetDiscoveries();
  try {
    const [described, settings] = await Promise.all([api("/api/v1/llm-settings/fields"), api("/api/v1/llm-settings")]);
    fields = described;
    render();
    showFallback(settings, fields.find((field) => field.kind === "fallback"));
  } catch (error) {
    say($("#settings-message"), error.message, "error");
  }
}

function changes() {
  const found = {};
  for (const field of fields.filter((f) => f.kind !== "fallback")) {
    const value = document.getElementById(`setting-${field.name}`)?.value.trim();
    if (value && value !== field.value) found[field.name] = value;
  }
  const chain = fallbackChanges();
  if (chain) found.fallback_providers = chain;
  return found;
}

/** The warnings a save answered with, as a list the admin cannot miss (or nothing). */
function showWarnings(warnings) {
  const box = $("#settings-warnings");
  box.hidden = !warnings.length;
  $("#settings-warnings-list").replaceChildren(...warnings.map((text) => h("li", {}, text)));
}

async function save(event) {
  event.preventDefault();
  const message = $("#settings-message");
  showWarnings([]);
  const body = changes();
  if (!Object.keys(body).length) {
    say(message, "Nothing changed.", "info");
    return;
  }
  await busy($("#settings-save"), "Saving…", async () => {
    try {
      const saved = await api("/api/v1/llm-settings", { method: "PATCH", json: body });
      await load(); // first, so that what the message describes is what the form shows
      const chain = saved.fallback_providers.map((e) => e.provider).join(" → ") || "none";
      say(message, `Saved: ${saved.provider} with model ${saved.model ?? "(none)"}, fallback ${chain}. The next call uses it.`);
      showWarnings(saved.warnings ?? []);
    } catch (error) {
      say(message, error.message, "error");
    }
  });
}

export function initSettings({ first }) {
  if (first) {
    initFallback();
    $("#settings-form").addEventListener("submit", save);
    $("#settings-reload").addEventListener("click", () => {
      say($("#settings-message"), "");
      showWarnings([]);
      load();
    });
  }
  return load();
}
