/* app.js - the smlogger live page: tiles fed by Server-Sent Events (polling as fallback),
 * link state, history and consumption charts. The server renders the first paint; this script
 * only keeps it current. No framework, no build step. */
(function () {
  "use strict";

  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  const initial = JSON.parse($("#sm-initial").textContent);
  const token = new URLSearchParams(location.search).get("token");

  const SPANS = { hour: 3600e3, day: 86400e3, week: 7 * 86400e3, month: 30 * 86400e3, year: 365 * 86400e3 };
  const REFRESH = { hour: 15e3, day: 60e3, week: 300e3, month: 900e3, year: 3600e3 };
  // link states and their labels come from the server (smlogger/states.py), never retyped here
  const LINK_STATES = initial.link_states;
  const STATE_TEXT = LINK_STATES.labels;
  const SSE_SILENCE_MS = 20e3;   // the server sends a status event every 5 s
  const SSE_RETRY_MS = 60e3;     // how long polling runs before trying the stream again
  const POLL_MS = 2000;
  const SPARK_MS = 10 * 60e3;    // the power tile's sparkline shows the last 10 minutes

  function urlRange() {
    const r = new URLSearchParams(location.search).get("range");
    return r && Object.prototype.hasOwnProperty.call(SPANS, r) ? r : null;
  }
  function keepInUrl(key, value) {
    const u = new URL(location.href);
    u.searchParams.set(key, value);
    history.replaceState(null, "", u.toString());
  }

  function stored(key, fallback, allowed) {
    try {
      const v = localStorage.getItem("smlogger." + key);
      return v && allowed.indexOf(v) >= 0 ? v : fallback;
    } catch (e) {
      return fallback;
    }
  }
  function store(key, value) {
    try { localStorage.setItem("smlogger." + key, value); } catch (e) { /* private mode */ }
  }

  const state = {
    meter: initial.meter,
    meters: (initial.meters || []).slice(),
    names: Object.assign({}, initial.names || {}),  // meter id -> configured name
    offset: 0,                    // server clock minus browser clock, ms
    lastTs: initial.live.ts,      // epoch s of the shown reading
    // the range: ?range= in the address (kept there, so a reload or a bookmark shows the same),
    // else the last one chosen here, else picked on the first load to show data (autoRange)
    range: urlRange() || stored("range", "day", Object.keys(SPANS)),
    autoRange: !urlRange(),
    series: stored("series", "power", ["power", "energy"]),
    period: stored("period", "day", ["day", "month"]),
    zoom: null,                   // [fromMs, toMs] while zoomed in
    history: null,
    historySeq: 0,
    historyLoadedAt: 0,
    consumptionSeq: 0,
    consumptionLoadedAt: 0,
    transport: "none",            // "sse" | "polling"
    es: null,
    pollTimer: null,
    lastMessage: Date.now(),
    phaseScale: 500,
    spark: [],
    lastFields: null,
    today: null,
    todayLoadedAt: 0
  };
  syncClock(initial.live.server_time);

  /* ---- HTTP --------------------------------------------------------------------------- */

  function apiUrl(path, query) {
    const u = new URL(path, location.origin);
    Object.keys(query || {}).forEach((k) => {
      if (query[k] !== null && query[k] !== undefined) u.searchParams.set(k, query[k]);
    });
    if (token) u.searchParams.set("token", token);
    return u.toString();
  }

  function getJson(path, query) {
    return fetch(apiUrl(path, query), { cache: "no-store", headers: { Accept: "application/json" } })
      .then((r) => r.json().catch(() => ({})).then((body) => {
        if (!r.ok) {
          const err = new Error(body.error || r.statusText);
          err.status = r.status;
          throw err;
        }
        return body;
      }));
  }

  function syncClock(serverTime) {
    const t = Date.parse(serverTime);
    if (!isNaN(t)) state.offset = t - Date.now();
  }
  const serverNow = () => Date.now() + state.offset;

  /* ---- formatting (same rules as the server's first paint) ------------------------------ */

  const numberFormats = {};
  function fmt(v, decimals) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    if (!numberFormats[decimals]) {
      numberFormats[decimals] = new Intl.NumberFormat(undefined, {
        minimumFractionDigits: decimals, maximumFractionDigits: decimals
      });
    }
    return numberFormats[decimals].format(v);
  }
  function fmtPower(w) {
    if (w === null || w === undefined) return ["–", "W"];
    return Math.abs(w) >= 10000 ? [fmt(w / 1000, 2), "kW"] : [fmt(w, 0), "W"];
  }
  function humanAge(s) {
    if (s < 60) return Math.floor(s) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h";
    return Math.floor(s / 86400) + " d";
  }

  /* ---- live tiles --------------------------------------------------------------------- */

  function setText(el, text) {
    if (!el || el.textContent === text) return;
    el.textContent = text;
    el.classList.remove("tick");
    void el.offsetWidth; // restart the animation
    el.classList.add("tick");
  }
  const field = (name) => $('[data-f="' + name + '"]');
  const show = (el, visible) => { if (el) el.hidden = !visible; };
  const present = (f, names) => names.some((n) => f[n] !== null && f[n] !== undefined);

  function applyReading(r) {
    if (!r) return;
    if (r.meter) noteMeter(r.meter, r.name);
    if (state.meter === null && r.meter) adoptMeter(r.meter);
    if (r.meter !== state.meter) return;
    const f = r.fields || {};
    state.lastFields = f;
    if (r.ts !== null && r.ts !== undefined) state.lastTs = r.ts;

    const [ptext, punit] = fmtPower(f.p_sum);
    setText(field("p_sum"), ptext);
    $('[data-u="p_sum"]').textContent = punit;
    const exporting = f.p_sum !== null && f.p_sum !== undefined && f.p_sum < 0;
    $(".tile-power").dataset.flow = exporting ? "export" : "import";
    $("#flow").textContent = f.p_sum === null || f.p_sum === undefined
      ? "no reading yet" : exporting ? "feeding into the grid" : "drawing from the grid";
    document.title = (f.p_sum === null || f.p_sum === undefined ? "" : ptext + " " + punit + " · ") + "smlogger";

    ["e_sum", "e_t1", "e_t2", "e_export", "e_export_t1", "e_export_t2"].forEach((k) => {
      setText(field(k), fmt(f[k], 3));
      const row = $('[data-row="' + k + '"]');
      if (row) show(row, f[k] !== null && f[k] !== undefined);
    });
    show($('[data-group="import"]'), present(f, ["e_sum", "e_t1", "e_t2"]) || f.p_sum === null);
    show($('[data-group="export"]'), present(f, ["e_export", "e_export_t1", "e_export_t2"]));

    const phases = ["p_L1", "p_L2", "p_L3"];
    const biggest = Math.max(...phases.map((k) => Math.abs(f[k] || 0)));
    // the bar scale grows at once but shrinks slowly, so bars do not jump with every frame
    state.phaseScale = Math.max(500, biggest, state.phaseScale * 0.98);
    phases.forEach((k) => {
      const v = f[k];
      const [t, u] = fmtPower(v);
      setText(field(k), t);
      $('[data-u="' + k + '"]').textContent = u;
      const bar = $('[data-bar="' + k + '"]');
      bar.setAttribute("width", v === null || v === undefined ? "0" : String(Math.min(100, Math.abs(v) / state.phaseScale * 100)));
      bar.classList.toggle("neg", v !== null && v !== undefined && v < 0);
      show($('[data-row="' + k + '"]'), v !== null && v !== undefined);
    });
    show($('[data-group="phases"]'), present(f, phases));

    ["1", "2", "3"].forEach((n) => {
      setText(field("u_L" + n), fmt(f["u_L" + n], 1));
      setText(field("i_L" + n), fmt(f["i_L" + n], 2));
      show($('[data-row="L' + n + '"]'), present(f, ["u_L" + n, "i_L" + n]));
    });
    setText(field("freq"), fmt(f.freq, 2));
    show($('[data-row="freq"]'), present(f, ["freq"]));
    show($('[data-group="grid"]'), present(f, ["u_L1", "u_L2", "u_L3", "i_L1", "i_L2", "i_L3", "freq"]));

    if (r.ts !== null && r.ts !== undefined && f.p_sum !== null && f.p_sum !== undefined) {
      const t = r.ts * 1000;
      if (!state.spark.length || t > state.spark[state.spark.length - 1][0]) state.spark.push([t, f.p_sum]);
      while (state.spark.length && state.spark[0][0] < t - SPARK_MS) state.spark.shift();
      drawSpark();
    }
    updateToday(f.e_sum);
    $("#tiles").dataset.ts = String(r.ts);
    updateAge();
  }

  function drawSpark() {
    const canvas = $("#spark");
    canvas.hidden = state.spark.length < 2;
    if (canvas.hidden || !window.SmChart) return;
    const now = serverNow();
    const color = state.spark[state.spark.length - 1][1] < 0 ? "--export" : "--accent";
    window.SmChart.sparkline(canvas, state.spark, now - SPARK_MS, now, color);
  }

  /* the sparkline starts from stored history, so it is full right after the page loads */
  function seedSpark() {
    if (!initial.history || !state.meter) return;
    const meter = state.meter, now = serverNow();
    getJson("/api/history", {
      meter: meter, from: ((now - SPARK_MS) / 1000).toFixed(3), to: (now / 1000).toFixed(3)
    }).then((h) => {
      if (meter !== state.meter) return;
      const firstLive = state.spark.length ? state.spark[0][0] : Infinity;
      const seed = (h.points || [])
        .filter((p) => p.p_avg !== null && p.p_avg !== undefined && p.ts * 1000 < firstLive)
        .map((p) => [p.ts * 1000, p.p_avg]);
      state.spark = seed.concat(state.spark);
      drawSpark();
    }).catch(() => {});
  }

  /* today's import: the store's figure for today plus what the meter counted since */
  function updateToday(eSum) {
    const base = state.today;
    if (!base || base.meter !== state.meter || eSum === null || eSum === undefined) {
      $("#today-row").hidden = true;
      return;
    }
    if (base.eSum === null) base.eSum = eSum;
    setText($("#today"), fmt(base.kwh + Math.max(0, eSum - base.eSum), 3));
    $("#today-row").hidden = false;
  }

  function loadToday() {
    if (!initial.history || !state.meter) return;
    const now = new Date(serverNow());
    const midnight = new Date(now.getFullYear(), now.getMonth(), now.getDate());
    const meter = state.meter;
    state.todayLoadedAt = Date.now();
    getJson("/api/consumption", {
      meter: meter, period: "day", from: (midnight.getTime() / 1000).toFixed(0), to: (now.getTime() / 1000).toFixed(3)
    }).then((c) => {
      const bars = (c.bars || []).filter((b) => b.import_kwh !== null && b.import_kwh !== undefined);
      if (meter !== state.meter) return;
      const last = bars.length ? bars[bars.length - 1] : null;
      const reading = state.lastFields || {};
      state.today = last ? { meter: meter, kwh: last.import_kwh, eSum: reading.e_sum === undefined ? null : reading.e_sum } : null;
      updateToday(reading.e_sum);
    }).catch(() => { state.today = null; });
  }

  function applyLink(link) {
    if (!link) return;
    const box = $("#link");
    const s = link.state || LINK_STATES.initial;
    box.dataset.state = s;
    $("#link-text").textContent = STATE_TEXT[s] || s;
    $("#link-text").title = link.detail || "";
    $("#crc").textContent = "CRC errors " + (link.crc_error_rate === null || link.crc_error_rate === undefined
      ? "–" : fmt(link.crc_error_rate * 100, 2) + " %");
  }

  /* the banner: every source's diagnosis that asks the user to act (smlogger/diagnose.py) */
  function applyProblems(problems) {
    if (!Array.isArray(problems)) return;
    const box = $("#diag");
    const key = JSON.stringify(problems);
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    box.textContent = "";
    problems.forEach((p) => {
      const item = document.createElement("div");
      item.className = "diag-item";
      item.dataset.code = p.code;
      item.dataset.source = p.source;
      const sentence = document.createElement("p");
      sentence.className = "diag-sentence";
      const source = document.createElement("b");
      source.className = "diag-source";
      source.textContent = p.source + ":";
      sentence.appendChild(source);
      sentence.appendChild(document.createTextNode(" " + p.sentence));
      const hint = document.createElement("p");
      hint.className = "diag-hint";
      hint.textContent = p.hint;
      item.appendChild(sentence);
      item.appendChild(hint);
      box.appendChild(item);
    });
    box.hidden = problems.length === 0;
  }

  function applyOffline() {
    $("#link").dataset.state = LINK_STATES.offline;
    $("#link-text").textContent = STATE_TEXT[LINK_STATES.offline];
  }

  function updateAge() {
    const el = $("#age");
    if (state.lastTs === null || state.lastTs === undefined) {
      el.textContent = "no data yet";
      return;
    }
    const age = Math.max(0, serverNow() / 1000 - state.lastTs);
    el.textContent = "updated " + humanAge(age) + " ago";
    el.classList.toggle("stale", age > 15 && age <= 120);
    el.classList.toggle("dead", age > 120);
  }

  /* ---- meters ------------------------------------------------------------------------- */

  const select = $("#meter");

  /* DIN 43863-5 meter number of a 10-byte server id, as web.py's meter_label() */
  function meterLabel(id) {
    if (!/^0[9a][0-9a-f]{18}$/i.test(id)) return id;
    const bytes = id.match(/../g).map((h) => parseInt(h, 16));
    const flag = String.fromCharCode(bytes[2], bytes[3], bytes[4]);
    if (!/^[A-Z]{3}$/.test(flag)) return id;
    const hex2 = (b) => b.toString(16).toUpperCase().padStart(2, "0");
    const serial = String(((bytes[6] << 24) >>> 0) + (bytes[7] << 16) + (bytes[8] << 8) + bytes[9]).padStart(8, "0");
    return bytes[1].toString(16).toUpperCase() + " " + flag + hex2(bytes[5]) + " " + serial.slice(0, -4) + " " + serial.slice(-4);
  }

  /* "house · 1 ESY11 ..." for a named meter, as the server's named_label() */
  function namedLabel(id) {
    const name = state.names[id];
    return name ? name + " \u00b7 " + meterLabel(id) : meterLabel(id);
  }

  function showName() {
    const name = state.names[state.meter];
    $("#meter-name").textContent = name ? " \u00b7 " + name : "";
  }

  function noteMeter(id, name) {
    if (!id) return;
    if (name && state.names[id] !== name) {
      state.names[id] = name;
      const known = Array.from(select.options).find((o) => o.value === id);
      if (known) known.textContent = namedLabel(id);
      if (id === state.meter) showName();
    }
    if (state.meters.indexOf(id) >= 0) return;
    state.meters.push(id);
    if (select.options.length === 1 && !select.options[0].value) select.remove(0);
    const option = new Option(namedLabel(id), id);
    option.title = id;
    select.add(option);
    select.disabled = false;
  }

  function adoptMeter(id) {
    noteMeter(id);
    state.meter = id;
    select.value = id;
    showName();
    loadHistory();
    loadConsumption();
    loadToday();
    seedSpark();
  }

  select.addEventListener("change", () => {
    if (!select.value || select.value === state.meter) return;
    state.meter = select.value;
    showName();
    state.lastTs = null;
    state.zoom = null;
    state.spark = [];
    state.today = null;
    state.todayLoadedAt = 0;
    keepInUrl("meter", state.meter);
    getJson("/api/live", { meter: state.meter })
      .then((r) => { syncClock(r.server_time); applyReading(r); applyLink(r.link); applyProblems(r.problems); })
      .catch(() => {});
    loadHistory();
    loadConsumption();
    loadToday();
    seedSpark();
  });

  /* ---- push, with polling as fallback ------------------------------------------------- */

  function setTransport(t) {
    state.transport = t;
    document.body.dataset.transport = t;
  }

  function startSse() {
    if (!window.EventSource) {
      startPolling();
      return;
    }
    stopPolling();
    const es = new EventSource(apiUrl("/api/stream"));
    state.es = es;
    state.lastMessage = Date.now();
    es.addEventListener("open", () => {
      setTransport("sse");
      state.lastMessage = Date.now();
    });
    es.addEventListener("reading", (ev) => {
      state.lastMessage = Date.now();
      const r = JSON.parse(ev.data);
      applyReading(r);
    });
    es.addEventListener("status", (ev) => {
      state.lastMessage = Date.now();
      const s = JSON.parse(ev.data);
      syncClock(s.server_time);
      Object.keys(s.links || {}).forEach((id) => noteMeter(id));
      if (state.meter === null && Object.keys(s.links || {}).length) adoptMeter(Object.keys(s.links)[0]);
      if (s.links && s.links[state.meter]) applyLink(s.links[state.meter]);
      else if (state.meter === null && s.pending) applyLink(s.pending);
      applyProblems(s.problems);
    });
    es.addEventListener("error", () => {
      // CLOSED: the server refused the stream (401, 503) - EventSource gives up, so we poll.
      // CONNECTING: the connection broke; EventSource retries, and its first status event
      // puts the link state back.
      if (es.readyState === EventSource.CLOSED) {
        state.es = null;
        startPolling();
      } else {
        applyOffline();
      }
    });
  }

  function stopSse() {
    if (state.es) state.es.close();
    state.es = null;
  }

  function pollOnce() {
    getJson("/api/live", { meter: state.meter })
      .then((r) => {
        state.lastMessage = Date.now();
        syncClock(r.server_time);
        applyReading(r);
        applyLink(r.link);
        applyProblems(r.problems);
      })
      .catch(applyOffline);
  }

  function startPolling() {
    stopSse();
    stopPolling();
    setTransport("polling");
    pollOnce();
    state.pollTimer = setInterval(pollOnce, POLL_MS);
    state.pollSince = Date.now();
  }

  function stopPolling() {
    if (state.pollTimer) clearInterval(state.pollTimer);
    state.pollTimer = null;
  }

  function watchdog() {
    updateAge();
    const silent = Date.now() - state.lastMessage;
    if (state.transport !== "polling" && state.es && silent > SSE_SILENCE_MS) {
      applyOffline();
      startPolling();   // a proxy may be buffering the stream; plain requests still get through
    } else if (state.transport === "polling" && Date.now() - state.pollSince > SSE_RETRY_MS) {
      startSse();
    }
    maybeRefresh();
  }

  /* ---- history chart ------------------------------------------------------------------ */

  const historyEl = $("#history-chart");
  const historyChart = historyEl && window.SmChart ? new window.SmChart.TimeChart(historyEl, {
    onZoom: (a, b) => {
      if (b - a < 60e3) { const mid = (a + b) / 2; a = mid - 30e3; b = mid + 30e3; }
      state.zoom = [a, b];
      loadHistory();
    },
    onReset: resetZoom
  }) : null;

  function resetZoom() {
    if (!state.zoom) return;
    state.zoom = null;
    loadHistory();
  }

  function pressed(attr, value) {
    $$("[" + attr + "]").forEach((b) => b.setAttribute("aria-pressed", String(b.getAttribute(attr) === value)));
  }

  function loadHistory() {
    if (!historyChart) return;
    state.historyLoadedAt = Date.now();  // when asked: a failing request is not repeated at once
    pressed("data-range", state.range);
    pressed("data-series", state.series);
    $("#zoom-reset").hidden = !state.zoom;
    if (!state.meter) {
      historyChart.setData({ from: serverNow() - SPANS[state.range], to: serverNow(), series: [],
        emptyText: "Waiting for the first reading" });
      return;
    }
    const now = serverNow();
    const span = state.zoom || [now - SPANS[state.range], now];
    const seq = ++state.historySeq;
    historyEl.classList.add("loading");
    getJson("/api/history", {
      meter: state.meter, from: (span[0] / 1000).toFixed(3), to: (span[1] / 1000).toFixed(3)
    }).then((h) => {
      if (seq !== state.historySeq) return;  // superseded by a newer request
      if (h.unavailable && !(h.points || []).length) {
        historyChart.setData({ from: span[0], to: span[1], series: [], emptyText: "History unavailable: " + h.unavailable });
        return;
      }
      // (the readings waiting for a database that is down say nothing about the range to open on)
      if (!state.zoom && state.autoRange && !h.unavailable && pickRange(h.points || [], now)) return;
      state.history = { data: h, from: span[0], to: span[1] };
      renderHistory();
    }).catch((err) => {
      if (seq !== state.historySeq) return;
      historyChart.setData({ from: span[0], to: span[1], series: [], emptyText: "History unavailable: " + err.message });
    }).finally(() => {
      if (seq === state.historySeq) historyEl.classList.remove("loading");
    });
  }

  /* The first load opens on a range that shows data: a wider one when the chosen range is
   * empty (the logger was off), "hour" when all data is younger than an hour (a fresh
   * install). Returns true when it asked for another range. */
  function pickRange(points, now) {
    const order = Object.keys(SPANS);
    const at = order.indexOf(state.range);
    let next = null;
    if (!points.length) {
      next = at < order.length - 1 ? order[at + 1] : "hour";  // nothing stored at all: hour
    } else if (state.range !== "hour" && points[0].ts * 1000 > now - SPANS.hour) {
      next = "hour";
    }
    if (next === null || next === state.range) {
      state.autoRange = false;
      return false;
    }
    if (next === "hour") state.autoRange = false;  // the last step either way
    state.range = next;
    keepInUrl("range", next);
    loadHistory();
    return true;
  }

  function stepText(seconds) {
    if (!seconds) return "";
    if (seconds < 60) return seconds + " s";
    if (seconds < 3600) return Math.round(seconds / 60) + " min";
    if (seconds < 86400) return Math.round(seconds / 3600) + " h";
    return Math.round(seconds / 86400) + " d";
  }

  function medianSpacing(pts) {
    if (pts.length < 2) return 0;
    const deltas = [];
    for (let i = 1; i < pts.length; i++) deltas.push(pts[i].ts - pts[i - 1].ts);
    deltas.sort((a, b) => a - b);
    return Math.round(deltas[deltas.length >> 1]);
  }

  function renderHistory() {
    if (!historyChart || !state.history) return;
    const h = state.history.data, pts = h.points || [];
    const base = { from: state.history.from, to: state.history.to, step: (h.step || 0) * 1000 };
    const hint = $("#history-hint");
    if (state.series === "power") {
      const line = [], band = [];
      let maxAbs = 0;
      pts.forEach((p) => {
        const t = p.ts * 1000;
        if (p.p_avg !== null && p.p_avg !== undefined) {
          line.push([t, p.p_avg]);
          maxAbs = Math.max(maxAbs, Math.abs(p.p_avg));
        }
        if (p.p_min !== null && p.p_min !== undefined && p.p_max !== null && p.p_max !== undefined) {
          band.push([t, p.p_min, p.p_max]);
          maxAbs = Math.max(maxAbs, Math.abs(p.p_min), Math.abs(p.p_max));
        }
      });
      const kw = maxAbs >= 10000;
      historyChart.setData(Object.assign(base, {
        unit: kw ? "kW" : "W", div: kw ? 1000 : 1, decimals: kw ? 2 : 0, zero: true,
        series: [{ label: "Power", color: "--accent", points: line, band: band, bandColor: "--accent-soft" }]
      }));
      if (hint) {
        const spacing = Math.max(h.step || 0, medianSpacing(pts));
        hint.textContent = spacing
          ? "Average power per " + stepText(spacing) + ", shaded: minimum to maximum · drag across the chart to zoom in, double-click to reset"
          : "Drag across the chart to zoom in, double-click to reset";
      }
    } else {
      // energy as kWh used since the start of the range: import and export share one scale
      const series = [["e_sum", "Import", "--energy"], ["e_export", "Export", "--export"]].map(([key, label, color]) => {
        const points = [];
        let first = null;
        pts.forEach((p) => {
          const v = p[key];
          if (v === null || v === undefined) return;
          if (first === null) first = v;
          points.push([p.ts * 1000, v - first]);
        });
        return { label: label + " since start", color: color, points: points, band: null };
      }).filter((s, i) => i === 0 || s.points.some((p) => p[1] !== 0));
      const total = Math.max(...series.map((s) => (s.points.length ? s.points[s.points.length - 1][1] : 0)));
      historyChart.setData(Object.assign(base, {
        unit: "kWh", div: 1, decimals: total < 10 ? 3 : 2, zero: true, series: series
      }));
      if (hint) hint.textContent = "Energy counted since the start of the shown range · drag to zoom, double-click to reset";
    }
    if (hint && h.unavailable) {
      hint.textContent = "The database cannot be read right now: showing only the readings waiting to be stored";
    }
    if (hint) hint.classList.toggle("warn", Boolean(h.unavailable));
  }

  $$("[data-range]").forEach((b) => b.addEventListener("click", () => {
    state.range = b.getAttribute("data-range");
    state.autoRange = false;
    state.zoom = null;
    store("range", state.range);
    keepInUrl("range", state.range);
    loadHistory();
  }));
  $$("[data-series]").forEach((b) => b.addEventListener("click", () => {
    state.series = b.getAttribute("data-series");
    store("series", state.series);
    pressed("data-series", state.series);
    renderHistory();
  }));
  $("#zoom-reset").addEventListener("click", resetZoom);
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") resetZoom(); });

  /* ---- consumption bars --------------------------------------------------------------- */

  const consumptionEl = $("#consumption-chart");
  const consumptionChart = consumptionEl && window.SmChart ? new window.SmChart.BarChart(consumptionEl, {}) : null;

  function loadConsumption() {
    if (!consumptionChart) return;
    pressed("data-period", state.period);
    const now = new Date(serverNow());
    const daily = state.period === "day";
    const from = daily
      ? new Date(now.getFullYear(), now.getMonth(), now.getDate() - 29)
      : new Date(now.getFullYear(), now.getMonth() - 11, 1);
    const end = daily
      ? new Date(now.getFullYear(), now.getMonth(), now.getDate() + 1)
      : new Date(now.getFullYear(), now.getMonth() + 1, 1);
    if (!state.meter) {
      consumptionChart.setData({ from: from.getTime(), to: end.getTime(), period: state.period, series: [], bars: [],
        emptyText: "Waiting for the first reading" });
      return;
    }
    const seq = ++state.consumptionSeq;
    state.consumptionLoadedAt = Date.now();
    const period = state.period;
    getJson("/api/consumption", {
      meter: state.meter, period: period, from: (from.getTime() / 1000).toFixed(0), to: (now.getTime() / 1000).toFixed(0)
    }).then((c) => {
      if (seq !== state.consumptionSeq) return;
      const bars = (c.bars || []).map((b) => ({ t: b.ts * 1000, values: [b.import_kwh, b.export_kwh] }));
      const hasExport = bars.some((b) => b.values[1]);
      const series = [{ label: "Import", color: "--accent", sign: 1 }];
      if (hasExport) series.push({ label: "Export", color: "--export", sign: -1 });
      consumptionChart.setData({
        from: from.getTime(), to: end.getTime(), period: period, unit: "kWh", decimals: 2,
        series: series, bars: bars.map((b) => ({ t: b.t, values: hasExport ? b.values : [b.values[0]] }))
      });
      summarize(bars, period, hasExport);
    }).catch((err) => {
      if (seq !== state.consumptionSeq) return;
      consumptionChart.setData({ from: from.getTime(), to: end.getTime(), period: period, series: [], bars: [],
        emptyText: "Consumption unavailable: " + err.message });
      $("#consumption-summary").textContent = "";
    });
  }

  function summarize(bars, period, hasExport) {
    const el = $("#consumption-summary");
    el.textContent = "";
    const withData = bars.filter((b) => b.values[0] !== null && b.values[0] !== undefined);
    if (!withData.length) return;
    const total = withData.reduce((a, b) => a + b.values[0], 0);
    const parts = [["Total ", fmt(total, 1) + " kWh"],
      [" · average ", fmt(total / withData.length, 2) + " kWh per " + (period === "day" ? "day" : "month")]];
    const last = withData[withData.length - 1];
    parts.push([period === "day" ? " · today " : " · this month ", fmt(last.values[0], 2) + " kWh"]);
    if (hasExport) {
      parts.push([" · exported ", fmt(bars.reduce((a, b) => a + (b.values[1] || 0), 0), 1) + " kWh"]);
    }
    parts.forEach(([label, value]) => {
      el.appendChild(document.createTextNode(label));
      const b = document.createElement("b");
      b.textContent = value;
      el.appendChild(b);
    });
  }

  $$("[data-period]").forEach((b) => b.addEventListener("click", () => {
    state.period = b.getAttribute("data-period");
    store("period", state.period);
    loadConsumption();
  }));

  function maybeRefresh() {
    if (document.hidden) return;
    const now = Date.now();
    // an empty chart (a logger that just started) is asked again soon
    const empty = !state.history || !(state.history.data.points || []).length;
    if (!state.zoom && now - state.historyLoadedAt > (empty ? 5e3 : REFRESH[state.range])) loadHistory();
    if (now - state.consumptionLoadedAt > 300e3) loadConsumption();
    if (now - state.todayLoadedAt > 300e3) loadToday();
    if ($("#details-box").open && now - (state.detailsLoadedAt || 0) > 10e3) loadDetails();
  }

  /* ---- details: sources, sinks, versions ---------------------------------------------- */

  function table(head, rows) {
    const t = document.createElement("table");
    const tr = t.createTHead().insertRow();
    head.forEach((h) => {
      const th = document.createElement("th");
      th.textContent = h;
      tr.appendChild(th);
    });
    const body = t.createTBody();
    rows.forEach((cells) => {
      const row = body.insertRow();
      cells.forEach((c) => {
        const td = row.insertCell();
        if (c && typeof c === "object") {
          td.textContent = c.text;
          if (c.cls) td.className = c.cls;
        } else {
          td.textContent = c === null || c === undefined ? "–" : String(c);
        }
      });
    });
    return t;
  }

  function section(parent, title, node) {
    const h = document.createElement("h3");
    h.textContent = title;
    parent.appendChild(h);
    parent.appendChild(node);
  }

  function loadDetails() {
    state.detailsLoadedAt = Date.now();
    getJson("/api/status").then((st) => {
      const body = $("#details-body");
      body.textContent = "";
      const sources = Object.keys(st.sources || {}).map((name) => {
        const s = st.sources[name], stats = s.stats || {};
        return [{ text: name }, { text: s.state, cls: "state-" + String(s.state).replace(" ", "-") },
          stats.frames_ok, stats.crc_errors,
          s.crc_error_rate === null || s.crc_error_rate === undefined ? null : fmt(s.crc_error_rate * 100, 2) + " %",
          s.last_frame_age_s === null || s.last_frame_age_s === undefined ? null : fmt(s.last_frame_age_s, 1) + " s",
          s.detail || ""];
      });
      section(body, "Sources", sources.length
        ? table(["Source", "State", "Frames", "CRC errors", "Error rate", "Last frame", "Detail"], sources)
        : document.createTextNode("No source has reported yet."));
      const sinks = Object.keys(st.sinks || {}).map((name) => {
        const s = st.sinks[name];
        return [name, s.queue_depth, s.written, s.last_error || ""];
      });
      section(body, "Sinks", sinks.length
        ? table(["Sink", "Queue", "Written", "Last error"], sinks)
        : document.createTextNode("No sink has reported yet."));
      const mqtt = (st.sinks || {}).mqtt;
      if (mqtt) {
        section(body, "MQTT", table(
          ["Broker", "State", "Published", "Queued", "Dropped", "Reconnects", "Detail"],
          [[mqtt.broker, { text: mqtt.state, cls: mqtt.degraded ? "state-no-data" : "state-connected" },
            mqtt.published, mqtt.queue_depth, mqtt.dropped, mqtt.connects, mqtt.detail || ""]]));
      }
      const versions = Object.keys(st.versions || {}).map((k) => [k, st.versions[k]]);
      versions.push(["uptime", humanAge(st.uptime_s || 0)]);
      section(body, "Versions", table(["Component", "Version"], versions));
    }).catch((err) => {
      $("#details-body").textContent = "Status unavailable: " + err.message;
    });
  }
  $("#details-box").addEventListener("toggle", () => { if ($("#details-box").open) loadDetails(); });

  /* ---- start -------------------------------------------------------------------------- */

  applyReading(initial.live);
  applyLink(initial.live.link);
  $("#diag").dataset.key = JSON.stringify(initial.live.problems || []);
  loadHistory();
  loadConsumption();
  loadToday();
  seedSpark();
  startSse();
  setInterval(watchdog, 1000);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) maybeRefresh(); });
  window.addEventListener("resize", drawSpark);
})();
