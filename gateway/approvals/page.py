"""The approvers' web page: one static HTML document with a little vanilla JS, no build step.

The page holds no data and needs no token to load; it signs in with an approver's pasted
token (kept in sessionStorage, sent as a Bearer header) and calls the JSON API. Data is
written with textContent only, and the CSP admits exactly this page's inline script (by hash),
same-origin fetches, and no framing (approve buttons must not be clickjackable).
"""

from __future__ import annotations

import base64
import hashlib

SCRIPT = """
"use strict";
const KEY = "gatewayToken";
const $ = (id) => document.getElementById(id);
let timer = null;

function token() { return sessionStorage.getItem(KEY); }

function say(text, bad) {
  const m = $("message");
  m.textContent = text;
  m.className = bad ? "bad" : "good";
}

async function call(path, options) {
  const response = await fetch(path, {
    ...options,
    headers: { accept: "application/json", authorization: "Bearer " + token(),
               "content-type": "application/json" },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error((body.error && body.error.message) || "HTTP " + response.status);
  }
  return body;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function age(seconds) {
  if (seconds < 60) return Math.round(seconds) + " s";
  if (seconds < 3600) return Math.round(seconds / 60) + " min";
  return Math.round(seconds / 3600) + " h";
}

function render(approvals) {
  const rows = $("rows");
  const typed = {};
  rows.querySelectorAll("input.reason").forEach((i) => { typed[i.dataset.id] = i.value; });
  rows.replaceChildren();
  $("empty").hidden = approvals.length > 0;
  for (const a of approvals) {
    const tr = document.createElement("tr");
    tr.dataset.id = a.id;
    cell(tr, a.requester, "requester");
    cell(tr, a.connection);
    cell(tr, a.model);
    cell(tr, a.reason, "why");
    cell(tr, age(a.age_s));
    const preview = document.createElement("pre");
    preview.textContent = a.preview == null ? "(no JSON body)" : a.preview;
    cell(tr, "").appendChild(preview);
    const votes = a.decisions.map((d) => d.approver + ": " + d.decision).join(", ");
    cell(tr, votes + (votes ? "; " : "") + "needs " + a.min_approvals);
    const actions = cell(tr, "");
    const reason = document.createElement("input");
    reason.className = "reason";
    reason.placeholder = "reason (optional)";
    reason.dataset.id = a.id;
    reason.value = typed[a.id] || "";
    actions.appendChild(reason);
    for (const verb of ["approve", "deny"]) {
      const button = document.createElement("button");
      button.textContent = verb === "approve" ? "Approve" : "Deny";
      button.className = verb;
      button.addEventListener("click", () => decide(a.id, verb, reason.value));
      actions.appendChild(button);
    }
    rows.appendChild(tr);
  }
}

async function refresh() {
  if (!token()) return;
  try {
    render((await call("/_gateway/approvals?status=pending")).approvals);
  } catch (e) {
    say(e.message, true);
  }
}

async function decide(id, verb, reason) {
  try {
    const body = await call("/_gateway/approvals/" + id + "/" + verb, {
      method: "POST", body: JSON.stringify({ reason: reason || null }),
    });
    say(id + ": " + body.approval.status, false);
  } catch (e) {
    say(id + ": " + e.message, true);
  }
  await refresh();
}

function show() {
  const signedIn = Boolean(token());
  $("signin-form").hidden = signedIn;
  $("signed-in").hidden = !signedIn;
  clearInterval(timer);
  if (signedIn) {
    refresh();
    timer = setInterval(refresh, 3000);
  }
}

$("signin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token").value.trim();
  $("token").value = "";
  if (value) sessionStorage.setItem(KEY, value);
  show();
});
$("signout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  $("rows").replaceChildren();
  say("", false);
  show();
});
$("reload").addEventListener("click", refresh);
show();
"""

_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Pending approvals: inference gateway</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: .4em; text-align: left; vertical-align: top; }
pre { margin: 0; max-width: 32em; max-height: 10em; overflow: auto; white-space: pre-wrap;
      font-size: 12px; background: #f6f6f6; padding: .3em; }
button { margin: .1em; }
.good { color: #060; } .bad { color: #a00; }
</style>
</head>
<body>
<h1>Pending approvals</h1>
<form id="signin-form">
  <label>Approver token <input id="token" type="password" autocomplete="off" size="60"></label>
  <button id="signin" type="submit">Sign in</button>
</form>
<div id="signed-in" hidden>
  <p>Signed in with a token (kept in this tab only).
  <button id="reload" type="button">Refresh</button>
  <button id="signout" type="button">Sign out</button></p>
  <p id="message" role="status"></p>
  <table>
    <thead><tr><th>Requester</th><th>Connection</th><th>Model</th><th>Reason</th><th>Age</th>
    <th>Request (masked)</th><th>Decisions</th><th></th></tr></thead>
    <tbody id="rows"></tbody>
  </table>
  <p id="empty" hidden>Nothing is waiting for you.</p>
</div>
<script>__SCRIPT__</script>
</body>
</html>
"""

PAGE = _HTML.replace("__SCRIPT__", SCRIPT).encode()
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
PAGE_HEADERS = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (
        b"content-security-policy",
        f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; style-src 'unsafe-inline'; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'".encode(),
    ),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
]
