// The vidpipe dashboard: plain JS over the gateway's own API (same origin, session cookie).
// Every value from the API goes into the page as text (textContent), never as HTML.
"use strict";

const $ = (selector) => document.querySelector(selector);
const pages = ["login", "page-requests", "page-request", "page-stages"];
let timer = null;
let stream = null;

function show(id) {
  for (const page of pages) $("#" + page).hidden = page !== id;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("current", "page-" + link.dataset.page === id);
  }
}

function stopLive() {
  if (timer !== null) clearInterval(timer);
  timer = null;
  if (stream !== null) stream.close();
  stream = null;
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) {
    route("login");
    throw new Error("not logged in");
  }
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error((body && body.detail) || response.statusText);
  return body;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function age(iso) {
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 120) return seconds + " s";
  if (seconds < 7200) return Math.round(seconds / 60) + " min";
  return Math.round(seconds / 3600) + " h";
}

// What happened when the video could not simply be downloaded, in a few words.
function story(g) {
  const parts = [];
  if (g.placeholder) parts.push("placeholder shown");
  if (g.retry_attempts) parts.push(g.retry_attempts + " retries");
  if (g.failover_request_id) parts.push("failed over → " + g.failover_request_id);
  if (g.parent_request_id) parts.push("failover child of " + g.parent_request_id);
  if (g.error_message) parts.push(g.error_message);
  return parts.join("; ");
}

// The final cost, or "~" the estimate while the job runs (docs/costs.md).
function cost(g) {
  if (g.cost_usd !== null && g.cost_usd !== undefined) return "$" + g.cost_usd.toFixed(2);
  if (g.estimated_cost_usd !== null && g.estimated_cost_usd !== undefined) {
    return "~$" + g.estimated_cost_usd.toFixed(2);
  }
  return "";
}

// --- requests ---------------------------------------------------------------------------------

async function refreshRequests() {
  const page = await api("/v1/generations?limit=50");
  const body = $("#requests tbody");
  body.replaceChildren();
  for (const g of page.items) {
    const row = body.insertRow();
    row.dataset.requestId = g.request_id;
    const link = document.createElement("a");
    link.href = "#/request/" + encodeURIComponent(g.request_id);
    link.textContent = g.request_id;
    row.insertCell().append(link);
    const status = cell(row, g.status, "status status-" + g.status);
    status.dataset.status = g.status;
    cell(row, g.provider);
    cell(row, g.progress === null ? "" : g.progress + " %");
    cell(row, cost(g), "cost");
    cell(row, age(g.created_at));
    cell(row, story(g));
  }
  $("#requests-updated").textContent = "updated " + new Date().toLocaleTimeString();
}

async function submitRequest(event) {
  event.preventDefault();
  const body = { prompt: $("#prompt").value };
  const image = $("#image-url").value.trim();
  if (image) body.input_image_url = image;
  const provider = $("#provider").value;
  if (provider) body.provider = provider;
  const fallbacks = [...document.querySelectorAll("input[name=fallbacks]:checked")].map((b) => b.value);
  if (fallbacks.length) body.fallbacks = fallbacks;
  const result = $("#submit-result");
  try {
    const accepted = await api("/v1/generations", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": crypto.randomUUID() },
      body: JSON.stringify(body),
    });
    result.className = "";
    result.textContent = "accepted: " + accepted.request_id;
    result.dataset.requestId = accepted.request_id;
    await refreshRequests();
  } catch (error) {
    result.className = "error";
    result.textContent = error.message;
  }
}

// --- one request ------------------------------------------------------------------------------

// Statuses a cancel can still stop: the job runs, or (failed over) its child's does. The gateway
// decides for real (409 otherwise).
const CANCELLABLE = ["requested", "submitted", "queued", "running", "failed_over"];

async function cancelRequest() {
  const id = $("#detail-id").textContent;
  const result = $("#cancel-result");
  try {
    const answer = await api("/v1/generations/" + encodeURIComponent(id) + "/cancel", { method: "POST" });
    result.className = "";
    result.textContent = "cancel requested (" + answer.status + ")";
  } catch (error) {
    result.className = "error";
    result.textContent = error.message;
  }
}

function fact(list, name, value) {
  if (value === null || value === undefined || value === "") return;
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = String(value);
  dd.dataset.fact = name;
  list.append(dt, dd);
}

function play(src, label) {
  const video = $("#video");
  if (video.getAttribute("src") !== src) video.setAttribute("src", src);
  $("#video-label").textContent = label;
  $("#player").hidden = false;
}

async function showFacts(id) {
  const g = await api("/v1/generations/" + encodeURIComponent(id));
  const facts = $("#detail-facts");
  facts.replaceChildren();
  fact(facts, "status", g.status);
  fact(facts, "provider", g.provider);
  fact(facts, "provider job id", g.provider_job_id);
  fact(facts, "progress", g.progress === null ? null : g.progress + " %");
  fact(facts, "cost", cost(g) + (g.price_version ? " (prices of " + g.price_version + ")" : ""));
  fact(facts, "prompt", g.prompt);
  fact(facts, "story", story(g));
  fact(facts, "message to the user", g.user_message);
  $("#detail-error").textContent = g.error_message || "";
  $("#cancel").hidden = !CANCELLABLE.includes(g.status);
  if (g.video_url) play(g.video_url, g.placeholder ? "placeholder video" : "the video");
  return g;
}

function addEvent(event) {
  const item = document.createElement("li");
  item.dataset.eventType = event.event_type;
  const when = new Date(event.occurred_at).toLocaleTimeString();
  const title = document.createElement("strong");
  title.textContent = event.event_type;
  const detail = document.createElement("code");
  const payload = event.payload || {};
  const bits = [payload.status, payload.provider_job_id, payload.reason_code, payload.error_code]
    .filter(Boolean);
  detail.textContent = " " + when + " " + bits.join(" ") + (payload.error_message ? " " + payload.error_message : "");
  item.append(title, detail);
  if (event.event_type === "VideoStored") {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = payload.placeholder ? "play placeholder" : "play video";
    const src = "/v1/generations/" + encodeURIComponent(event.payload.request_id) + "/video?seq=" + event.seq;
    button.addEventListener("click", () => play(src, button.textContent));
    item.append(" ", button);
  }
  $("#timeline").append(item);
}

async function showRequest(id) {
  $("#detail-id").textContent = id;
  $("#timeline").replaceChildren();
  $("#cancel-result").textContent = "";
  $("#player").hidden = true;
  $("#video").removeAttribute("src");
  await showFacts(id);
  // The timeline follows the events log live; the server ends the stream when it is terminal.
  stream = new EventSource("/v1/generations/" + encodeURIComponent(id) + "/events");
  stream.onmessage = () => {};
  const types = ["GenerationRequested", "JobSubmitted", "JobProgressed", "JobSucceeded", "JobFailed",
    "VideoStored", "DownloadUnavailable", "DownloadRetryScheduled", "DownloadGaveUp", "UserNotified",
    "CancelRequested", "JobCancelled"];
  for (const type of types) {
    stream.addEventListener(type, (message) => {
      addEvent(JSON.parse(message.data));
      showFacts(id).catch(() => {});
    });
  }
  stream.addEventListener("end", () => {
    stream.close();
    showFacts(id).catch(() => {});
  });
}

// --- stages -----------------------------------------------------------------------------------

async function refreshStages() {
  const view = await api("/v1/ops/stages");
  const groups = $("#groups tbody");
  groups.replaceChildren();
  for (const g of view.groups) {
    const row = groups.insertRow();
    row.dataset.group = g.group;
    cell(row, g.group);
    cell(row, g.role);
    cell(row, g.state);
    cell(row, g.members.length + (g.members.length ? ": " + g.members.join(", ") : ""));
    cell(row, Object.entries(g.lag).map(([t, n]) => t + " " + n).join(", "));
  }
  const timers = $("#timers tbody");
  timers.replaceChildren();
  for (const [stage, n] of Object.entries(view.timers_pending)) {
    const row = timers.insertRow();
    cell(row, stage);
    cell(row, n);
  }
  const quota = $("#quota tbody");
  quota.replaceChildren();
  for (const q of view.quota) {
    const row = quota.insertRow();
    cell(row, q.provider);
    cell(row, q.in_use);
    cell(row, q.limit);
  }
  $("#stages-updated").textContent = "updated " + new Date().toLocaleTimeString();
}

async function refreshDeadLetters() {
  const summary = await api("/v1/ops/deadletters");
  $("#dlq-total").textContent = summary.total + " letters";
  const body = $("#deadletters tbody");
  body.replaceChildren();
  for (const r of summary.reasons) {
    const row = body.insertRow();
    row.dataset.reason = r.reason;
    cell(row, r.stage);
    cell(row, r.reason);
    cell(row, r.count);
    cell(row, new Date(r.last_at).toLocaleString());
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "redrive";
    button.className = "redrive";
    button.addEventListener("click", () => redriveReason(r.reason, r.stage, button));
    row.insertCell().append(button);
  }
}

async function redriveReason(reason, stage, button) {
  button.disabled = true;
  const out = $("#redrive-result");
  try {
    const done = await api("/v1/ops/deadletters/redrive", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ reason, stage }),
    });
    out.className = "";
    out.textContent = "redriven: " + done.sent + " sent of " + done.matched + " matching";
    out.dataset.sent = String(done.sent);
    // A message still poison is dead-lettered again; show the table as it is now.
    await refreshDeadLetters();
  } catch (error) {
    out.className = "error";
    out.textContent = error.message;
  } finally {
    button.disabled = false;
  }
}

// --- routing ----------------------------------------------------------------------------------

async function route(forced) {
  stopLive();
  const hash = location.hash || "#/requests";
  if (forced === "login") {
    $("#nav").hidden = true;
    show("login");
    return;
  }
  $("#nav").hidden = false;
  try {
    if (hash.startsWith("#/request/")) {
      show("page-request");
      await showRequest(decodeURIComponent(hash.slice("#/request/".length)));
    } else if (hash === "#/stages") {
      show("page-stages");
      await Promise.all([refreshStages(), refreshDeadLetters()]);
      timer = setInterval(() => refreshStages().catch(() => {}), 3000);
    } else {
      show("page-requests");
      await refreshRequests();
      timer = setInterval(() => refreshRequests().catch(() => {}), 1000);
    }
  } catch (error) {
    console.error(error);
  }
}

async function start() {
  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const response = await fetch("/v1/session", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ api_key: $("#api-key").value }),
    });
    if (!response.ok) {
      $("#login-error").textContent = "that key is not known";
      return;
    }
    $("#api-key").value = "";
    $("#who").textContent = (await response.json()).key;
    route();
  });
  $("#logout").addEventListener("click", async () => {
    await fetch("/v1/session", { method: "DELETE", credentials: "same-origin" });
    route("login");
  });
  $("#submit-form").addEventListener("submit", submitRequest);
  $("#cancel").addEventListener("click", cancelRequest);
  window.addEventListener("hashchange", () => route());
  const session = await fetch("/v1/session", { credentials: "same-origin" });
  if (!session.ok) return route("login");
  $("#who").textContent = (await session.json()).key;
  return route();
}

start();
