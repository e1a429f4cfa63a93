// Login: username + password + TOTP code; first login after (re)set shows the QR code to enroll;
// a generated password is then replaced by one the user chooses (pages/password.js).
import * as api from "../api.js";
import { h } from "../dom.js";
import { setLoggedIn } from "../state.js";
import * as passwordChange from "./password.js";

export async function show(main) {
  const error = h("p", { class: "form-error", role: "alert", id: "login-error" });
  const enroll = h("div", { class: "enroll", id: "totp-enroll", hidden: true });
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
      setLoggedIn(body);
      if (body.user && body.user.must_change_password) {
        passwordChange.show(main, { current: password.value });
        return;
      }
      window.dispatchEvent(new Event("helpline:login"));
    } catch (err) {
      if (err.code === "totp_enrollment_required" && err.body && err.body.enrollment) {
        showEnrollment(enroll, err.body.enrollment);
        code.value = "";
        code.focus();
        return;
      } else if (err.code === "totp_required") {
        code.focus();
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
  error, submit);
  main.append(h("section", { class: "login-page" }, form));
  username.focus();
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
