// The annotation page and the progress view: plain JavaScript over the JSON API.
// Credentials live in this tab's sessionStorage, so two tabs or browsers can be two annotators.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const page = body.dataset.page;
  const store = window.sessionStorage;

  // ------------------------------------------------------------------------------- API and status

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(method, path, data) {
    const headers = { Accept: "application/json" };
    if (data !== undefined) headers["Content-Type"] = "application/json";
    const key = store.getItem("xlgen.key");
    if (key) headers["X-API-Key"] = key;
    const response = await fetch(path, { method, headers, body: data === undefined ? undefined : JSON.stringify(data) });
    let payload = null;
    try { payload = await response.json(); } catch (_) { payload = null; }
    if (!response.ok) {
      let message = (payload && payload.detail) || response.statusText || `HTTP ${response.status}`;
      if (payload && Array.isArray(payload.extra) && payload.extra.length) {
        message += " (" + payload.extra.map((e) => (e.key ? `${e.key}: ${e.message}` : e.message)).join("; ") + ")";
      }
      if (response.status === 401) signOut("signed out: " + message);
      throw new ApiError(response.status, message);
    }
    return payload;
  }

  function say(message, kind) {
    const el = $("status");
    el.textContent = message;
    el.className = kind || "ok";
  }

  function fail(error) {
    say(error instanceof ApiError ? `${error.status}: ${error.message}` : String(error), "error");
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  // ------------------------------------------------------------------------------------- sign-in

  const me = { get name() { return store.getItem("xlgen.name") || ""; }, get role() { return store.getItem("xlgen.role") || ""; } };

  function signOut(message) {
    ["xlgen.key", "xlgen.name", "xlgen.role"].forEach((k) => store.removeItem(k));
    showSignIn();
    if (message) say(message, "error");
  }

  function showSignIn() {
    $("signin-panel").hidden = false;
    $("main").hidden = true;
    $("signout").hidden = true;
    $("who").textContent = "";
  }

  function showMain() {
    $("signin-panel").hidden = true;
    $("main").hidden = false;
    $("signout").hidden = false;
    $("who").textContent = `${me.name} (${me.role})`;
    document.querySelectorAll(".admin-only").forEach((n) => { n.hidden = me.role !== "admin"; });
    (page === "annotate" ? startAnnotate : startProgress)();
  }

  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("signin-name").value.trim();
    store.setItem("xlgen.key", $("signin-key").value);
    try {
      const who = await api("GET", "/v1/whoami");
      const actor = who.role === "annotator" ? who.annotator : name;
      if (!actor) { store.removeItem("xlgen.key"); say("name: give your name (the API key has none)", "error"); return; }
      store.setItem("xlgen.name", actor);
      store.setItem("xlgen.role", who.role);
      say(`signed in as ${actor}`);
      showMain();
    } catch (error) {
      store.removeItem("xlgen.key");
      fail(error);
    }
  });
  $("signout").addEventListener("click", () => signOut());

  // ------------------------------------------------------------------------------------ annotate

  const doc = { queue: [], claim: "", current: null, shownAt: 0, keep: [], added: [], skipped: new Set(), loading: false };
  const quiz = { queue: [], current: null, shownAt: 0, loading: false };
  let tab = "documents";

  function typing(event) {
    const t = event.target;
    return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable);
  }

  function startAnnotate() {
    switchTab(tab);
    refreshCounts();
    refreshNewLabels();
  }

  function switchTab(name) {
    tab = name;
    $("documents").hidden = name !== "documents";
    $("questions").hidden = name !== "questions";
    $("tab-documents").classList.toggle("current", name === "documents");
    $("tab-questions").classList.toggle("current", name === "questions");
    if (name === "documents" && !doc.current) nextDocument().catch(fail);
    if (name === "questions" && !quiz.current) nextQuestion().catch(fail);
  }

  async function refreshCounts() {
    try {
      const p = await api("GET", "/v1/progress");
      const mine = p.annotators.find((a) => a.annotator === me.name);
      $("count-total").textContent = p.documents;
      $("count-mine").textContent = mine ? mine.documents : 0;
      $("count-answers").textContent = p.questions;
    } catch (error) { fail(error); }
  }

  async function nextDocument() {
    if (doc.loading) return;
    doc.loading = true;
    try {
      if (!doc.queue.length) {
        const batch = await api("POST", "/v1/al/next-batch", { annotator: me.name, size: 5 });
        doc.claim = batch.claim_id;
        doc.queue = batch.documents.filter((d) => !doc.skipped.has(d.id));
      }
      doc.current = doc.queue.shift() || null;
      renderDocument();
    } finally { doc.loading = false; }
  }

  function renderDocument() {
    const d = doc.current;
    $("doc").hidden = !d;
    $("doc-empty").hidden = !!d;
    if (!d) return;
    $("doc-id").textContent = d.id;
    $("doc-score").textContent = d.score.toFixed(4);
    $("doc-queue").textContent = doc.queue.length;
    $("doc-text").textContent = d.text;
    doc.keep = d.suggested.map(() => true);
    doc.added = [];
    doc.shownAt = performance.now();
    renderSuggestions({});
    renderAdded();
  }

  function renderSuggestions(opinions) {
    const tbody = $("suggestions").querySelector("tbody");
    tbody.replaceChildren();
    doc.current.suggested.forEach((s, i) => {
      const keep = el("input", { type: "checkbox", "data-label": s.label, onchange: (e) => { doc.keep[i] = e.target.checked; row.classList.toggle("rejected", !doc.keep[i]); } });
      keep.checked = doc.keep[i];
      const sources = el("td", {}, ...s.sources.map((x) => el("span", { class: "src" }, x)));
      const op = opinions[s.label];
      const opinion = el("td", { class: "opinion" }, op ? el("span", { class: `relevance-${op.relevance}`, title: op.explanation }, `${op.relevance} · ${op.explanation}`) : "");
      const name = el("td", { class: "label" }, s.label, s.new ? el("span", { class: "new" }, " new") : "");
      const row = el("tr", { "data-label": s.label }, el("td", {}, i < 9 ? el("kbd", {}, i + 1) : ""), name, el("td", {}, s.score.toFixed(3)), sources, el("td", {}, keep), opinion);
      row.classList.toggle("rejected", !doc.keep[i]);
      tbody.append(row);
    });
  }

  function renderAdded() {
    $("added").replaceChildren(...doc.added.map((label, i) => el("span", { "data-label": label }, label,
      el("button", { type: "button", title: "remove", onclick: () => { doc.added.splice(i, 1); renderAdded(); } }, "×"))));
  }

  function toggle(i) {
    if (!doc.current || i >= doc.keep.length) return;
    doc.keep[i] = !doc.keep[i];
    const rows = $("suggestions").querySelectorAll("tbody tr");
    rows[i].querySelector("input").checked = doc.keep[i];
    rows[i].classList.toggle("rejected", !doc.keep[i]);
  }

  function setAll(value) {
    if (!doc.current) return;
    doc.keep = doc.keep.map(() => value);
    $("suggestions").querySelectorAll("tbody tr").forEach((row, i) => { row.querySelector("input").checked = value; row.classList.toggle("rejected", !value); });
  }

  async function submitDocument() {
    const d = doc.current;
    if (!d) return;
    const labels = [...d.suggested.filter((_, i) => doc.keep[i]).map((s) => s.label), ...doc.added];
    const seconds = Math.round((performance.now() - doc.shownAt) / 10) / 100;
    const saved = await api("POST", "/v1/annotations", { document_id: d.id, labels: [...new Set(labels)], annotator: me.name, seconds });
    say(`saved ${saved.document_id}: ${saved.labels.join(", ") || "(no labels)"} in ${seconds.toFixed(1)} s`);
    doc.current = null;
    await Promise.all([refreshCounts(), nextDocument()]);
  }

  async function skipDocument() {
    const d = doc.current;
    if (!d) return;
    doc.skipped.add(d.id);
    await api("POST", "/v1/al/release", { claim_id: doc.claim, document_ids: [d.id] });
    say(`skipped ${d.id}`);
    doc.current = null;
    await nextDocument();
  }

  async function secondOpinion() {
    const d = doc.current;
    if (!d || body.dataset.secondOpinion !== "true") return;
    const labels = [...new Set([...d.suggested.map((s) => s.label), ...doc.added])];
    if (!labels.length) { say("no labels to ask about", "error"); return; }
    say("asking for a second opinion ...");
    const got = await api("POST", "/v1/opinions", { document_id: d.id, labels });
    if (doc.current !== d) return;
    const byLabel = Object.fromEntries(got.opinions.map((o) => [o.label, o]));
    renderSuggestions(byLabel);
    say(`second opinion from ${got.model}` + (got.missing.length ? `; not rated: ${got.missing.join(", ")}` : ""));
  }

  let lookup = 0;
  async function suggestLabels() {
    const q = $("add-label").value.trim();
    const mine = ++lookup;
    const got = await api("GET", `/v1/label-space?limit=20&q=${encodeURIComponent(q)}`);
    if (mine !== lookup) return;
    $("label-options").replaceChildren(...got.labels.map((x) => el("option", { value: x })));
  }

  function addLabel(event) {
    event.preventDefault();
    const label = $("add-label").value.trim();
    if (!label || !doc.current) return;
    const i = doc.current.suggested.findIndex((s) => s.label === label);
    if (i >= 0) { if (!doc.keep[i]) toggle(i); } else if (!doc.added.includes(label)) { doc.added.push(label); renderAdded(); }
    $("add-label").value = "";
    say(`added ${label}`);
  }

  // ------------------------------------------------------------------------------- new labels

  async function refreshNewLabels() {
    try {
      const got = await api("GET", "/v1/labels");
      $("new-labels").querySelector("tbody").replaceChildren(...got.labels.map((x) =>
        el("tr", { "data-label": x.name }, el("td", {}, x.name), el("td", {}, x.questions), el("td", {}, x.answered), el("td", { class: "positives" }, x.positives))));
    } catch (error) { fail(error); }
  }

  async function nextQuestion() {
    if (quiz.loading) return;
    quiz.loading = true;
    try {
      if (!quiz.queue.length) quiz.queue = (await api("POST", "/v1/labels/questions", { annotator: me.name, size: 2 })).questions;
      quiz.current = quiz.queue.shift() || null;
      const q = quiz.current;
      $("question").hidden = !q;
      $("question-empty").hidden = !!q;
      if (!q) return;
      $("question-label").textContent = q.label;
      $("question-doc").textContent = q.document_id;
      $("question-score").textContent = q.score.toFixed(3);
      $("question-text").textContent = q.text;
      quiz.shownAt = performance.now();
    } finally { quiz.loading = false; }
  }

  async function answer(value) {
    const q = quiz.current;
    if (!q) return;
    if (value === null) { quiz.current = null; await nextQuestion(); return; }
    const seconds = Math.round((performance.now() - quiz.shownAt) / 10) / 100;
    const label = await api("POST", "/v1/labels/answers", { document_id: q.document_id, label: q.label, answer: value, annotator: me.name, seconds });
    say(`${value ? "yes" : "no"}: ${q.label} on ${q.document_id} (${label.positives} positives so far)`);
    quiz.current = null;
    await Promise.all([refreshNewLabels(), refreshCounts(), nextQuestion()]);
  }

  async function addNewLabel(event) {
    event.preventDefault();
    const name = $("new-label-name").value.trim();
    const description = $("new-label-description").value.trim();
    const examples = $("new-label-examples").value.split("\n").map((x) => x.trim()).filter(Boolean);
    const got = await api("POST", "/v1/labels", { name, description: description || null, examples, annotator: me.name });
    say(`label ${got.name} added: ${got.questions} questions about its most similar documents`);
    $("new-label-form").reset();
    quiz.queue = [];
    quiz.current = null;
    await Promise.all([refreshNewLabels(), nextQuestion()]);
  }

  function wireAnnotate() {
    $("tab-documents").addEventListener("click", () => switchTab("documents"));
    $("tab-questions").addEventListener("click", () => switchTab("questions"));
    $("submit").addEventListener("click", () => submitDocument().catch(fail));
    $("skip").addEventListener("click", () => skipDocument().catch(fail));
    $("opinion").addEventListener("click", () => secondOpinion().catch(fail));
    $("add-form").addEventListener("submit", addLabel);
    $("add-label").addEventListener("input", () => suggestLabels().catch(fail));
    $("answer-yes").addEventListener("click", () => answer(true).catch(fail));
    $("answer-no").addEventListener("click", () => answer(false).catch(fail));
    $("answer-skip").addEventListener("click", () => answer(null).catch(fail));
    $("new-label-form").addEventListener("submit", (e) => addNewLabel(e).catch(fail));
    document.addEventListener("keydown", (event) => {
      if ($("main").hidden || event.ctrlKey || event.metaKey || event.altKey) return;
      if (typing(event)) { if (event.key === "Escape") event.target.blur(); return; }
      const key = event.key.toLowerCase();
      if (key === "d") { switchTab("documents"); return; }
      if (key === "q") { switchTab("questions"); return; }
      const run = (p) => { event.preventDefault(); p.catch(fail); };
      if (tab === "documents") {
        if (/^[1-9]$/.test(key)) { toggle(Number(key) - 1); return; }
        if (key === "a") setAll(true);
        else if (key === "r") setAll(false);
        else if (key === "enter") run(submitDocument());
        else if (key === "s") run(skipDocument());
        else if (key === "o") run(secondOpinion());
        else if (key === "/") { event.preventDefault(); $("add-label").focus(); }
      } else if (key === "y") run(answer(true));
      else if (key === "n") run(answer(false));
      else if (key === "s") run(answer(null));
    });
  }

  // ------------------------------------------------------------------------------------ progress

  let timer = null;
  const fmt = (x) => (x === null || x === undefined ? "–" : x.toFixed(4));
  const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "–");

  function startProgress() {
    refreshProgress();
    if (!timer) timer = setInterval(refreshProgress, 5000);
  }

  async function refreshProgress() {
    let p;
    try { p = await api("GET", "/v1/progress"); } catch (error) { fail(error); return; }
    $("p-documents").textContent = p.documents;
    $("p-questions").textContent = p.questions;
    $("p-pool").textContent = p.pool_size;
    $("p-annotators").querySelector("tbody").replaceChildren(...p.annotators.map((a) =>
      el("tr", { "data-annotator": a.annotator }, el("td", {}, a.annotator || "(anonymous)"), el("td", {}, a.documents), el("td", {}, a.questions),
        el("td", {}, a.positives), el("td", {}, a.median_seconds === null ? "–" : a.median_seconds.toFixed(1)), el("td", {}, (a.total_seconds / 60).toFixed(1)))));
    $("p-model").textContent = p.model_version
      ? `${p.model_version}${p.model_path ? ` from ${p.model_path}` : ""}: dev micro-F1 ${fmt(p.model_dev_micro_f1)}, macro-F1 ${fmt(p.model_dev_macro_f1)}`
      : "no model loaded";
    $("p-jobs").querySelector("tbody").replaceChildren(...p.jobs.slice().reverse().map((j) => {
      const swap = j.status === "succeeded" && !j.swapped && me.role === "admin"
        ? el("button", { type: "button", class: "swap", onclick: () => swapIn(j.id).catch(fail) }, "Swap in") : "";
      return el("tr", { "data-job": j.id, title: j.message }, el("td", {}, el("code", {}, j.id)), el("td", { class: "job-status" }, j.status),
        el("td", {}, when(j.created_at)), el("td", {}, j.train_docs ?? "–"), el("td", {}, fmt(j.dev_micro_f1)), el("td", {}, fmt(j.dev_macro_f1)),
        el("td", {}, j.swapped ? "yes" : ""), el("td", {}, swap));
    }));
    plot(p.jobs.filter((j) => j.dev_micro_f1 !== null), p);
  }

  function plot(jobs, p) {
    const svg = $("plot");
    const W = 720, H = 260, L = 48, R = 110, T = 12, B = 30;
    const ns = "http://www.w3.org/2000/svg";
    const node = (tag, attrs, text) => {
      const n = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
      if (text !== undefined) n.textContent = text;
      return n;
    };
    svg.replaceChildren();
    const x = (i) => L + (jobs.length < 2 ? (W - L - R) / 2 : (i * (W - L - R)) / (jobs.length - 1));
    const y = (v) => T + (1 - v) * (H - T - B);
    for (const v of [0, 0.25, 0.5, 0.75, 1]) {
      svg.append(node("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e5e8ec" }));
      svg.append(node("text", { x: L - 8, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#667" }, v.toFixed(2)));
    }
    svg.append(node("text", { x: (W - R + L) / 2, y: H - 6, "text-anchor": "middle", "font-size": 11, fill: "#667" }, "retraining jobs, oldest first"));
    if (!jobs.length) {
      svg.append(node("text", { x: (W - R + L) / 2, y: H / 2, "text-anchor": "middle", fill: "#999" }, "no finished retraining yet"));
      return;
    }
    const series = [["dev_micro_f1", "#2463eb", "micro-F1"], ["dev_macro_f1", "#e07b00", "macro-F1"]];
    series.forEach(([key, color, name], s) => {
      const pts = jobs.map((j, i) => [x(i), j[key]]).filter(([, v]) => v !== null);
      if (pts.length > 1) svg.append(node("polyline", { points: pts.map(([px, v]) => `${px},${y(v)}`).join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
      pts.forEach(([px, v], i) => svg.append(node("circle", { cx: px, cy: y(v), r: 4, fill: color, class: `point ${key}` }, undefined)));
      svg.append(node("text", { x: W - R + 10, y: T + 14 + 16 * s, "font-size": 12, fill: color }, name));
    });
    if (p.model_dev_micro_f1 !== null) {
      svg.append(node("line", { x1: L, x2: W - R, y1: y(p.model_dev_micro_f1), y2: y(p.model_dev_micro_f1), stroke: "#2463eb", "stroke-dasharray": "4 4" }));
      svg.append(node("text", { x: W - R + 10, y: T + 46, "font-size": 12, fill: "#2463eb" }, "served (micro)"));
    }
  }

  async function swapIn(jobId) {
    const info = await api("PUT", "/v1/model", { job_id: jobId });
    say(`serving ${info.version}`);
    await refreshProgress();
  }

  function wireProgress() {
    $("retrain").addEventListener("click", async () => {
      try {
        const job = await api("POST", "/v1/retrain", { force: $("retrain-force").checked });
        say(`retraining job ${job.id} ${job.status}`);
        await refreshProgress();
      } catch (error) { fail(error); }
    });
  }

  // ------------------------------------------------------------------------------------- start

  if (page === "annotate") wireAnnotate(); else wireProgress();
  if (me.role) showMain(); else showSignIn();
})();
