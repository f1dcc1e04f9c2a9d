// The operator console: users, groups, who is online, live charts from the services' metrics, rejected
// messages and the effective configuration. Administrators only: the API checks the role on every
// /v1/admin route, and the page shows nothing of the console to anyone else.
import { call, el, login, session } from "/shared/http.js";
import { Charts } from "/console/charts.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 2000;
let me = null;
let charts = null;

function report(where, action) {
  return async (...args) => {
    $(where).textContent = "";
    try { await action(...args); } catch (error) { $(where).textContent = error.message; }
  };
}

async function loadUsers() {
  const { users } = await call("GET", "/v1/admin/users");
  $("users").replaceChildren(...users.map((user) => {
    const name = user.name;
    const path = `/v1/admin/users/${encodeURIComponent(name)}`;
    const password = el("input", { type: "password", "aria-label": `new password for ${name}` });
    const own = name === me.name || user.role === "service";
    const deleteButton = el("button", { type: "button", class: "plain", "aria-label": `delete ${name}`, text: "Delete" });
    deleteButton.addEventListener("click", report("users-error", async () => {
      if (deleteButton.dataset.armed !== "yes") { deleteButton.dataset.armed = "yes"; deleteButton.textContent = "Really delete?"; return; }
      await call("DELETE", path);
      await loadUsers();
    }));
    return el("tr", { "data-user": name },
      el("td", { text: name }), el("td", { text: user.role }), el("td", { class: "state", text: user.disabled ? "disabled" : "active" }),
      el("td", {}, own ? "" : el("span", {},
        el("button", { type: "button", class: "plain", "aria-label": `${user.disabled ? "enable" : "disable"} ${name}`, text: user.disabled ? "Enable" : "Disable",
          onclick: report("users-error", async () => { await call("PATCH", path, { disabled: !user.disabled }); await loadUsers(); }) }),
        " ", password,
        el("button", { type: "button", class: "plain", "aria-label": `reset the password of ${name}`, text: "Reset password",
          onclick: report("users-error", async () => { await call("POST", `${path}/password`, { password: password.value }); password.value = ""; $("users-error").textContent = `password of ${name} reset`; }) }),
        " ", deleteButton)));
  }));
}

async function loadGroups() {
  const { groups } = await call("GET", "/v1/admin/groups");
  $("groups").replaceChildren(...groups.map((group) => {
    const base = `/v1/admin/groups/${encodeURIComponent(group.name)}/members/`;
    const input = el("input", { "aria-label": `user to add to ${group.name}` });
    return el("li", { class: "group", "data-group": group.name },
      el("strong", { text: group.name }), " ",
      ...group.members.map((member) => el("span", { class: "member" }, member,
        el("button", { type: "button", class: "plain", "aria-label": `remove ${member} from ${group.name}`, text: "×",
          onclick: report("groups-error", async () => { await call("DELETE", base + encodeURIComponent(member)); await loadGroups(); }) }))),
      el("form", { class: "inline", onsubmit: report("groups-error", async (event) => {
        event.preventDefault();
        await call("PUT", base + encodeURIComponent(input.value.trim()));
        await loadGroups();
      }) }, input, el("button", { type: "submit", text: "Add member" })));
  }));
}

async function poll() {
  try {
    charts.add(await call("GET", "/v1/admin/stats"));
    const { users } = await call("GET", "/v1/admin/online");
    $("online").replaceChildren(...(users.length ? users.map((u) => el("li", {}, el("span", { class: "dot online", "aria-hidden": "true" }), u)) : [el("li", { text: "nobody" })]));
    const { rejected } = await call("GET", "/v1/admin/rejected?limit=50");
    $("rejected").replaceChildren(...rejected.map((r) => el("tr", {},
      el("td", { text: new Date(r.received_at).toLocaleString() }), el("td", { text: r.topic }),
      el("td", { text: r.reason }), el("td", { class: "payload", text: r.preview }))));
  } finally { setTimeout(poll, POLL_MS); }
}

async function start() {
  try { me = await call("GET", "/v1/me"); } catch { session.clear(); $("login-form").classList.remove("hidden"); return; }
  $("login-form").classList.add("hidden");
  $("logout").classList.remove("hidden");
  $("me").textContent = `signed in as ${me.name}`;
  if (me.role !== "admin") { $("denied").classList.remove("hidden"); return; }
  $("console").classList.remove("hidden");
  charts = new Charts($("charts"));
  await Promise.all([loadUsers(), loadGroups()]);
  $("config").textContent = JSON.stringify(await call("GET", "/v1/admin/config"), null, 2);
  poll();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  try { await login($("username").value.trim(), $("password").value); $("password").value = ""; await start(); } catch (error) { $("login-error").textContent = error.message; }
});
$("logout").addEventListener("click", () => { session.clear(); location.reload(); });
$("new-user").addEventListener("submit", report("users-error", async (event) => {
  event.preventDefault();
  await call("POST", "/v1/admin/users", { name: $("new-user-name").value.trim(), password: $("new-user-password").value, role: $("new-user-role").value });
  $("new-user-name").value = ""; $("new-user-password").value = "";
  await loadUsers();
}));
$("new-group").addEventListener("submit", report("groups-error", async (event) => {
  event.preventDefault();
  const members = $("new-group-members").value.split(",").map((m) => m.trim()).filter(Boolean);
  await call("POST", "/v1/admin/groups", { name: $("new-group-name").value.trim(), members });
  $("new-group-name").value = ""; $("new-group-members").value = "";
  await loadGroups();
}));

if (session.token) start(); else $("login-form").classList.remove("hidden");
