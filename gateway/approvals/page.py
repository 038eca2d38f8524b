"""The approvers' web page: one static HTML document with a little vanilla JS, no build step.

The page holds no data and needs no token to load. It signs in one of two ways: with the IdP
(`[approvals] sign_in_issuer`: a link to `approvals/login`, then the session cookie and an
`x-csrf-token` from `approvals/session` on every call), or else with an approver's pasted
token (kept in sessionStorage, sent as a Bearer header). Data is written with textContent
only, and the CSP admits exactly this page's inline script (by hash), same-origin fetches, and
no framing (approve buttons must not be clickjackable).
"""

from __future__ import annotations

import base64
import hashlib

SCRIPT = """
"use strict";
const KEY = "gatewayToken";
const $ = (id) => document.getElementById(id);
const IDP = document.body.dataset.signIn === "idp";
let timer = null;
let csrf = null;  // with IdP sign-in: the session's CSRF token, from approvals/session

function token() { return IDP ? csrf : sessionStorage.getItem(KEY); }

function credentials() {
  return IDP ? { "x-csrf-token": csrf } : { authorization: "Bearer " + token() };
}

function say(text, bad) {
  const m = $("message");
  m.textContent = text;
  m.className = bad ? "bad" : "good";
}

async function call(path, options) {
  const response = await fetch(path, {
    ...options,
    credentials: "same-origin",
    headers: { accept: "application/json", "content-type": "application/json",
               ...credentials() },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error((body.error && body.error.message) || "HTTP " + response.status);
    error.status = response.status;
    throw error;
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
    if (IDP && e.status === 401) show();  // the session ended with its ID token: sign in again
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

async function session() {
  if (!IDP) return;
  try {
    const who = await call("/_gateway/approvals/session");
    csrf = who.csrf;
    $("who").textContent = who.subject + " (" + who.groups.join(", ") + ")";
  } catch (e) {
    csrf = null;
  }
}

async function show() {
  await session();
  const signedIn = Boolean(token());
  $("signin-form").hidden = IDP || signedIn;
  $("signin-idp").hidden = !IDP || signedIn;
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
$("signout").addEventListener("click", async () => {
  if (IDP) {
    await call("/_gateway/approvals/logout", { method: "POST" }).catch(() => {});
    csrf = null;
  }
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
<body data-sign-in="__SIGN_IN__">
<h1>Pending approvals</h1>
<p id="signin-idp" hidden><a id="signin-link" href="/_gateway/approvals/login">Sign in with your
identity provider</a></p>
<form id="signin-form" hidden>
  <label>Approver token <input id="token" type="password" autocomplete="off" size="60"></label>
  <button id="signin" type="submit">Sign in</button>
</form>
<div id="signed-in" hidden>
  <p>Signed in as <span id="who">an approver (token kept in this tab only)</span>.
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

PAGE = _HTML.replace("__SCRIPT__", SCRIPT).replace("__SIGN_IN__", "token").encode()
PAGE_SIGN_IN = _HTML.replace("__SCRIPT__", SCRIPT).replace("__SIGN_IN__", "idp").encode()
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
