// Passkeys in the browser (WebAuthn): register one, answer the login's passkey step, approve a
// document, prove a technician statement. No build step; every byte that is signed is computed here.
//
// The challenge of an approval is SHA-256("helpline-authority-v1/" + kind + "\0" + body), computed
// with SubtleCrypto over the exact body text the page shows (protocol/authority.py
// webauthn_challenge): the server cannot make this page sign a body other than the one it displays.
// It can still choose what to display — see README "Passkeys": `helpline approve` is the strong path.
import * as api from "./api.js";

const encoder = new TextEncoder();

// --- bytes ---------------------------------------------------------------------------------

export function fromB64url(text) {
  const b64 = String(text).replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

function toBinary(buffer) {
  const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  let raw = "";
  for (const b of bytes) raw += String.fromCharCode(b);
  return raw;
}

export const toB64url = (buffer) => btoa(toBinary(buffer)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
/** Standard base64 with padding: how protocol/authority.py carries assertion fields. */
export const toB64 = (buffer) => btoa(toBinary(buffer));
export const hex = (buffer) => Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

/** The bytes every signature over `kind` starts with (NUL-terminated). */
export function domainPrefix(kind) {
  return encoder.encode(`helpline-authority-v1/${kind}\0`);
}

/** protocol.authority.webauthn_challenge(kind, body): SHA-256 over the prefix and the body's UTF-8. */
export async function webauthnChallenge(kind, body) {
  const prefix = domainPrefix(kind);
  const text = encoder.encode(body);
  const both = new Uint8Array(prefix.length + text.length);
  both.set(prefix);
  both.set(text, prefix.length);
  return sha256(both);
}

/** SHA-256 hex of a body's text (protocol.authority.body_sha256: what approvers compare). */
export async function bodySha256(body) {
  return hex(await sha256(encoder.encode(body)));
}

/** A fingerprint in groups of four, as people read it aloud. */
export const grouped = (fingerprint) => String(fingerprint).match(/.{1,4}/g).join(" ");

// --- WebAuthn JSON -------------------------------------------------------------------------

function descriptors(list) {
  return (list || []).map((c) => ({ ...c, id: fromB64url(c.id) }));
}

function registrationJson(credential) {
  const r = credential.response;
  return { id: credential.id, rawId: toB64url(credential.rawId), type: credential.type,
    response: { clientDataJSON: toB64url(r.clientDataJSON), attestationObject: toB64url(r.attestationObject) },
    clientExtensionResults: credential.getClientExtensionResults() };
}

function assertionJson(credential) {
  const r = credential.response;
  return { id: credential.id, rawId: toB64url(credential.rawId), type: credential.type,
    response: { clientDataJSON: toB64url(r.clientDataJSON), authenticatorData: toB64url(r.authenticatorData),
      signature: toB64url(r.signature), userHandle: r.userHandle ? toB64url(r.userHandle) : null },
    clientExtensionResults: credential.getClientExtensionResults() };
}

/**
 * The fingerprint of the new key, computed here from the authenticator's own answer: SHA-256 of the
 * COSE key, which fills authenticatorData after the fixed-size fields (rpIdHash 32, flags 1,
 * counter 4, AAGUID 16, id length 2, id) when there are no extensions. Null when it cannot be told.
 */
async function localFingerprint(response) {
  if (typeof response.getAuthenticatorData !== "function") return null;
  const data = new Uint8Array(response.getAuthenticatorData());
  const AT = 0x40, ED = 0x80;
  if (data.length < 55 || !(data[32] & AT) || (data[32] & ED)) return null;
  const idLength = (data[53] << 8) | data[54];
  return hex(await sha256(data.slice(55 + idLength)));
}

// --- registration and login ------------------------------------------------------------------

/** Register a passkey; resolves to { passkey, localFingerprint, matches } (matches: server agrees, or null). */
export async function register(label) {
  const begun = await api.post("/api/v1/passkeys/register/begin");
  const o = begun.options;
  const publicKey = { ...o, challenge: fromB64url(o.challenge), user: { ...o.user, id: fromB64url(o.user.id) },
    excludeCredentials: descriptors(o.excludeCredentials) };
  const credential = await navigator.credentials.create({ publicKey });
  const local = await localFingerprint(credential.response);
  const passkey = await api.post("/api/v1/passkeys/register/finish",
    { registration_id: begun.registration_id, label, credential: registrationJson(credential) });
  return { passkey, localFingerprint: local, matches: local === null ? null : local === passkey.fingerprint };
}

/** Answer the login's passkey step (`passkey` from the password step's answer); resolves to the login body. */
export async function loginWithPasskey(passkey) {
  const o = passkey.options;
  const credential = await navigator.credentials.get({ publicKey: { ...o, challenge: fromB64url(o.challenge),
    allowCredentials: descriptors(o.allowCredentials) } });
  return api.post("/api/v1/auth/login/passkey", { ticket: passkey.ticket, credential: assertionJson(credential) },
    { quiet401: true });
}

// --- signing ----------------------------------------------------------------------------------

/** My passkeys this page can use: active, for a relying party this host belongs to. */
async function usablePasskeys() {
  const host = location.hostname;
  const { items } = await api.get("/api/v1/passkeys");
  const mine = (items || []).filter((p) => !p.revoked_at && (p.rp_id === host || host.endsWith(`.${p.rp_id}`)));
  if (!mine.length) throw new Error("Register a passkey on My account first (and have it certified).");
  return mine.filter((p) => p.rp_id === mine[0].rp_id);
}

async function sign(kind, body) {
  const mine = await usablePasskeys();
  const challenge = await webauthnChallenge(kind, body);
  const credential = await navigator.credentials.get({ publicKey: { challenge, rpId: mine[0].rp_id,
    allowCredentials: mine.map((p) => ({ type: "public-key", id: fromB64url(p.webauthn_id) })),
    userVerification: "required", timeout: 120000 } });
  const { approval } = await api.post("/api/v1/passkeys/assertions",
    { kind, body, credential: assertionJson(credential) });
  // The server re-packs the assertion; it must carry exactly the authenticator's bytes.
  const r = credential.response;
  const s = approval.signature || {};
  if (s.type !== "webauthn" || s.authenticator_data !== toB64(r.authenticatorData)
      || s.client_data_json !== toB64(r.clientDataJSON) || s.signature !== toB64(r.signature)) {
    throw new Error("the server's approval does not carry this passkey's signature");
  }
  return approval;
}

/** An Approval (protocol.authority) of `body` — the document's exact canonical text — as a `kind`. */
export async function signDocument(kind, body) {
  if (!["grant", "task", "fix", "release", "approver_set"].includes(kind)) throw new Error(`not a document kind: ${kind}`);
  return sign(kind, body);
}

const STATEMENT_FIELDS = ["action", "device_id", "document_id", "nonce", "signed_at"];

/**
 * A TechnicianProof answering a device's challenge: `statement` = { nonce, device_id, action, document_id }.
 * The server writes the canonical text (signed_at = its clock); this page checks every field before signing.
 */
export async function signTechnicianStatement(statement) {
  const wanted = { nonce: statement.nonce, device_id: statement.device_id, action: statement.action,
    document_id: statement.document_id };
  const { body } = await api.post("/api/v1/passkeys/statements", wanted);
  const parsed = JSON.parse(body);
  const keys = Object.keys(parsed).sort();
  if (keys.join() !== STATEMENT_FIELDS.join() || Object.entries(wanted).some(([k, v]) => parsed[k] !== v)
      || typeof parsed.signed_at !== "number" || Math.abs(parsed.signed_at - Date.now() / 1000) > 300) {
    throw new Error("the server's statement is not the one asked for; not signed");
  }
  return { body, approval: await sign("technician_proof", body) };
}
