// Settings: every field the API describes (GET /api/v1/llm-settings/fields), where its value
// comes from, the models discovery offers, and saving with PATCH /api/v1/llm-settings.
// A new provider or field arrives as data from the API: nothing here names one.

import { api } from "./api.js";
import { $, busy, h, say } from "./dom.js";

const SOURCE_WORDS = { database: "saved", environment: "from the environment", unset: "not set" };
let fields = [];
let discoveries = new Map(); // discovery URL -> Promise of the detail body

function describeModel(model) {
  const parts = [];
  if (model.state) parts.push(model.state === "loaded" ? "loaded" : "not loaded");
  if (model.max_context_length) parts.push(`${model.max_context_length.toLocaleString("en-US")} tokens`);
  if (model.type && model.type !== "llm") parts.push(model.type);
  return parts.length ? `${model.id} — ${parts.join(" · ")}` : model.id;
}

function discover(url) {
  if (!discoveries.has(url)) discoveries.set(url, api(url));
  return discoveries.get(url);
}

function providerControl(field, id) {
  return h(
    "select",
    { id, name: field.name },
    field.choices.map((choice) =>
      h("option", { value: choice.value, selected: choice.value === field.value }, `${choice.label} (${choice.value})`),
    ),
  );
}

function textControl(field, id) {
  return h("input", { id, name: field.name, value: field.value ?? "", placeholder: "model name", autocomplete: "off" });
}

function modelControl(field, id, note) {
  if (!field.discovery) return textControl(field, id);
  const select = h("select", { id, name: field.name, disabled: true }, h("option", { value: field.value ?? "" }, field.value ?? "Loading models…"));
  note.textContent = "Asking the provider for its models…";
  discover(field.discovery)
    .then((detail) => {
      const options = detail.models.map((model) =>
        h("option", { value: model.id, selected: model.id === field.value }, describeModel(model)),
      );
      if (field.value && !detail.models.some((model) => model.id === field.value)) {
        options.unshift(h("option", { value: field.value, selected: true }, `${field.value} — not on the server`));
      }
      if (!field.value) options.unshift(h("option", { value: "", selected: true }, "— choose a model —"));
      select.replaceChildren(...options);
      select.disabled = false;
      const loaded = detail.loaded.length;
      note.classList.toggle("error", Boolean(detail.message));
      note.textContent = detail.message ?? `${detail.models.length} models at ${detail.base_url}, ${loaded} loaded.`;
    })
    .catch((error) => {
      // Discovery failed (server down, too old…): say why, and let the admin type a name.
      const input = textControl(field, id);
      select.replaceWith(input);
      note.classList.add("error");
      note.textContent = `${error.message} You can still type a model name.`;
    });
  return select;
}

function render() {
  const container = $("#settings-fields");
  container.replaceChildren(
    ...fields.map((field) => {
      const id = `setting-${field.name}`;
      const note = h("p", { className: "note", id: `${id}-note` });
      const control = field.kind === "provider" ? providerControl(field, id) : modelControl(field, id, note);
      control.setAttribute("aria-describedby", note.id);
      return h(
        "div",
        { className: "field", dataset: { field: field.name } },
        h(
          "div",
          { className: "field-head" },
          h("label", { htmlFor: id }, field.label),
          h("span", { className: "source" }, `${SOURCE_WORDS[field.source] ?? field.source} · ${field.env}`),
        ),
        control,
        note,
      );
    }),
  );
}

async function load() {
  discoveries = new Map();
  const message = $("#settings-message");
  try {
    fields = await api("/api/v1/llm-settings/fields");
    render();
  } catch (error) {
    say(message, error.message, "error");
  }
}

async function save(event) {
  event.preventDefault();
  const message = $("#settings-message");
  const changes = {};
  for (const field of fields) {
    const control = document.getElementById(`setting-${field.name}`);
    const value = control?.value.trim();
    if (value && value !== field.value) changes[field.name] = value;
  }
  if (!Object.keys(changes).length) {
    say(message, "Nothing changed.", "info");
    return;
  }
  await busy($("#settings-save"), "Saving…", async () => {
    try {
      const saved = await api("/api/v1/llm-settings", { method: "PATCH", json: changes });
      say(message, `Saved: ${saved.provider} with model ${saved.model ?? "(none)"}. The next call uses it.`);
      await load();
    } catch (error) {
      say(message, error.message, "error");
    }
  });
}

export function initSettings({ first }) {
  if (first) {
    $("#settings-form").addEventListener("submit", save);
    $("#settings-reload").addEventListener("click", () => {
      say($("#settings-message"), "");
      load();
    });
  }
  return load();
}
