// The dashboard's one script: it asks for an API token once (kept in this browser's
// localStorage), calls the JSON API with it, and redraws each page every second.
// Text from the API is always put in with textContent, never as HTML.
"use strict";

const REFRESH_MS = 1000;

function token() {
  return localStorage.getItem("coordinator-token") || "";
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${token()}` }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : response.statusText;
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

function showError(error) {
  const box = document.getElementById("error");
  box.hidden = !error;
  box.textContent = error ? String(error.message || error) : "";
}

function el(tag, text, attributes = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function row(cells) {
  const tr = el("tr");
  for (const cell of cells) {
    const td = el("td");
    if (cell instanceof Node) td.appendChild(cell);
    else td.textContent = cell === undefined || cell === null ? "" : String(cell);
    tr.appendChild(td);
  }
  return tr;
}

function statusBadge(status) {
  return el("span", status, { class: `status status-${status.replace(/[^a-z_]/g, "_")}` });
}

function runLink(id) {
  return el("a", id, { href: `/ui/runs/${encodeURIComponent(id)}` });
}

function fill(tableId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows);
}

// -- pages --------------------------------------------------------------------------

async function runsPage() {
  const form = document.getElementById("filters");
  const query = new URLSearchParams({ limit: "500" });
  for (const [name, value] of new FormData(form)) if (value) query.set(name, value);
  const page = await api(`/runs?${query}`);
  document.getElementById("count").textContent = `${page.total} runs`;
  fill("runs", page.runs.map((r) => row([runLink(r.workflow_id), statusBadge(r.status), r.last_event, r.mode, new Date(r.updated).toLocaleTimeString()])));
}

async function runPage() {
  const id = decodeURIComponent(location.pathname.split("/").pop());
  const run = await api(`/runs/${encodeURIComponent(id)}`);
  document.title = `${id} · agent-coordinator`;
  const header = document.getElementById("header");
  const lines = [
    el("h2", id),
    el("p", null),
  ];
  lines[1].append(statusBadge(run.status), ` ${run.workflow} · ${run.mode} · run ${run.run} · ${run.duration_ms} ms · ${run.usage.model_calls} model calls, ${run.usage.input_tokens + run.usage.output_tokens} tokens, ${run.usage.tool_calls} tool calls`);
  if (run.reason) lines.push(el("p", run.reason, { class: "reason" }));
  if (run.approval) lines.push(approvalBox(id, run.approval));
  header.replaceChildren(...lines);
  fill("steps", run.steps.map((s) => row([
    s.step, s.agent, statusBadge(s.status), s.usage.model_calls, s.usage.input_tokens + s.usage.output_tokens,
    s.usage.tool_calls, s.rejections.length, s.compensation_result ? "yes" : "", s.reason,
  ])));
  const timeline = document.getElementById("timeline");
  timeline.replaceChildren(...run.timeline.map((e) => {
    const item = el("li", null, { style: `margin-left: ${e.depth * 1.2}rem`, class: `event ${/Failed|Cancelled|Released|Refunded|Rejected/.test(e.type) ? "bad" : ""}` });
    item.append(el("span", `+${e.at_ms} ms`, { class: "at" }), " ", el("strong", e.type));
    const details = [];
    if (e.step) details.push(`step ${e.step}`);
    if (e.usage) details.push(`${e.usage.model_calls} model / ${e.usage.tool_calls} tool calls, ${e.usage.input_tokens + e.usage.output_tokens} tokens`);
    if (e.by) details.push(`by ${e.by}`);
    if (e.reason) details.push(e.reason);
    if (details.length) item.append(el("span", ` — ${details.join(" · ")}`, { class: "muted" }));
    return item;
  }));
}

function approvalBox(id, approval) {
  const box = el("div", null, { class: "approval" });
  box.append(el("p", `Waits for approval of step ${approval.step}: ${approval.reason || ""}`));
  box.append(decisionButtons(id));
  return box;
}

function decisionButtons(id) {
  const span = el("span", null, { class: "actions" });
  const note = el("input", null, { placeholder: "note", "aria-label": `note for ${id}` });
  const approve = el("button", "approve", { "data-run": id, class: "approve" });
  const reject = el("button", "reject", { "data-run": id, class: "reject secondary" });
  const decide = (action) => async () => {
    approve.disabled = reject.disabled = true;
    try {
      await api(`/runs/${encodeURIComponent(id)}/${action}`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ note: note.value }),
      });
      span.replaceChildren(el("span", `${action === "approve" ? "approved" : "rejected"}`, { class: "done" }));
    } catch (error) {
      showError(error);
      approve.disabled = reject.disabled = false;
    }
  };
  approve.addEventListener("click", decide("approve"));
  reject.addEventListener("click", decide("reject"));
  span.append(note, approve, reject);
  return span;
}

const decided = new Map(); // rows keep their buttons (and a typed note) between refreshes

async function approvalsPage() {
  const page = await api("/runs?status=awaiting_approval&limit=500");
  document.getElementById("count").textContent = `${page.total} waiting`;
  const body = document.querySelector("#approvals tbody");
  const rows = [];
  for (const r of page.runs) {
    if (!decided.has(r.workflow_id)) {
      const detail = await api(`/runs/${encodeURIComponent(r.workflow_id)}`);
      decided.set(r.workflow_id, row([runLink(r.workflow_id), r.waiting_for, detail.approval ? detail.approval.reason : "", decisionButtons(r.workflow_id)]));
    }
    rows.push(decided.get(r.workflow_id));
  }
  body.replaceChildren(...rows);
}

async function attentionPage() {
  const found = [];
  for (const status of ["needs_attention", "failed"]) found.push(...(await api(`/runs?status=${status}&limit=500`)).runs);
  document.getElementById("count").textContent = `${found.length} runs`;
  fill("attention", found.map((r) => {
    const retry = el("button", "retry", { "data-run": r.workflow_id });
    retry.addEventListener("click", async () => {
      retry.disabled = true;
      try { await api(`/runs/${encodeURIComponent(r.workflow_id)}/retry`, { method: "POST" }); } catch (error) { showError(error); }
    });
    return row([runLink(r.workflow_id), statusBadge(r.status), r.last_event, retry]);
  }));
}

async function deadLettersPage() {
  const letters = await api("/dead-letters");
  document.getElementById("count").textContent = `${letters.length} dead letters`;
  fill("letters", letters.map((d) => row([d.group, d.event.type, d.event.subject, d.deliveries, d.error])));
}

const PAGES = {
  runs: runsPage,
  run: runPage,
  approvals: approvalsPage,
  attention: attentionPage,
  "dead-letters": deadLettersPage,
};

async function refresh() {
  if (!token()) {
    showError("enter an API token (from $COORDINATOR_API_TOKENS) above");
    return;
  }
  try {
    await PAGES[document.body.dataset.page]();
    showError(null);
  } catch (error) {
    showError(error);
  }
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  localStorage.setItem("coordinator-token", document.getElementById("token").value);
  document.getElementById("token").value = "";
  refresh();
});
document.getElementById("filters")?.addEventListener("change", refresh);
document.getElementById("replay")?.addEventListener("click", async () => {
  try { await api("/dead-letters/replay", { method: "POST" }); } catch (error) { showError(error); }
  refresh();
});
refresh();
setInterval(refresh, REFRESH_MS);
