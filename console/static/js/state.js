// Who is logged in and what they may do (from GET /api/v1/auth/me).
import * as api from "./api.js";

export const session = { me: null };

export async function loadMe() {
  try {
    session.me = await api.get("/api/v1/auth/me", undefined, { quiet401: true });
    api.setCsrf(session.me.csrf_token);
  } catch (err) {
    if (err.status !== 401) throw err;
    session.me = null;
    api.setCsrf(null);
  }
  return session.me;
}

export function setLoggedIn(body) {
  session.me = { ...body, is_admin: Boolean(body.rights && body.rights["*"] && body.rights["*"].includes("administer")) };
  api.setCsrf(body.csrf_token);
}

/** Does the user hold `right` on `group` (or on any group when group is undefined)? */
export function can(right, group) {
  const rights = (session.me && session.me.rights) || {};
  if ((rights["*"] || []).includes(right)) return true;
  if (group === undefined) return Object.values(rights).some((r) => r.includes(right));
  return (rights[group] || []).includes(right);
}
