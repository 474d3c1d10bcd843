// fnhost web page: small plain JavaScript, no build step and no dependencies.
"use strict";
(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const csrf = () => { const m = $('meta[name="csrf-token"]'); return m ? m.content : ""; };
  const POLL_MS = 500;

  // A fetch that knows about expired sign-ins: the server answers 401 with {error, signin}.
  async function getJSON(url, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    opts.headers = Object.assign({ "Accept": "application/json", "X-CSRF-Token": csrf() }, opts.headers);
    opts.credentials = "same-origin";
    const resp = await fetch(url, opts);
    let body = {};
    try { body = await resp.json(); } catch (e) { body = { error: "Unexpected answer from the server (" + resp.status + ")." }; }
    return { ok: resp.ok, status: resp.status, body: body };
  }

  // the page's own routes answer {error: "text"}; the API's wire shape is {error: {code, message}}
  function errorText(error) {
    if (typeof error === "string") return error;
    return (error && error.message) || "Something went wrong.";
  }

  function showError(el, message, signin) {
    el.textContent = errorText(message) + " ";
    if (signin) {
      const a = document.createElement("a");
      a.href = signin; a.textContent = "Sign in again";
      el.appendChild(a);
    }
    el.hidden = false;
  }

  // -- drafts: a form's text survives an expired sign-in ------------------------------------------
  function draftKey(form) { return "fnhost-draft:" + form.dataset.draft; }
  function saveDraft(form) {
    const values = {};
    $$("input, textarea, select", form).forEach((el) => {
      if (!el.name || el.type === "file" || el.type === "hidden" || el.type === "password" || el.hasAttribute("data-no-draft")) return;
      values[el.name] = el.value;
    });
    try { sessionStorage.setItem(draftKey(form), JSON.stringify(values)); } catch (e) { /* private mode */ }
  }
  function restoreDraft(form) {
    let values = null;
    try { values = JSON.parse(sessionStorage.getItem(draftKey(form)) || "null"); } catch (e) { values = null; }
    if (!values) return;
    Object.keys(values).forEach((name) => {
      const el = form.elements[name];
      if (el && "value" in el) el.value = values[name];
    });
    sessionStorage.removeItem(draftKey(form));
  }
  const restoring = new URLSearchParams(location.search).get("restore") === "1";
  $$("form[data-draft]").forEach((form) => {
    if (restoring) restoreDraft(form);
    form.addEventListener("submit", () => saveDraft(form));
    form.addEventListener("input", () => saveDraft(form));
  });
  if (restoring && history.replaceState) {
    const url = new URL(location.href); url.searchParams.delete("restore");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }

  // -- confirm before destructive forms ---------------------------------------------------------
  $$("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (e) => { if (!confirm(form.dataset.confirm)) e.preventDefault(); });
  });

  // -- filter boxes ---------------------------------------------------------------------------------
  $$("input[data-filter-table]").forEach((input) => {
    const table = document.getElementById(input.dataset.filterTable);
    if (!table) return;
    const apply = () => {
      const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      let shown = 0;
      $$("tbody tr", table).forEach((tr) => {
        const text = tr.textContent.toLowerCase();
        const match = words.every((w) => text.includes(w));
        tr.hidden = !match;
        if (match) shown++;
      });
      const empty = $(".empty-filter");
      if (empty) empty.hidden = shown > 0;
    };
    input.addEventListener("input", apply);
    apply();
  });

  // -- drag and drop upload ---------------------------------------------------------------------------
  const zone = $("#dropzone");
  if (zone) {
    const input = $("input[type=file]", zone);
    const text = $(".dz-text", zone);
    const show = () => {
      if (input.files && input.files.length) {
        const f = input.files[0];
        text.textContent = f.name + " (" + Math.max(1, Math.round(f.size / 1024)) + " KB)";
        zone.classList.remove("invalid");
      }
    };
    input.addEventListener("change", show);
    ["dragenter", "dragover"].forEach((ev) => zone.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.add("over"); }));
    ["dragleave", "drop"].forEach((ev) => zone.addEventListener(ev, () => zone.classList.remove("over")));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      if (e.dataTransfer && e.dataTransfer.files.length) { input.files = e.dataTransfer.files; show(); }
    });
  }

  // -- the function page follows the truth: status, last call, the calls table ------------------------
  const ORDER = ["Queued", "Deploying", "Ready"];
  const DEPLOYING = ["Queued", "Deploying"];
  const LIVE_MS = 2000;  // how often an open function page looks for new calls
  function paintSteps(status) {
    // a failed build finished deploying (green), then failed (red): nothing is still running
    const at = status === "Failed" ? 2 : ORDER.indexOf(status);
    $$(".steps li").forEach((li, i) => {
      li.className = "";
      if (status === "Failed" && i === 2) { li.className = "failed"; li.textContent = "Failed"; return; }
      li.textContent = ORDER[i];
      if (i < at || (status === "Ready" && i === at)) li.className = "done";
      else if (i === at) li.className = "current";
    });
  }
  function paintBadge(el, status) { el.textContent = status; el.className = "badge " + status.toLowerCase(); }

  function paintFunction(state) {
    const deploy = $("#deploy");
    const changed = deploy.dataset.status !== state.status;
    deploy.dataset.status = state.status;
    paintSteps(state.status);
    paintBadge($("#status-badge"), state.status);
    // the message says only what is still true: gone once the build has ended
    const msg = $("#deploy-message");
    if (msg.textContent !== state.message) msg.textContent = state.message;
    msg.hidden = !state.message;
    if (state.status === "Failed") {
      const err = state.error || {};
      $("#deploy-error-message").textContent = err.message || "The deployment failed.";
      $("#deploy-error-trace").textContent = err.trace || "";
      $("#deploy-error").hidden = false;
      const h = $("#call-hint"); if (h) h.textContent = "The build failed: fix the code and upload it again.";
    }
    if (state.status === "Ready" && changed) {
      const b = $("#call-button"); if (b) b.disabled = false;
      const h = $("#call-hint"); if (h) h.textContent = "";
    }
    const last = $("#last-called");
    if (last && state.lastCalled && last.textContent !== state.lastCalled) last.textContent = state.lastCalled;
  }

  // New rows go in at the top, rows that changed get their new cells; an open row (and the
  // focus on its button) stays as it is, so the table can change under the person reading it.
  function mergeCalls(html) {
    const container = $("#calls-container");
    const next = document.createElement("div");
    next.innerHTML = html;
    const table = $("#calls-table", container);
    const nextTable = $("#calls-table", next);
    if (!table || table.tagName !== "TABLE" || !nextTable || nextTable.tagName !== "TABLE") {
      container.innerHTML = next.innerHTML;
      return;
    }
    $("#calls-table-box", container).dataset.callsVersion = $("#calls-table-box", next).dataset.callsVersion;
    const body = $("tbody", table);
    const wanted = new Set();
    let before = body.firstElementChild;
    $$("tr.call-row", nextTable).forEach((row) => {
      const id = row.dataset.callId;
      wanted.add(id);
      const detail = $('tr[data-detail-for="' + id + '"]', nextTable);
      const have = $('tr.call-row[data-call-id="' + id + '"]', body);
      if (!have) {
        body.insertBefore(row, before);
        body.insertBefore(detail, before);
        return;
      }
      Array.from(row.cells).forEach((cell, i) => {
        if (i > 0 && have.cells[i].innerHTML !== cell.innerHTML) have.cells[i].innerHTML = cell.innerHTML;
      });
      before = $('tr[data-detail-for="' + id + '"]', body).nextElementSibling;
    });
    $$("tr.call-row", body).forEach((row) => {
      if (wanted.has(row.dataset.callId)) return;
      const detail = $('tr[data-detail-for="' + row.dataset.callId + '"]', body);
      row.remove(); if (detail) detail.remove();
    });
  }

  const deploy = $("#deploy");
  let liveTick = null;
  if (deploy) {
    paintSteps(deploy.dataset.status);
    const url = deploy.dataset.stateUrl;
    let timer = null, busy = false, again = false;
    liveTick = async () => {
      clearTimeout(timer);
      if (busy) { again = true; return; }  // one look at a time; look again right after
      busy = true;
      let r = null;
      try {
        const box = $("#calls-table-box");
        const version = box ? box.dataset.callsVersion : "";
        const versions = $("#versions-box");
        const key = versions ? "&versions=" + encodeURIComponent(versions.dataset.versionsKey || "") : "";
        r = await getJSON(url + "?calls=" + encodeURIComponent(version || "") + key);
        if (r.ok) {
          paintFunction(r.body);
          if (r.body.callsHtml !== undefined) mergeCalls(r.body.callsHtml);
          // a version built or switched to: its table again (a focused button inside it
          // is only replaced when something in the table changed)
          if (r.body.versionsHtml !== undefined) $("#versions-container").innerHTML = r.body.versionsHtml;
        }
      } catch (e) {
        r = null;  // the server is away for a moment: look again later
      } finally {
        busy = false;
      }
      if (again) { again = false; liveTick(); return; }
      if (r && r.status === 401) return;  // signed out: the next action says so
      const fast = r && r.ok && (DEPLOYING.includes(r.body.status) || r.body.versionsBuilding);
      if (!document.hidden) timer = setTimeout(liveTick, fast ? POLL_MS : LIVE_MS);
    };
    // nobody is looking at a hidden tab: look again when it is shown
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) clearTimeout(timer); else liveTick();
    });
    timer = setTimeout(liveTick, deploy.dataset.pollFast === "yes" ? POLL_MS : LIVE_MS);
  }
  // rows of the functions list still deploying
  $$("tr[data-poll-status]").forEach((tr) => {
    const tick = async () => {
      const r = await getJSON(tr.dataset.pollStatus);
      if (!r.ok) return;
      paintBadge($("[data-status]", tr), r.body.status);
      if (DEPLOYING.includes(r.body.status)) setTimeout(tick, POLL_MS * 2);
    };
    setTimeout(tick, POLL_MS);
  });

  // -- calls: the call box, and each call's response and logs ---------------------------------------------
  function fmtResponse(body) {
    if (!body.hasResponse) return body.status === "Running" ? "(running…)" : "(no response)";
    return typeof body.response === "string" ? body.response : JSON.stringify(body.response, null, 2);
  }
  function fmtLogs(body) { return body.logs.length ? body.logs.join("\n") : "(no log lines)"; }

  const refreshBtn = $("#refresh-calls");
  if (refreshBtn && liveTick) refreshBtn.addEventListener("click", () => liveTick());

  // A call's outcome: live log lines over server-sent events while it runs, then the
  // recorded response and logs. Without EventSource (or when the stream fails) a long poll.
  const fmtTime = (ms) => new Date(ms).toISOString().slice(11, 19);
  function follow(url, view) {
    let ended = false;
    const lines = [];
    const finish = async () => {
      if (ended) return;
      ended = true;
      for (;;) {
        const s = await getJSON(url + "?wait=25");
        if (!s.ok) { view.error(s.body); return; }
        if (s.body.status !== "Running") { view.done(s.body); return; }
        view.status("Running");
      }
    };
    if (!window.EventSource) { finish(); return; }
    const es = new EventSource(url + "/logs/stream");
    es.onmessage = (e) => {
      const line = JSON.parse(e.data);
      lines.push(fmtTime(line.timestamp) + "  " + line.message);
      view.logs(lines.join("\n"));
    };
    es.addEventListener("end", () => { es.close(); finish(); });
    es.onerror = () => { es.close(); finish(); };
  }

  async function toggleCall(tr) {
    const button = $("button.call-toggle", tr);
    const detail = $('tr[data-detail-for="' + tr.dataset.callId + '"]');
    if (!detail.hidden) {
      detail.hidden = true; tr.classList.remove("open"); button.setAttribute("aria-expanded", "false");
      return;
    }
    detail.hidden = false; tr.classList.add("open"); button.setAttribute("aria-expanded", "true");
    const r = await getJSON(tr.dataset.callUrl);
    const box = $(".detail-body", detail);
    box.className = "detail-body";
    if (!r.ok) { showError(box, r.body.error, r.body.signin); return; }
    box.innerHTML = "";
    const add = (tag, cls, text) => { const el = document.createElement(tag); if (cls) el.className = cls; el.textContent = text; box.appendChild(el); return el; };
    const failure = add("p", "error", "");
    const used = add("p", "muted small call-usage", "");
    const show = (body) => {
      failure.textContent = (body.error && body.error.message) || ""; failure.hidden = !failure.textContent;
      used.textContent = body.usage ? "Used: " + body.usage : ""; used.hidden = !used.textContent;
    };
    show(r.body);
    add("h3", "", "Response");
    const response = add("pre", "json call-response", fmtResponse(r.body));
    add("h3", "", "Logs");
    const logs = add("pre", "log call-logs", fmtLogs(r.body));
    response.tabIndex = 0; logs.tabIndex = 0;  // they scroll: reachable by keyboard
    if (r.body.status === "Running") {
      follow(tr.dataset.callUrl, {
        status: () => {},
        logs: (text) => { logs.textContent = text; },
        error: (body) => showError(failure, body.error, body.signin),
        done: (body) => { show(body); response.textContent = fmtResponse(body); logs.textContent = fmtLogs(body); },
      });
    }
  }
  const callsContainer = $("#calls-container");
  if (callsContainer) {
    // one listener for rows present now and rows the live table adds later; the button is
    // the control (Enter and Space work on it), a click anywhere on the row does the same
    callsContainer.addEventListener("click", (e) => {
      const tr = e.target.closest("tr.call-row");
      if (tr && !e.target.closest("a")) toggleCall(tr);
    });
    const want = new URLSearchParams(location.search).get("call");
    if (want) { const tr = $('tr.call-row[data-call-id="' + want + '"]'); if (tr) toggleCall(tr); }
  }

  const callForm = $("#call-form");
  if (callForm) {
    const err = $("#call-error");
    const box = $("#call-data");
    const logsEl = $("#call-logs");
    const result = $("#call-result");
    const clearError = () => { err.hidden = true; err.textContent = ""; box.classList.remove("invalid"); box.removeAttribute("aria-invalid"); };
    const view = {
      status: (st) => paintBadge($("#call-status"), st),
      logs: (text) => { logsEl.textContent = text; logsEl.scrollTop = logsEl.scrollHeight; },
      error: (body) => showError(err, body.error, body.signin),
      done: (body) => {
        view.status(body.status);
        view.logs(fmtLogs(body));
        $("#call-duration").textContent = body.duration;
        $("#call-response").textContent = fmtResponse(body);
        if (body.error && body.error.message) { $("#call-failure").textContent = body.error.message; $("#call-failure").hidden = false; }
        if (liveTick) liveTick();
      },
    };
    // an error about the JSON stops being true once the text parses
    box.addEventListener("input", () => {
      if (err.hidden || !box.classList.contains("invalid")) return;
      try { JSON.parse(box.value || "{}"); clearError(); } catch (e) { /* still invalid */ }
    });
    callForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      clearError();
      const button = $("#call-button");
      button.disabled = true;
      try {
        const r = await getJSON(callForm.dataset.callUrl, {
          method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ data: box.value }),
        });
        if (!r.ok) {
          // this call did not run: the last one's outcome would read as if it had
          result.hidden = true;
          if (r.body.field === "data") { box.classList.add("invalid"); box.setAttribute("aria-invalid", "true"); }
          showError(err, r.body.error, r.body.signin);
          return;
        }
        result.hidden = false;
        $("#call-id").textContent = "#" + r.body.callId;
        $("#call-response").textContent = "(running…)";
        $("#call-duration").textContent = "";
        $("#call-failure").hidden = true;
        view.logs("");
        view.status("Running");
        follow(r.body.url, view);
        if (liveTick) liveTick();
      } catch (ex) {
        showError(err, "Could not reach the server: " + ex);
      } finally {
        button.disabled = false;
      }
    });
  }
})();
