// Login: username + password + TOTP code; first login after (re)set shows the QR code to enroll;
// a generated password is then replaced by one the user chooses (pages/password.js). A user with a
// passkey may use it instead of the code: the password alone earns the passkey step.
import * as api from "../api.js";
import { h } from "../dom.js";
import { setLoggedIn } from "../state.js";
import * as passwordChange from "./password.js";
import { loginWithPasskey } from "../passkeys.js";

export async function show(main) {
  const error = h("p", { class: "form-error", role: "alert", id: "login-error" });
  const enroll = h("div", { class: "enroll", id: "totp-enroll", hidden: true });
  const passkey = h("div", { class: "passkey-login", id: "passkey-login", hidden: true });
  const username = h("input", { id: "username", name: "username", autocomplete: "username", required: true });
  const password = h("input", { id: "password", name: "password", type: "password",
    autocomplete: "current-password", required: true });
  const code = h("input", { id: "totp", name: "totp", inputmode: "numeric", autocomplete: "one-time-code",
    pattern: "[0-9 ]{6,7}", maxlength: "7", placeholder: "123456" });
  const submit = h("button", { type: "submit", class: "primary", id: "login-submit" }, "Log in");
  const form = h("form", { class: "login-form", onsubmit: async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    try {
      const body = await api.post("/api/v1/auth/login",
        { username: username.value, password: password.value, totp: code.value.replace(/\s/g, "") },
        { quiet401: true });
      loggedIn(main, body, password.value);
    } catch (err) {
      if (err.code === "totp_enrollment_required" && err.body && err.body.enrollment) {
        showEnrollment(enroll, err.body.enrollment);
        code.value = "";
        code.focus();
        return;
      } else if (err.code === "totp_required") {
        code.focus();
        offerPasskey(passkey, err.body && err.body.passkey, error, (body) => loggedIn(main, body, password.value));
      }
      error.textContent = err.message;
    } finally {
      submit.disabled = false;
    }
  } },
  h("h1", {}, "Helpline console"),
  h("label", { for: "username" }, "Username"), username,
  h("label", { for: "password" }, "Password"), password,
  enroll,
  h("label", { for: "totp" }, "Authenticator code"), code,
  error, submit, passkey);
  main.append(h("section", { class: "login-page" }, form));
  username.focus();
}

/** Logged in: the console, or first the change a generated password needs. */
function loggedIn(main, body, currentPassword) {
  setLoggedIn(body);
  if (body.user && body.user.must_change_password) {
    passwordChange.show(main, { current: currentPassword });
    return;
  }
  window.dispatchEvent(new Event("helpline:login"));
}

/** The password was right and the user has a passkey: one button answers the passkey step (single-use ticket). */
function offerPasskey(box, offer, error, done) {
  if (!offer) { box.hidden = true; return; }
  const button = h("button", { type: "button", class: "primary", id: "login-passkey", onclick: async () => {
    error.textContent = "";
    button.disabled = true;
    try {
      done(await loginWithPasskey(offer));
    } catch (err) {
      error.textContent = err.name === "NotAllowedError" ? "Passkey cancelled." : err.message;
      box.hidden = true;  // the ticket is used up: the password step again, or the code
    }
  } }, "Use my passkey instead");
  box.replaceChildren(h("p", { class: "muted" }, "Password accepted: confirm with your passkey, or enter the code."),
    button);
  box.hidden = false;
  button.focus();
}

function showEnrollment(box, enrollment) {
  const blob = new Blob([enrollment.qr_svg], { type: "image/svg+xml" });
  const img = h("img", { src: URL.createObjectURL(blob), alt: "QR code for your authenticator app", width: 205,
    height: 205, id: "totp-qr" });
  box.replaceChildren(
    h("p", {}, "Set up two-factor authentication: scan this code with an authenticator app, then enter the "
      + "6-digit code it shows."),
    img,
    h("p", { class: "muted" }, "Or type this key: ", h("code", { id: "totp-secret" }, enrollment.secret)));
  box.hidden = false;
}
