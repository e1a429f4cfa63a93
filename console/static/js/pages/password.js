// First login with a generated password: choose your own before anything else. The server refuses every other
// route (403 password_change_required) until POST /api/v1/auth/password succeeds. Shown right after the login
// form (which passes the password just typed) or, after a reload, on its own (then it asks for it again).
import * as api from "../api.js";
import { h } from "../dom.js";
import { loadMe, session } from "../state.js";

const MIN_LENGTH = 12;

/** Replace `main` with the change form; `current` is the password typed at the login form, if any. */
export function show(main, { current = "" } = {}) {
  const error = h("p", { class: "form-error", role: "alert", id: "password-change-error" });
  const currentField = current ? null : h("input", { id: "current-password", name: "current-password",
    type: "password", autocomplete: "current-password", required: true });
  const fresh = h("input", { id: "new-password", name: "new-password", type: "password",
    autocomplete: "new-password", required: true, minlength: String(MIN_LENGTH) });
  const repeat = h("input", { id: "new-password-repeat", name: "new-password-repeat", type: "password",
    autocomplete: "new-password", required: true });
  const submit = h("button", { type: "submit", class: "primary", id: "password-change-submit" }, "Set password");
  const form = h("form", { class: "login-form", id: "password-change", novalidate: true, onsubmit: async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    if (fresh.value.length < MIN_LENGTH) {
      error.textContent = `The new password needs at least ${MIN_LENGTH} characters.`;
      fresh.focus();
      return;
    }
    if (fresh.value !== repeat.value) {
      error.textContent = "The two new passwords do not match.";
      repeat.focus();
      return;
    }
    submit.disabled = true;
    try {
      await api.post("/api/v1/auth/password",
        { current_password: currentField ? currentField.value : current, new_password: fresh.value });
      await loadMe();
      window.dispatchEvent(new Event("helpline:login"));
    } catch (err) {
      error.textContent = err.message;
    } finally {
      submit.disabled = false;
    }
  } },
  h("h1", {}, "Choose your password"),
  h("p", { class: "muted" }, `Welcome, ${session.me ? session.me.user.username : ""}. Your password was generated `
    + "by an administrator: choose your own before you continue. It logs out your other sessions and revokes "
    + "your API tokens."),
  currentField && h("label", { for: "current-password" }, "Current password"), currentField,
  h("label", { for: "new-password" }, `New password (at least ${MIN_LENGTH} characters)`), fresh,
  h("label", { for: "new-password-repeat" }, "New password again"), repeat,
  error, submit,
  h("button", { type: "button", class: "link", id: "password-change-logout", onclick: logout }, "Log out instead"));
  main.replaceChildren(h("section", { class: "login-page" }, form));
  (currentField || fresh).focus();
}

async function logout() {
  try { await api.post("/api/v1/auth/logout"); } catch (err) { /* the session may be gone already */ }
  session.me = null;
  api.setCsrf(null);
  if (location.hash === "#/login") window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = "#/login";
}
