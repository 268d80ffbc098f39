// The page's entry point: log in, find out who we are, show the sections they may use.

import { api, ApiError, getToken, setToken, setUnauthorizedHandler } from "./api.js";
import { initAudit } from "./audit.js";
import { $, say } from "./dom.js";
import { initKeys } from "./keys.js";
import { initModels } from "./models.js";
import { initProviders } from "./providers.js";
import { initSettings } from "./settings.js";
import { initTry } from "./tryit.js";
import { initUsage } from "./usage.js";
import { initUsers } from "./users.js";

// Each section: who may see it and what to do when it is opened.
const SECTIONS = {
  providers: { admin: true, open: initProviders },
  settings: { admin: true, open: initSettings },
  models: { admin: true, open: initModels },
  try: { admin: false, open: initTry },
  keys: { admin: false, open: initKeys },
  users: { admin: true, open: initUsers },
  usage: { admin: false, open: initUsage },
  audit: { admin: true, open: initAudit },
};

const state = { user: null, opened: new Set() };

function allowed(name) {
  const section = SECTIONS[name];
  return Boolean(section) && (!section.admin || state.user?.is_superuser);
}

function showSection(name) {
  if (!allowed(name)) name = state.user?.is_superuser ? "providers" : "try";
  for (const key of Object.keys(SECTIONS)) {
    $(`#${key}`).hidden = key !== name;
    const link = $(`.tabs a[data-tab="${key}"]`);
    if (key === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const first = !state.opened.has(name);
  state.opened.add(name);
  SECTIONS[name].open({ first, user: state.user });
}

function showLoggedIn(user) {
  state.user = user;
  $("#login-view").hidden = true;
  $("#app-view").hidden = false;
  $("#who").hidden = false;
  $("#who-email").textContent = user.email;
  $("#who-role").textContent = user.is_superuser ? "admin" : "user";
  for (const element of document.querySelectorAll(".tabs [data-admin]")) {
    element.hidden = !user.is_superuser;
  }
  showSection(location.hash.slice(1));
}

function showLoggedOut(message, kind = "error") {
  setToken(null);
  state.user = null;
  state.opened.clear();
  $("#app-view").hidden = true;
  $("#who").hidden = true;
  $("#login-view").hidden = false;
  say($("#login-message"), message, kind);
  $("#login-email").focus();
}

async function logIn(event) {
  event.preventDefault();
  const email = $("#login-email").value.trim();
  const password = $("#login-password").value;
  const message = $("#login-message");
  if (!email || !password) {
    say(message, "Enter your email and password.", "error");
    return;
  }
  const button = $("#login-submit");
  button.disabled = true;
  say(message, "");
  try {
    const token = await api("/api/v1/login/access-token", {
      method: "POST",
      form: { username: email, password },
    });
    setToken(token.access_token);
    $("#login-password").value = "";
    showLoggedIn(await api("/api/v1/users/me"));
  } catch (error) {
    setToken(null);
    const text = error instanceof ApiError ? error.message : String(error);
    say(message, text, "error");
  } finally {
    button.disabled = false;
  }
}

async function start() {
  $("#login-form").addEventListener("submit", logIn);
  $("#logout").addEventListener("click", () => showLoggedOut("You are logged out.", "info"));
  window.addEventListener("hashchange", () => {
    if (state.user) showSection(location.hash.slice(1));
  });
  setUnauthorizedHandler((error) => showLoggedOut(`Please log in again (${error.message}).`));
  if (!getToken()) {
    showLoggedOut("");
    return;
  }
  try {
    showLoggedIn(await api("/api/v1/users/me"));
  } catch (error) {
    showLoggedOut(error.status === 401 ? "" : error.message);
  }
}

start();
