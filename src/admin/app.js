// The review page: calls the admin API with the organisation's bearer
// token. Everything shown goes into the DOM as text (textContent), never
// as markup, so a hostile name in the log cannot inject anything.
"use strict";

const state = { token: null, org: null, cursors: [], next: null };
const $ = (id) => document.getElementById(id);

function api(path) {
  return fetch(path, { headers: { Authorization: "Bearer " + state.token } })
    .then(async (r) => {
      const body = r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text();
      if (!r.ok) throw new Error((body && body.error) || r.status + " " + r.statusText);
      return body;
    });
}

function params(extra) {
  const p = new URLSearchParams();
  for (const k of ["since", "until", "client", "domain", "category"]) {
    const v = $(k).value.trim();
    if (v) p.set(k, v);
  }
  for (const [k, v] of Object.entries(extra || {})) if (v) p.set(k, v);
  return p.toString();
}

function fill(tableId, rows) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = body.insertRow();
    const td = tr.insertCell();
    td.colSpan = $(tableId).tHead.rows[0].cells.length;
    td.textContent = "none";
    return;
  }
  for (const row of rows) {
    const tr = body.insertRow();
    for (const cell of row) tr.insertCell().textContent = cell == null ? "" : String(cell);
  }
}

function chart(timeline) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const w = 760, h = 200, pad = 30;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Blocked queries per day");
  const max = Math.max(1, ...timeline.map((d) => d.hits));
  const bar = (w - 2 * pad) / Math.max(1, timeline.length);
  timeline.forEach((d, i) => {
    const r = document.createElementNS(ns, "rect");
    const bh = (d.hits / max) * (h - 2 * pad);
    r.setAttribute("x", pad + i * bar);
    r.setAttribute("y", h - pad - bh);
    r.setAttribute("width", Math.max(1, bar * 0.8));
    r.setAttribute("height", bh);
    const t = document.createElementNS(ns, "title");
    t.textContent = `${d.day}: ${d.hits}`;
    r.appendChild(t);
    svg.appendChild(r);
  });
  const label = (x, y, text, anchor) => {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", x);
    t.setAttribute("y", y);
    if (anchor) t.setAttribute("text-anchor", anchor);
    t.textContent = text;
    svg.appendChild(t);
  };
  label(2, 14, String(max));
  if (timeline.length) {
    label(pad, h - 8, timeline[0].day);
    label(w - pad, h - 8, timeline[timeline.length - 1].day, "end");
  }
  $("chart").replaceChildren(svg);
}

function showError(e) {
  $("error").textContent = e ? String(e.message || e) : "";
}

async function loadReport() {
  const r = await api(`/api/v1/orgs/${encodeURIComponent(state.org)}/report?` + params());
  $("totals").textContent =
    `${r.total} blocked queries, ${r.distinct_names} names, ${r.distinct_clients} clients, ${r.since} to ${r.until}`;
  chart(r.timeline);
  fill("names", r.top_names.map((n) => [n.name, n.category, n.hits, n.clients, n.first_seen, n.last_seen]));
  fill("clients", r.top_clients.map((c) => [c.client, c.hits, c.names, c.first_seen, c.last_seen]));
  fill("categories", r.by_category.map((c) => [c.category, c.feed, c.hits]));
}

async function loadHits(after) {
  const page = await api(`/api/v1/orgs/${encodeURIComponent(state.org)}/hits?` + params({ after, limit: "50" }));
  // A record coalesced from a flood stands for `repeats` queries.
  fill("hits", page.hits.map((h) => [h.id, h.ts, h.client, h.qname, h.qtype, h.stage, h.matched, h.feed, h.category, h.action,
    h.repeats ? `${h.repeats} (to ${h.last_ts})` : "1", h.node || ""]));
  state.next = page.next;
  $("older").disabled = !page.next;
  $("page").textContent = `page ${state.cursors.length + 1}`;
}

async function refresh() {
  showError(null);
  state.org = $("org").value;
  state.cursors = [];
  try {
    await Promise.all([loadReport(), loadHits(null)]);
  } catch (e) {
    showError(e);
  }
}

async function signIn(token) {
  state.token = token;
  try {
    const me = await api("/api/v1/whoami");
    sessionStorage.setItem("portcullis-token", token);
    $("who").textContent = me.operator ? "Operator: all organisations" : `Organisation: ${me.orgs[0].name}`;
    const select = $("org");
    select.replaceChildren();
    for (const o of me.orgs) {
      const opt = document.createElement("option");
      opt.value = o.id;
      opt.textContent = `${o.name} (${o.id})`;
      select.appendChild(opt);
    }
    select.disabled = me.orgs.length < 2;
    $("login").hidden = true;
    $("app").hidden = false;
    await refresh();
  } catch (e) {
    sessionStorage.removeItem("portcullis-token");
    $("login").hidden = false;
    $("app").hidden = true;
    $("who").textContent = "";
    showError(e);
  }
}

async function download() {
  try {
    const html = await api(`/api/v1/orgs/${encodeURIComponent(state.org)}/report?` + params({ format: "html" }));
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([html], { type: "text/html" }));
    a.download = `portcullis-report-${state.org}.html`;
    a.click();
    URL.revokeObjectURL(a.href);
  } catch (e) {
    showError(e);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin").addEventListener("click", () => signIn($("token").value.trim()));
  $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") signIn($("token").value.trim()); });
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); refresh(); });
  $("org").addEventListener("change", refresh);
  $("signout").addEventListener("click", () => { sessionStorage.removeItem("portcullis-token"); location.reload(); });
  $("download").addEventListener("click", download);
  $("newest").addEventListener("click", () => { state.cursors = []; loadHits(null).catch(showError); });
  $("older").addEventListener("click", () => {
    if (!state.next) return;
    state.cursors.push(state.next);
    loadHits(state.next).catch(showError);
  });
  // A link may carry the token in the fragment (never sent to a server);
  // it is moved to session storage and taken out of the address bar.
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get("token") || sessionStorage.getItem("portcullis-token");
  if (fragment.has("token")) history.replaceState(null, "", location.pathname);
  if (token) signIn(token);
});
