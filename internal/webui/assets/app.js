// vmguard web console: read-only. Everything from the server is put on the
// page with textContent, never as HTML: event data comes from guests.
"use strict";
(function () {
  const $ = (s) => document.querySelector(s);
  const MAX = 5000; // events kept in the page
  let evs = [];     // oldest first
  let maxSeq = 0;   // highest sequence received
  let live = true;  // the status shows the latest state
  let atSeq = 0;    // the sequence shown while not live
  let filter = { package: "", node: "", type: "" };
  const seen = { package: new Set(), node: new Set(), type: new Set() };
  const placements = new Map(); // package -> {key, since} of the placement shown

  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") e.className = v;
      else if (k === "data") for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = String(dv);
      else if (k === "title") e.title = v;
      else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
    return e;
  }
  const fmtTime = (t) => {
    const d = new Date(t);
    if (isNaN(d)) return "";
    const p = (n, w) => String(n).padStart(w || 2, "0");
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
  };
  async function getJSON(url) {
    const r = await fetch(url, { cache: "no-store" });
    if (!r.ok) throw new Error(`${url}: ${r.status} ${await r.text()}`);
    return r.json();
  }

  // ---- status -------------------------------------------------------------
  function renderStatus(st) {
    const v = st.view;
    $("#cluster").textContent = v.cluster || "(no configuration yet)";
    const cs = $("#cluster-status");
    cs.textContent = v.status;
    cs.className = "badge " + v.status;
    const nb = $("#nodes tbody");
    nb.replaceChildren(...(v.nodes || []).map((n) =>
      el("tr", { data: { node: n.name, status: n.status } },
        el("td", {}, n.name), el("td", { class: "st-" + n.status }, n.status), el("td", {}, n.state),
        el("td", {}, (n.packages || []).join(", ")), el("td", {}, n.hold || ""))));
    const now = Date.now();
    $("#packages").replaceChildren(...(v.packages || []).map((p) => {
      // since: when the page first showed this placement (node, epoch).
      const key = `${p.node || ""}/${p.epoch}`;
      const prev = placements.get(p.name);
      if (!prev || prev.key !== key) placements.set(p.name, { key, since: now });
      const svc = el("table", {}, el("tr", {}, el("th", {}, "Service"), el("th", {}, "Status"), el("th", {}, "Restarts"), el("th", {}, "Max")),
        ...(p.services || []).map((s) => el("tr", { data: { service: s.name } }, el("td", {}, s.name),
          el("td", { class: "st-" + s.status }, s.status), el("td", {}, s.restarts), el("td", {}, s.max_restarts))));
      const nodes = el("div", { class: "nodes" }, ...(p.nodes || []).map((n) =>
        el("span", { class: (n.current ? "current " : "") + (n.failed_on ? "failed" : ""), title: `${n.type}, ${n.status}, switching ${n.switching}` },
          n.name + (n.current ? " (current)" : "") + (n.failed_on ? " (failed)" : ""))));
      const card = el("div", { class: "pkg " + p.status, data: { package: p.name, node: p.node || "", epoch: p.epoch, status: p.status, since: placements.get(p.name).since } },
        el("div", { class: "head" }, el("span", { class: "name" }, p.name),
          el("span", { class: "st-" + p.status }, `${p.status} / ${p.state}`),
          el("span", { class: "meta" }, p.node ? `on ${p.node}, epoch ${p.epoch}` : "not placed"),
          el("span", { class: "meta" }, `auto_run ${p.auto_run}` + (p.guest ? `, guest ${p.guest.name} ${p.guest.status}` : "")),
          el("span", { class: "meta" }, p.reason ? `placed: ${p.reason}` : "")),
        p.down_reason ? el("div", { class: "note" }, p.down_reason) : "",
        p.note ? el("div", { class: "note" }, p.note) : "",
        svc, nodes);
      card.addEventListener("click", () => { $("#explain-pkg").value = p.name; loadExplain(); });
      return card;
    }));
    const sel = $("#explain-pkg");
    const cur = sel.value;
    const names = (v.packages || []).map((p) => p.name);
    if (names.join() !== [...sel.options].map((o) => o.value).join()) {
      sel.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
      if (names.includes(cur)) sel.value = cur;
      loadExplain();
    }
    document.body.dataset.statusSeq = String(st.seq);
  }

  let statusTimer = null;
  function scheduleStatus() {
    if (!live || statusTimer) return;
    statusTimer = setTimeout(async () => {
      statusTimer = null;
      try { renderStatus(await getJSON("/api/status")); } catch (e) { console.error(e); }
    }, 100);
  }

  // ---- time travel --------------------------------------------------------
  const slider = $("#at");
  function setSliderMax() {
    const wasEnd = live || Number(slider.value) >= Number(slider.max);
    slider.max = String(Math.max(1, maxSeq));
    if (wasEnd && live) slider.value = slider.max;
  }
  let travelTimer = null;
  slider.addEventListener("input", () => {
    const n = Number(slider.value);
    if (n >= maxSeq) { goLive(); return; }
    live = false;
    atSeq = n;
    $("#travel").classList.add("past");
    $("#live").disabled = false;
    const ev = evs.find((e) => e.seq >= n);
    $("#at-label").textContent = `state at seq ${n} of ${maxSeq}` + (ev && ev.seq === n ? `, ${new Date(ev.time).toLocaleString()}` : "");
    clearTimeout(travelTimer);
    travelTimer = setTimeout(async () => {
      try { const st = await getJSON("/api/status?at=" + atSeq); if (!live && st.seq === atSeq) renderStatus(st); } catch (e) { console.error(e); }
    }, 120);
  });
  function goLive() {
    live = true;
    $("#travel").classList.remove("past");
    $("#live").disabled = true;
    $("#at-label").textContent = "live";
    slider.value = slider.max;
    scheduleStatus();
  }
  $("#live").addEventListener("click", goLive);

  // ---- explain ------------------------------------------------------------
  async function loadExplain() {
    const pkg = $("#explain-pkg").value;
    const ol = $("#explain");
    if (!pkg) { ol.replaceChildren(); return; }
    try {
      const chain = await getJSON("/api/explain?package=" + encodeURIComponent(pkg));
      ol.replaceChildren(...(chain.length ? chain.map((e, i) =>
        el("li", { data: { seq: e.seq } }, `${i ? "\u2190 " : ""}#${e.seq} ${fmtTime(e.time)} ${e.type} ${e.summary}`))
        : [el("li", {}, `package ${pkg} has no recorded placement yet`)]));
    } catch (e) { console.error(e); }
  }
  $("#explain-pkg").addEventListener("change", loadExplain);

  // ---- timeline -----------------------------------------------------------
  const tbody = $("#timeline tbody");
  const matches = (e) => (!filter.package || e.package === filter.package) && (!filter.node || e.node === filter.node) && (!filter.type || e.type === filter.type);
  function row(e, fresh) {
    const verb = e.type.split(".").pop();
    return el("tr", { class: `t-${verb}` + (fresh ? " fresh" : ""), data: { seq: e.seq, type: e.type, shown: e.shown } },
      el("td", { title: e.time }, fmtTime(e.time)), el("td", {}, e.seq),
      el("td", {}, e.scope === "node" ? "node/" + e.subject : e.scope === "cluster" ? "cluster" : e.subject),
      el("td", {}, e.type), el("td", {}, e.summary));
  }
  function noteOptions(e) {
    for (const k of ["package", "node", "type"]) {
      const v = e[k];
      if (!v || seen[k].has(v)) continue;
      seen[k].add(v);
      const sel = $("#f-" + k);
      const opts = [...sel.options].slice(1).map((o) => o.value).concat(v).sort();
      sel.replaceChildren(el("option", { value: "" }, sel.options[0].textContent), ...opts.map((o) => el("option", { value: o }, o)));
      sel.value = filter[k];
    }
  }
  function renderTimeline() {
    const shown = evs.filter(matches).slice(-1000).reverse();
    tbody.replaceChildren(...shown.map((e) => row(e, false)));
    $("#count").textContent = `${shown.length} shown of ${evs.length} loaded`;
  }
  for (const k of ["package", "node", "type"]) {
    $("#f-" + k).addEventListener("change", (ev) => { filter[k] = ev.target.value; renderTimeline(); });
  }
  function add(e, fresh) {
    if (e.seq <= maxSeq) return false;
    maxSeq = e.seq;
    e.shown = Date.now();
    evs.push(e);
    if (evs.length > MAX) evs.splice(0, evs.length - MAX);
    noteOptions(e);
    if (fresh && matches(e)) {
      tbody.prepend(row(e, true));
      while (tbody.rows.length > 1000) tbody.deleteRow(-1);
    }
    return true;
  }

  // ---- live ---------------------------------------------------------------
  function connect() {
    const es = new EventSource("/api/stream?after=" + maxSeq);
    const conn = $("#conn");
    es.onopen = () => { conn.textContent = "live"; conn.className = "conn live"; };
    es.onerror = () => { conn.textContent = "reconnecting"; conn.className = "conn off"; };
    es.addEventListener("ev", (m) => {
      let n = 0;
      if (add(JSON.parse(m.data), true)) n++;
      if (n) {
        setSliderMax();
        $("#count").textContent = `${tbody.rows.length} shown of ${evs.length} loaded`;
        scheduleStatus();
        if ($("#explain-pkg").value === JSON.parse(m.data).package) loadExplainSoon();
      }
    });
  }
  let explainTimer = null;
  function loadExplainSoon() { clearTimeout(explainTimer); explainTimer = setTimeout(loadExplain, 300); }

  async function start() {
    try {
      const list = await getJSON("/api/events?limit=2000");
      for (const e of list) add(e, false);
      renderTimeline();
      setSliderMax();
      renderStatus(await getJSON("/api/status"));
    } catch (e) { console.error(e); }
    window.vmguardLoadedSeq = maxSeq;
    document.body.dataset.loadedSeq = String(maxSeq);
    connect();
  }
  start();
})();
