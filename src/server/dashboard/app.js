// retagd's dashboard: which version is in which stage, what waits and why, and approvals that
// send the digest shown. Reads the same JSON API as `retagd status`, every few seconds (with the
// tab's token when the daemon closes its reads). Every value from the API reaches the page as
// text (textContent), never as markup.
"use strict";

const POLL_MS = 3000;
const TOKEN_KEY = "retagd.token";
const $ = (id) => document.getElementById(id);

let pipelines = [];
let freezes = [];
let lastOk = null;
/** Per pipeline: the promotions its registries' records hold, and what they were read for. */
const histories = new Map();
const HISTORY_LIMIT = 8;

/** An element with a class and text. */
function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function shortDigest(d) {
  return d ? d.slice(0, 19) : "";
}

/** "3 min ago", "2 h 5 min ago", "4 d ago". */
function ago(iso) {
  if (!iso) return "";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return "just now";
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min ago`;
  return `${Math.floor(h / 24)} d ago`;
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

/** What a stage's row says: a class for its colour, a line of text, and what to act on. */
function stageState(stage) {
  const action = stage.action || {};
  const p = action.promotion || {};
  const drift = (stage.drift || []).find((d) => d.healed !== true);
  if (drift) {
    return {
      cls: "bad",
      text: `drift: ${drift.tag} was moved outside retagd: it is ${shortDigest(drift.found)}, retagd wrote ${shortDigest(drift.expected)}`,
    };
  }
  if (stage.last_error && ["promote", "pending", "waiting", "frozen"].includes(action.kind)) {
    return { cls: "bad", text: `error: ${stage.last_error}` };
  }
  switch (action.kind) {
    case "source":
      return { cls: "none", text: "source stage" };
    case "up_to_date":
      return { cls: "ok", text: "up to date" };
    case "promote":
      return { cls: "busy", text: `promoting ${p.from_tag} → ${p.to_tag}` };
    case "pending":
      return { cls: "wait", text: `pending approval: ${p.from_tag} → ${p.to_tag}`, approve: p };
    case "waiting": {
      const why = action.why === "window" ? "the promotion window" : "min_age";
      return { cls: "wait", text: `waiting for ${why} until ${when(action.until)}: ${p.from_tag} → ${p.to_tag}` };
    }
    case "frozen": {
      const f = action.freeze || {};
      const until = f.until ? `until ${when(f.until)}` : "until lifted";
      return { cls: "frozen", text: `frozen by ${f.by} ${until}: ${f.reason}` };
    }
    case "conflict":
      return { cls: "bad", text: `conflict: ${p.to_tag} exists with ${shortDigest(action.existing_digest)}` };
    case "unverified":
      return { cls: "bad", text: `unverified: ${action.reason} (${p.from_tag} → ${p.to_tag} not promoted)` };
    case "no_candidate":
      return { cls: "none", text: `nothing to promote: ${action.reason}` };
    case "invalid":
      return { cls: "bad", text: `invalid: ${action.reason}` };
    default:
      return { cls: "none", text: stage.no_current || "not reconciled yet" };
  }
}

function renderStage(pipeline, stage) {
  const state = stageState(stage);
  const box = el("article", `stage state-${state.cls}`);
  box.dataset.stage = stage.stage;
  box.append(el("h3", null, stage.stage));
  const cur = stage.current;
  box.append(el("div", "tag", cur ? cur.tag : "(none)"));
  if (cur) {
    const d = el("div", "digest", shortDigest(cur.digest));
    d.title = cur.digest;
    if (cur.since) d.append(` · since ${ago(cur.since)}`);
    box.append(d);
  }
  const line = el("div", "state", state.text);
  line.setAttribute("data-state", state.cls);
  box.append(line);
  if (stage.frozen && (stage.action || {}).kind !== "frozen") {
    box.append(el("div", "state frozen-note", `frozen by ${stage.frozen.by}: ${stage.frozen.reason}`));
  }
  if (state.approve) {
    const b = el("button", "primary", `Approve ${state.approve.to_tag}`);
    b.type = "button";
    b.title = `Promote ${state.approve.digest}`;
    b.addEventListener("click", async () => {
      b.disabled = true;
      try {
        await approve(pipeline, stage.stage, state.approve);
      } finally {
        b.disabled = false;
      }
    });
    box.append(b);
  }
  return box;
}

function renderPipeline(p) {
  const card = el("section", "card");
  card.dataset.pipeline = p.pipeline;
  const head = el("header");
  head.append(el("h2", null, p.pipeline));
  head.append(el("span", "meta", p.last_reconcile ? `looked ${ago(p.last_reconcile)}` : "not reconciled yet"));
  card.append(head);
  if (p.last_error) card.append(el("p", "state-bad state", `last reconcile failed: ${p.last_error}`));
  const stages = el("div", "stages");
  for (const s of p.stages || []) stages.append(renderStage(p.pipeline, s));
  card.append(stages);
  const recent = recentPromotions(p);
  if (recent.length) {
    card.append(el("h3", "recent-title", "Recent promotions"));
    const list = el("ul", "recent");
    list.setAttribute("aria-label", `Recent promotions of ${p.pipeline}`);
    for (const r of recent) {
      const who = r.approved_by ? `, approved by ${r.approved_by}` : ", automatic";
      const why = r.reason ? ` (${r.reason})` : "";
      const forced = r.forced ? ", forced" : "";
      const li = el("li", null, `${when(r.time)}: ${r.stage} ← ${r.to_tag} from ${r.from_tag}${who}${forced}${why}`);
      if (r.artifact) li.title = `recorded in the registry as ${r.artifact}`;
      list.append(li);
    }
    card.append(list);
  }
  return card;
}

/** The pipeline's latest promotions: from its promotion records when the daemon could read
 * them, else each stage's last promotion as the daemon saw it. */
function recentPromotions(p) {
  const h = histories.get(p.pipeline);
  if (h && h.entries && h.entries.length) {
    return h.entries.map((e) => ({
      stage: e.stage,
      time: e.time,
      to_tag: (e.to || {}).tag,
      from_tag: (e.from || {}).tag,
      approved_by: e.approved_by,
      reason: e.reason,
      forced: e.forced,
      artifact: e.artifact,
    }));
  }
  return (p.stages || [])
    .filter((s) => s.last_promotion)
    .map((s) => ({ stage: s.stage, ...s.last_promotion }))
    .sort((a, b) => Date.parse(b.time) - Date.parse(a.time));
}

/** Reads a pipeline's history again when its stages' last promotions changed (the daemon
 * serves it from the registries, so not on every poll). */
async function refreshHistory(p) {
  const key = JSON.stringify((p.stages || []).map((s) => (s.last_promotion || {}).time || ""));
  const known = histories.get(p.pipeline);
  if (known && known.key === key) return;
  histories.set(p.pipeline, { key, entries: known ? known.entries : [] });
  try {
    const a = await read(`api/v1/pipelines/${encodeURIComponent(p.pipeline)}/history?limit=${HISTORY_LIMIT}`);
    if (!a.ok) return;
    const h = await a.json();
    histories.set(p.pipeline, { key, entries: h.entries || [] });
    if (!document.querySelector("dialog[open]")) render();
  } catch (_) {
    // The last promotions from the status stand in.
  }
}

function renderFreezes() {
  const box = $("freezes");
  box.replaceChildren();
  box.hidden = freezes.length === 0;
  if (!freezes.length) return;
  box.className = "card";
  box.append(el("h2", null, "Freezes in force"));
  const list = el("ul");
  for (const f of freezes) {
    const li = el("li");
    const scope = `${(f.pipelines || []).join(", ") || "every pipeline"} / ${(f.stages || []).join(", ") || "every stage"}`;
    const until = f.until ? `until ${when(f.until)}` : "until lifted";
    li.append(el("span", null, `${scope}, by ${f.by} ${until}: ${f.reason}`));
    if (!f.id.startsWith("config-")) {
      const b = el("button", null, "Unfreeze");
      b.type = "button";
      b.addEventListener("click", () => unfreeze(f));
      li.append(b);
    } else {
      li.append(el("span", "meta", "(configured)"));
    }
    list.append(li);
  }
  box.append(list);
}

/** Where the keyboard focus is, as something that survives a re-render. */
function focusKey() {
  const a = document.activeElement;
  const card = a && a.closest && a.closest("[data-pipeline]");
  const stage = a && a.closest && a.closest("[data-stage]");
  if (!card || a.tagName !== "BUTTON") return null;
  return { pipeline: card.dataset.pipeline, stage: stage ? stage.dataset.stage : null };
}

function restoreFocus(key) {
  if (!key) return;
  for (const card of document.querySelectorAll("[data-pipeline]")) {
    if (card.dataset.pipeline !== key.pipeline) continue;
    const scope = key.stage
      ? [...card.querySelectorAll("[data-stage]")].find((s) => s.dataset.stage === key.stage)
      : card;
    const button = scope && scope.querySelector("button");
    if (button) button.focus();
  }
}

function render() {
  const focused = focusKey();
  const wanted = $("filter").value.trim().toLowerCase();
  const box = $("pipelines");
  box.replaceChildren();
  const shown = pipelines.filter((p) => p.pipeline.toLowerCase().includes(wanted));
  for (const p of shown) box.append(renderPipeline(p));
  if (!shown.length) box.append(el("p", "meta", pipelines.length ? "no pipeline matches the filter" : "no pipeline"));
  renderFreezes();
  fillFreezeChoices();
  restoreFocus(focused);
}

/** A GET of the read API, with this tab's token when it has one (server.read_token_file). */
function read(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  return fetch(path, { headers, credentials: "omit", cache: "no-store" });
}

let asking = false;

async function poll() {
  try {
    const [a, b] = await Promise.all([read("api/v1/pipelines"), read("api/v1/freeze")]);
    if (a.status === 401 && !asking) {
      // This daemon closes its read API: ask once for a token, then look again.
      sessionStorage.removeItem(TOKEN_KEY);
      asking = true;
      $("live").textContent = "retagd asks for a token to show its pipelines";
      const token = await askToken();
      asking = false;
      if (token) poll();
      return;
    }
    if (!a.ok) throw new Error(`status API answered ${a.status}`);
    pipelines = (await a.json()).pipelines || [];
    freezes = b.ok ? (await b.json()).freezes || [] : [];
    lastOk = new Date();
    $("live").textContent = `updated ${lastOk.toLocaleTimeString()}`;
    $("live").classList.remove("lost");
    // Do not rebuild what the person is typing into.
    if (!document.querySelector("dialog[open]")) render();
    for (const p of pipelines) refreshHistory(p);
  } catch (e) {
    $("live").textContent = `cannot reach retagd (${e.message}); retrying`;
    $("live").classList.add("lost");
  }
}

function notice(text, good) {
  const n = $("notice");
  n.textContent = text;
  n.className = good ? "good" : "bad";
  n.hidden = false;
}

/** The approver token of this tab, asked for once. */
function askToken() {
  const stored = sessionStorage.getItem(TOKEN_KEY);
  if (stored) return Promise.resolve(stored);
  const dialog = $("token-dialog");
  const input = $("token-input");
  input.value = "";
  return new Promise((resolve) => {
    const done = (token) => {
      $("token-form").onsubmit = null;
      $("token-cancel").onclick = null;
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      resolve(token);
    };
    $("token-form").onsubmit = (e) => {
      e.preventDefault();
      const token = input.value.trim();
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      done(token || null);
    };
    $("token-cancel").onclick = () => done(null);
    dialog.onclose = () => done(null);
    dialog.showModal();
    input.focus();
  });
}

/** Sends a write request with the token; forgets a token the daemon refused. */
async function write(method, path, body) {
  const token = await askToken();
  if (!token) return null;
  const answer = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  let json = {};
  try {
    json = await answer.json();
  } catch (_) {
    json = { error: `HTTP ${answer.status}` };
  }
  if (answer.status === 401 || answer.status === 403) sessionStorage.removeItem(TOKEN_KEY);
  return { status: answer.status, json };
}

async function approve(pipeline, stage, promotion) {
  const path = `api/v1/pipelines/${encodeURIComponent(pipeline)}/stages/${encodeURIComponent(stage)}/promote`;
  const r = await write("POST", path, { digest: promotion.digest });
  if (!r) return;
  if (r.status === 200) {
    const p = r.json.promotion || {};
    notice(r.json.result === "up_to_date"
      ? `${pipeline}/${stage} already has it as ${r.json.tag}`
      : `promoted ${pipeline}/${stage}: ${p.from_tag} → ${p.to_tag}`, true);
  } else {
    notice(`retagd refused (${r.status}): ${r.json.error || r.json.result || "no reason given"}`, false);
  }
  poll();
}

async function unfreeze(f) {
  const r = await write("DELETE", `api/v1/freeze/${encodeURIComponent(f.id)}`);
  if (!r) return;
  if (r.status === 200) notice(`lifted the freeze: ${f.reason}`, true);
  else notice(`retagd refused (${r.status}): ${r.json.error || "no reason given"}`, false);
  poll();
}

function fillFreezeChoices() {
  const pick = $("freeze-pipeline");
  const chosen = pick.value;
  pick.replaceChildren(el("option", null, "every pipeline"));
  pick.firstChild.value = "";
  for (const p of pipelines) {
    const o = el("option", null, p.pipeline);
    o.value = p.pipeline;
    pick.append(o);
  }
  pick.value = chosen;
  const stagePick = $("freeze-stage");
  const chosenStage = stagePick.value;
  const names = new Set();
  for (const p of pipelines) {
    if (!chosen || p.pipeline === chosen) for (const s of (p.stages || []).slice(1)) names.add(s.stage);
  }
  stagePick.replaceChildren(el("option", null, "every stage"));
  stagePick.firstChild.value = "";
  for (const n of names) {
    const o = el("option", null, n);
    o.value = n;
    stagePick.append(o);
  }
  stagePick.value = names.has(chosenStage) ? chosenStage : "";
}

function openFreeze() {
  fillFreezeChoices();
  $("freeze-reason").value = "";
  $("freeze-until").value = "";
  $("freeze-dialog").showModal();
  $("freeze-reason").focus();
}

async function submitFreeze(e) {
  e.preventDefault();
  const body = { reason: $("freeze-reason").value.trim() };
  if ($("freeze-pipeline").value) body.pipelines = [$("freeze-pipeline").value];
  if ($("freeze-stage").value) body.stages = [$("freeze-stage").value];
  if ($("freeze-until").value) body.until = new Date($("freeze-until").value).toISOString();
  $("freeze-dialog").close();
  const r = await write("POST", "api/v1/freeze", body);
  if (!r) return;
  if (r.status === 201) notice(`frozen: ${body.reason}`, true);
  else notice(`retagd refused (${r.status}): ${r.json.error || "no reason given"}`, false);
  poll();
}

document.addEventListener("DOMContentLoaded", () => {
  $("filter").addEventListener("input", render);
  $("freeze-open").addEventListener("click", openFreeze);
  $("freeze-cancel").addEventListener("click", () => $("freeze-dialog").close());
  $("freeze-form").addEventListener("submit", submitFreeze);
  $("freeze-pipeline").addEventListener("change", fillFreezeChoices);
  poll();
  setInterval(poll, POLL_MS);
});
