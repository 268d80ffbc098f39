// Users (admins only): list, create, deactivate, reset a password.

import { api } from "./api.js";
import { $, badge, busy, fillTable, h, say } from "./dom.js";

let me = null;

let resetting = null; // the user whose password the dialog is for

function openReset(user) {
  resetting = user;
  $("#reset-who").textContent = user.email;
  $("#reset-password").value = "";
  $("#reset-dialog").showModal();
}

async function saveReset(event) {
  event.preventDefault();
  const user = resetting;
  const password = $("#reset-password").value;
  $("#reset-dialog").close();
  await busy($("#reset-save"), "Saving…", async () => {
    try {
      await api(`/api/v1/users/${user.id}`, { method: "PATCH", json: { password } });
      say($("#users-message"), `Password of ${user.email} reset.`);
    } catch (error) {
      say($("#users-message"), error.message, "error");
    }
  });
}

async function deactivate(user, button) {
  await busy(button, "Deactivating…", async () => {
    try {
      await api(`/api/v1/users/${user.id}`, { method: "DELETE" });
      say($("#users-message"), `${user.email} can no longer log in.`);
    } catch (error) {
      say($("#users-message"), error.message, "error");
    }
  });
  await refresh();
}

function row(user) {
  const reset = h("button", { type: "button", className: "ghost small", "aria-label": `Reset password of ${user.email}` }, "Reset password");
  reset.addEventListener("click", () => openReset(user));
  const off = h("button", { type: "button", className: "danger small", "aria-label": `Deactivate ${user.email}` }, "Deactivate");
  off.addEventListener("click", () => deactivate(user, off));
  const self = me && user.id === me.id;
  return h(
    "tr",
    { dataset: { email: user.email } },
    h("td", {}, user.email, user.full_name ? h("div", { className: "hint" }, user.full_name) : null),
    h("td", { className: "hide-narrow" }, user.is_superuser ? badge("admin", "accent") : badge("user")),
    h("td", {}, user.is_active ? badge("active", "ok") : badge("inactive", "bad")),
    h("td", { className: "actions-cell" }, reset, user.is_active && !self ? off : null),
  );
}

async function refresh() {
  try {
    const page = await api("/api/v1/users?limit=500");
    fillTable($("#users-table tbody"), page.data.map(row), "No users.", 4);
  } catch (error) {
    say($("#users-message"), error.message, "error");
  }
}

async function create(event) {
  event.preventDefault();
  const message = $("#users-message");
  const body = {
    email: $("#user-email").value.trim(),
    password: $("#user-password").value,
    is_superuser: $("#user-admin").checked,
  };
  const name = $("#user-name").value.trim();
  if (name) body.full_name = name;
  await busy($("#user-create"), "Creating…", async () => {
    try {
      const user = await api("/api/v1/users", { method: "POST", json: body });
      say(message, `Created ${user.email}.`);
      event.target.reset();
      await refresh();
    } catch (error) {
      say(message, error.message, "error");
    }
  });
}

export function initUsers({ first, user }) {
  me = user;
  if (first) {
    $("#user-form").addEventListener("submit", create);
    $("#reset-form").addEventListener("submit", saveReset);
    $("#reset-cancel").addEventListener("click", () => $("#reset-dialog").close());
  }
  return refresh();
}
