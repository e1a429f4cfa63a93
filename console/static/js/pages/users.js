// Users and groups (admins): create accounts, disable, reset password/TOTP, unlock, rights per group.
import * as api from "../api.js";
import { badge, clear, fmtTime, h, text, toast, unavailable } from "../dom.js";
import { session } from "../state.js";

export async function show(main) {
  const usersBox = h("div", { id: "users-list" });
  const groupsBox = h("div", { id: "groups-list" });
  main.append(h("section", { class: "page" },
    h("div", { class: "page-head" }, h("h1", {}, "Users & groups")),
    newUserForm(() => load(usersBox, groupsBox)), usersBox,
    h("h2", {}, "Device groups"), newGroupForm(() => load(usersBox, groupsBox)), groupsBox));
  await load(usersBox, groupsBox);
}

function newUserForm(reload) {
  const name = h("input", { id: "new-username", required: true, placeholder: "username", "aria-label": "Username" });
  const role = h("select", { id: "new-role", "aria-label": "Role" }, ["technician", "viewer", "admin"].map((r) => h("option", { value: r }, r)));
  const out = h("div", { class: "one-time", id: "new-user-secret", hidden: true });
  return h("form", { class: "card inline", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const res = await api.post("/api/v1/users", { username: name.value, role: role.value });
      out.replaceChildren(h("strong", {}, `Password for ${res.user.username} (shown once): `), h("code", {}, res.password),
        h("span", { class: "muted" }, " — at first login they set up their authenticator (QR code) and choose their own password."));
      out.hidden = false;
      name.value = "";
      reload();
    } catch (err) { toast(err.message, "error"); }
  } }, h("h2", {}, "New user"), name, role, h("button", { type: "submit", class: "primary" }, "Create"), out);
}

function newGroupForm(reload) {
  const name = h("input", { id: "new-group", required: true, placeholder: "group name", "aria-label": "Group name" });
  return h("form", { class: "inline", onsubmit: async (ev) => {
    ev.preventDefault();
    try { await api.post("/api/v1/groups", { name: name.value }); name.value = ""; reload(); } catch (err) { toast(err.message, "error"); }
  } }, name, h("button", { type: "submit" }, "Add group"));
}

async function load(usersBox, groupsBox) {
  let users, groups;
  try {
    [users, groups] = await Promise.all([api.get("/api/v1/users"), api.get("/api/v1/groups")]);
  } catch (err) {
    clear(usersBox).append(unavailable("Users", err));
    return;
  }
  const allRights = (session.me && session.me.all_rights) || [];
  clear(groupsBox).append(h("ul", { class: "plain" }, groups.items.map((g) => h("li", {}, text(g.name), h("span", { class: "muted" }, ` — ${g.devices} device(s)`)))));
  clear(usersBox).append(h("div", { class: "table-wrap" }, h("table", { class: "grid users" },
    h("thead", {}, h("tr", {}, ["User", "Role", "State", "Last login", "Rights per group", ""].map((c) => h("th", {}, c)))),
    h("tbody", {}, users.items.map((u) => h("tr", { dataset: { user: u.username } },
      h("td", {}, text(u.username)), h("td", {}, badge(u.role)),
      h("td", {}, u.disabled ? badge("disabled") : u.locked ? badge("locked") : badge("active"),
        u.totp_enrolled ? "" : h("span", { class: "muted" }, " (no TOTP yet)")),
      h("td", {}, fmtTime(u.last_login)),
      h("td", {}, rightsEditor(u, groups.items, allRights, () => load(usersBox, groupsBox))),
      h("td", { class: "row-actions" },
        h("button", { type: "button", onclick: () => act(u, u.disabled ? "enable" : "disable", usersBox, groupsBox) }, u.disabled ? "Enable" : "Disable"),
        h("button", { type: "button", onclick: () => act(u, "reset-password", usersBox, groupsBox) }, "Reset password"),
        h("button", { type: "button", onclick: () => act(u, "reset-totp", usersBox, groupsBox) }, "Reset TOTP"),
        u.locked ? h("button", { type: "button", onclick: () => act(u, "unlock", usersBox, groupsBox) }, "Unlock") : null)))))));
}

function rightsEditor(user, groups, allRights, reload) {
  if (user.role === "admin") return h("span", { class: "muted" }, "all rights on all groups");
  const box = h("div", { class: "rights" });
  for (const [group, rights] of Object.entries(user.groups || {})) {
    box.append(h("div", { class: "rights-row" }, h("strong", {}, group === "*" ? "all groups" : group), ": ",
      allRights.map((r) => h("label", { class: "check small" }, h("input", { type: "checkbox", checked: rights.includes(r),
        onchange: async (ev) => {
          const next = ev.target.checked ? [...new Set([...rights, r])] : rights.filter((x) => x !== r);
          try { await api.put(`/api/v1/users/${encodeURIComponent(user.id)}/rights/${encodeURIComponent(group)}`, { rights: next }); reload(); } catch (err) { toast(err.message, "error"); }
        } }), r.replaceAll("_", " "))),
      h("button", { type: "button", class: "link", onclick: async () => {
        try { await api.del(`/api/v1/users/${encodeURIComponent(user.id)}/rights/${encodeURIComponent(group)}`); reload(); } catch (err) { toast(err.message, "error"); }
      } }, "remove")));
  }
  const free = groups.filter((g) => !(g.name in (user.groups || {})));
  const pick = h("select", { "aria-label": "Add group" }, h("option", { value: "" }, "+ group…"),
    h("option", { value: "*" }, "all groups"), free.map((g) => h("option", { value: g.name }, g.name)));
  pick.addEventListener("change", async () => {
    if (!pick.value) return;
    try { await api.put(`/api/v1/users/${encodeURIComponent(user.id)}/rights/${encodeURIComponent(pick.value)}`, { rights: null }); reload(); } catch (err) { toast(err.message, "error"); }
  });
  box.append(pick);
  return box;
}

async function act(user, action, usersBox, groupsBox) {
  if (["disable", "reset-password", "reset-totp"].includes(action) && !confirm(`${action.replace("-", " ")} ${user.username}?`)) return;
  try {
    const res = await api.post(`/api/v1/users/${encodeURIComponent(user.id)}/${action}`);
    if (res.password) toast(`New password for ${user.username} (shown once; they choose their own at next login): ${res.password}`);
    else toast(`${user.username}: ${action} done.`);
  } catch (err) { toast(err.message, "error"); }
  await load(usersBox, groupsBox);
}
