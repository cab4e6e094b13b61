/* smchart.js - small canvas charts for the smlogger page (no dependencies).
 *
 *   new SmChart.TimeChart(element, {onZoom(fromMs, toMs), onReset()})
 *     .setData({from, to, step, unit, div, decimals, zero,
 *               series: [{label, color: "--css-var", points: [[tMs, v], ...],
 *                         band: [[tMs, lo, hi], ...] | null}]})
 *   new SmChart.BarChart(element, {})
 *     .setData({from, to, period: "day" | "month", unit, decimals,
 *               series: [{label, color: "--css-var", sign: 1 | -1}],
 *               bars: [{t: ms, values: [v0, v1, ...]}]})
 *
 * Colours are CSS custom properties resolved at draw time, so charts follow light/dark mode.
 * Every chart sets data-points on its canvas to the number of values drawn (0 when empty).
 */
(function (global) {
  "use strict";

  var MIN = 60e3, HOUR = 3600e3, DAY = 86400e3;
  var FONT = '11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';

  var fmtCache = {};
  function dtf(key, options) {
    if (!fmtCache[key]) fmtCache[key] = new Intl.DateTimeFormat(undefined, options);
    return fmtCache[key];
  }
  var numCache = {};
  function num(v, decimals) {
    var key = String(decimals);
    if (!numCache[key]) {
      numCache[key] = new Intl.NumberFormat(undefined, {
        minimumFractionDigits: decimals, maximumFractionDigits: decimals
      });
    }
    return numCache[key].format(v);
  }

  function cssVar(el, name, fallback) {
    if (!name || name.charAt(0) !== "-") return name || fallback;
    var v = getComputedStyle(el).getPropertyValue(name).trim();
    return v || fallback;
  }

  /* 1-2-2.5-5 steps so axis labels read like a person would write them */
  function niceScale(min, max, count, zero) {
    if (!isFinite(min) || !isFinite(max)) { min = 0; max = 1; }
    if (zero) { min = Math.min(min, 0); max = Math.max(max, 0); }
    if (max - min < 1e-9) {
      var pad = Math.abs(max) * 0.05 || 1;
      min -= pad; max += pad;
      if (zero && min < 0 && max > 0 && Math.abs(min) < 1e-9) min = 0;
    }
    var raw = (max - min) / Math.max(1, count);
    var mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var norm = raw / mag;
    var step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
    var lo = Math.floor(min / step + 1e-9) * step;
    var hi = Math.ceil(max / step - 1e-9) * step;
    var ticks = [];
    for (var i = 0; lo + i * step <= hi + step * 1e-6; i++) {
      var v = lo + i * step;
      ticks.push(Math.abs(v) < step * 1e-6 ? 0 : v);
    }
    var decimals = Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));
    if (step / Math.pow(10, -decimals) % 1 > 1e-6) decimals += 1; /* 2.5, 0.25 */
    return { min: lo, max: hi, step: step, ticks: ticks, decimals: decimals };
  }

  /* time axis: [count, unit]; units s/m/h stay in milliseconds, d/M/y walk the local calendar */
  var TIME_STEPS = [
    [1, "s"], [5, "s"], [15, "s"], [30, "s"], [1, "m"], [2, "m"], [5, "m"], [10, "m"],
    [15, "m"], [30, "m"], [1, "h"], [2, "h"], [3, "h"], [6, "h"], [12, "h"], [1, "d"],
    [2, "d"], [7, "d"], [14, "d"], [1, "M"], [2, "M"], [3, "M"], [6, "M"], [1, "y"]
  ];
  var UNIT_MS = { s: 1e3, m: MIN, h: HOUR, d: DAY, M: 30.44 * DAY, y: 365.25 * DAY };

  function timeTicks(from, to, maxTicks) {
    var span = to - from;
    var choice = TIME_STEPS[TIME_STEPS.length - 1];
    for (var i = 0; i < TIME_STEPS.length; i++) {
      if (TIME_STEPS[i][0] * UNIT_MS[TIME_STEPS[i][1]] * maxTicks >= span) { choice = TIME_STEPS[i]; break; }
    }
    var n = choice[0], unit = choice[1], ticks = [], t, d;
    if (unit === "s" || unit === "m" || unit === "h") {
      var stepMs = n * UNIT_MS[unit];
      var offset = new Date(from).getTimezoneOffset() * MIN;
      t = Math.ceil((from - offset) / stepMs) * stepMs + offset;
      for (; t <= to; t += stepMs) ticks.push(t);
    } else if (unit === "d") {
      d = new Date(from); d.setHours(0, 0, 0, 0);
      if (n === 7 || n === 14) d.setDate(d.getDate() - ((d.getDay() + 6) % 7)); /* Mondays */
      for (; d.getTime() <= to; d.setDate(d.getDate() + n)) if (d.getTime() >= from) ticks.push(d.getTime());
    } else if (unit === "M") {
      d = new Date(from); d = new Date(d.getFullYear(), d.getMonth() - (d.getMonth() % n), 1);
      for (; d.getTime() <= to; d.setMonth(d.getMonth() + n)) if (d.getTime() >= from) ticks.push(d.getTime());
    } else {
      d = new Date(new Date(from).getFullYear(), 0, 1);
      for (; d.getTime() <= to; d.setFullYear(d.getFullYear() + 1)) if (d.getTime() >= from) ticks.push(d.getTime());
    }
    return { ticks: ticks, unit: unit, n: n };
  }

  function timeLabel(t, unit) {
    var d = new Date(t);
    var midnight = d.getHours() === 0 && d.getMinutes() === 0 && d.getSeconds() === 0;
    if (unit === "s") return dtf("hms", { hour: "2-digit", minute: "2-digit", second: "2-digit" }).format(d);
    if (unit === "m" || unit === "h") {
      if (midnight) return dtf("dm", { day: "numeric", month: "short" }).format(d);
      return dtf("hm", { hour: "2-digit", minute: "2-digit" }).format(d);
    }
    if (unit === "d") return dtf("dm", { day: "numeric", month: "short" }).format(d);
    if (unit === "M") {
      return d.getMonth() === 0
        ? String(d.getFullYear())
        : dtf("mon", { month: "short" }).format(d);
    }
    return String(d.getFullYear());
  }

  function fullTime(t, withSeconds) {
    var o = { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" };
    if (withSeconds) o.second = "2-digit";
    return dtf(withSeconds ? "fulls" : "full", o).format(new Date(t));
  }

  function lowerBound(points, t) {
    var lo = 0, hi = points.length;
    while (lo < hi) {
      var mid = (lo + hi) >> 1;
      if (points[mid][0] < t) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  /* ---- shared canvas plumbing ---------------------------------------------------------- */

  function Base(el, opts) {
    this.el = el;
    this.opts = opts || {};
    this.canvas = document.createElement("canvas");
    this.canvas.setAttribute("data-points", "0");
    el.appendChild(this.canvas);
    this.tip = document.createElement("div");
    this.tip.className = "chart-tip";
    this.tip.hidden = true;
    el.appendChild(this.tip);
    this.data = null;
    var self = this;
    var redraw = function () { self.draw(); };
    if (global.ResizeObserver) new ResizeObserver(redraw).observe(el);
    else global.addEventListener("resize", redraw);
    if (global.matchMedia) {
      var mq = global.matchMedia("(prefers-color-scheme: dark)");
      if (mq.addEventListener) mq.addEventListener("change", redraw);
    }
    this.canvas.addEventListener("pointerleave", function () {
      if (!self.drag) { self.hover = null; self.tip.hidden = true; self.draw(); }
    });
  }

  Base.prototype.setData = function (data) {
    this.data = data;
    this.hover = null;
    this.tip.hidden = true;
    this.draw();
  };

  Base.prototype.begin = function () {
    var w = this.el.clientWidth, h = this.el.clientHeight;
    var dpr = global.devicePixelRatio || 1;
    if (this.canvas.width !== Math.round(w * dpr) || this.canvas.height !== Math.round(h * dpr)) {
      this.canvas.width = Math.round(w * dpr);
      this.canvas.height = Math.round(h * dpr);
    }
    var ctx = this.canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = FONT;
    this.colors = {
      text: cssVar(this.el, "--muted", "#667"),
      faint: cssVar(this.el, "--faint", "#999"),
      grid: cssVar(this.el, "--grid", "#eee"),
      border: cssVar(this.el, "--border", "#ddd"),
      accentSoft: cssVar(this.el, "--accent-soft", "rgba(37,99,235,.15)")
    };
    return { ctx: ctx, w: w, h: h };
  };

  Base.prototype.yAxis = function (ctx, scale, plot, unit, div) {
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (var i = 0; i < scale.ticks.length; i++) {
      var v = scale.ticks[i], y = plot.y(v);
      ctx.strokeStyle = v === 0 ? this.colors.border : this.colors.grid;
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(plot.left, Math.round(y) + 0.5);
      ctx.lineTo(plot.right, Math.round(y) + 0.5);
      ctx.stroke();
      ctx.fillStyle = this.colors.faint;
      ctx.fillText(num(v / div, scale.labelDecimals), plot.left - 8, y);
    }
    if (unit) {
      ctx.textAlign = "left";
      ctx.textBaseline = "top";
      ctx.fillStyle = this.colors.text;
      ctx.fillText(unit, 2, 0);
    }
  };

  Base.prototype.labelWidth = function (ctx, scale, div) {
    var widest = 0;
    for (var i = 0; i < scale.ticks.length; i++) {
      widest = Math.max(widest, ctx.measureText(num(scale.ticks[i] / div, scale.labelDecimals)).width);
    }
    return Math.ceil(widest);
  };

  Base.prototype.emptyText = function (ctx, plot, text) {
    ctx.fillStyle = this.colors.faint;
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.font = '13px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
    ctx.fillText(text, (plot.left + plot.right) / 2, (plot.top + plot.bottom) / 2);
    ctx.font = FONT;
  };

  /* rows: [{color, label, value, extra}]; built as DOM nodes (the page's CSP forbids inline styles
     in markup, while CSSOM assignments are fine) */
  Base.prototype.showTip = function (x, y, title, rows) {
    var tip = this.tip;
    tip.textContent = "";
    var head = document.createElement("div");
    head.className = "t";
    head.textContent = title;
    tip.appendChild(head);
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i], line = document.createElement("div");
      var sw = document.createElement("span");
      sw.className = "sw";
      sw.style.background = r.color;
      line.appendChild(sw);
      line.appendChild(document.createTextNode(r.label + " "));
      var b = document.createElement("b");
      b.textContent = r.value;
      line.appendChild(b);
      if (r.extra) {
        var e = document.createElement("span");
        e.className = "x";
        e.textContent = " " + r.extra;
        line.appendChild(e);
      }
      tip.appendChild(line);
    }
    tip.hidden = false;
    var w = tip.offsetWidth, h = tip.offsetHeight, W = this.el.clientWidth;
    var left = x + 14;
    if (left + w > W) left = Math.max(0, x - w - 14);
    tip.style.left = left + "px";
    tip.style.top = Math.max(0, Math.min(y - h / 2, this.el.clientHeight - h)) + "px";
  };

  function scaledScale(scale, div) {
    /* labels are divided by div (W -> kW), so the decimals follow the divided step */
    var step = scale.step / div;
    var d = Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));
    if (step / Math.pow(10, -d) % 1 > 1e-6) d += 1;
    scale.labelDecimals = d;
    return scale;
  }

  /* ---- time series --------------------------------------------------------------------- */

  function TimeChart(el, opts) {
    Base.call(this, el, opts);
    var self = this;
    this.hover = null;
    this.drag = null;
    var c = this.canvas;
    c.addEventListener("pointerdown", function (ev) {
      if (ev.button !== 0 || !self.plot) return;
      var x = self.localX(ev);
      if (x < self.plot.left || x > self.plot.right) return;
      self.drag = { x0: x, x1: x, id: ev.pointerId };
      try { c.setPointerCapture(ev.pointerId); } catch (e) { /* pointer already gone */ }
    });
    c.addEventListener("pointermove", function (ev) {
      if (!self.plot) return;
      var x = self.localX(ev);
      if (self.drag) {
        self.drag.x1 = Math.max(self.plot.left, Math.min(self.plot.right, x));
        self.tip.hidden = true;
        self.draw();
        return;
      }
      self.pointAt(x, self.localY(ev));
    });
    var finish = function (ev) {
      var drag = self.drag;
      self.drag = null;
      if (!drag) return;
      if (Math.abs(drag.x1 - drag.x0) > 6 && self.opts.onZoom) {
        var a = self.plot.t(Math.min(drag.x0, drag.x1)), b = self.plot.t(Math.max(drag.x0, drag.x1));
        self.opts.onZoom(Math.round(a), Math.round(b));
      } else if (ev.type === "pointerup") {
        self.pointAt(self.localX(ev), self.localY(ev));
      }
      self.draw();
    };
    c.addEventListener("pointerup", finish);
    c.addEventListener("pointercancel", finish);
    c.addEventListener("dblclick", function () { if (self.opts.onReset) self.opts.onReset(); });
  }
  TimeChart.prototype = Object.create(Base.prototype);

  TimeChart.prototype.localX = function (ev) { return ev.clientX - this.canvas.getBoundingClientRect().left; };
  TimeChart.prototype.localY = function (ev) { return ev.clientY - this.canvas.getBoundingClientRect().top; };

  TimeChart.prototype.pointAt = function (x, y) {
    var d = this.data, plot = this.plot;
    if (!d || !plot || !d.series.length || x < plot.left - 4 || x > plot.right + 4) {
      if (this.hover !== null) { this.hover = null; this.tip.hidden = true; this.draw(); }
      return;
    }
    var t = plot.t(x), best = null, bestDx = Infinity;
    for (var s = 0; s < d.series.length; s++) {
      var pts = d.series[s].points;
      var i = lowerBound(pts, t);
      for (var j = Math.max(0, i - 1); j <= Math.min(pts.length - 1, i); j++) {
        var dx = Math.abs(plot.x(pts[j][0]) - x);
        if (dx < bestDx) { bestDx = dx; best = pts[j][0]; }
      }
    }
    if (best === null || bestDx > 40) {
      this.hover = null; this.tip.hidden = true; this.draw();
      return;
    }
    this.hover = best;
    this.draw();
    var rows = [];
    for (s = 0; s < d.series.length; s++) {
      var ser = d.series[s], k = lowerBound(ser.points, best);
      if (k >= ser.points.length || ser.points[k][0] !== best) continue;
      var row = { color: cssVar(this.el, ser.color, "#888"), label: ser.label,
                  value: this.format(ser.points[k][1]), extra: "" };
      if (ser.band) {
        var b = ser.band[lowerBound(ser.band, best)];
        if (b && b[0] === best && b[1] !== b[2]) {
          row.extra = "(" + this.format(b[1]) + " – " + this.format(b[2]) + ")";
        }
      }
      rows.push(row);
    }
    this.showTip(plot.x(best), Math.max(plot.top + 20, y), fullTime(best, d.step && d.step < 60e3), rows);
  };

  TimeChart.prototype.format = function (v) {
    var d = this.data;
    return num(v / (d.div || 1), d.decimals == null ? 1 : d.decimals) + " " + (d.unit || "");
  };

  TimeChart.prototype.draw = function () {
    var g = this.begin(), ctx = g.ctx, d = this.data, i, s;
    if (!d || g.w < 40 || g.h < 40) { this.canvas.setAttribute("data-points", "0"); return; }
    var from = d.from, to = d.to;
    var lo = Infinity, hi = -Infinity, count = 0;
    for (s = 0; s < d.series.length; s++) {
      var ser = d.series[s];
      for (i = 0; i < ser.points.length; i++) {
        var p = ser.points[i];
        if (p[0] < from || p[0] > to) continue;
        lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); count++;
      }
      if (ser.band) {
        for (i = 0; i < ser.band.length; i++) {
          var b = ser.band[i];
          if (b[0] < from || b[0] > to) continue;
          lo = Math.min(lo, b[1]); hi = Math.max(hi, b[2]);
        }
      }
    }
    var div = d.div || 1;
    var scale = scaledScale(niceScale(lo, hi, Math.max(2, Math.floor(g.h / 55)), d.zero && count > 0), div);
    var left = Math.max(36, this.labelWidth(ctx, scale, div) + 14);
    var plot = {
      left: left, right: g.w - 10, top: 18, bottom: g.h - 24,
      x: function (t) { return plot.left + (t - from) / (to - from) * (plot.right - plot.left); },
      t: function (x) { return from + (x - plot.left) / (plot.right - plot.left) * (to - from); },
      y: function (v) { return plot.bottom - (v - scale.min) / (scale.max - scale.min) * (plot.bottom - plot.top); }
    };
    this.plot = plot;
    this.yAxis(ctx, scale, plot, d.unit, div);

    var tt = timeTicks(from, to, Math.max(2, Math.floor((plot.right - plot.left) / 90)));
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (i = 0; i < tt.ticks.length; i++) {
      var x = plot.x(tt.ticks[i]);
      ctx.strokeStyle = this.colors.grid;
      ctx.beginPath(); ctx.moveTo(Math.round(x) + 0.5, plot.top); ctx.lineTo(Math.round(x) + 0.5, plot.bottom); ctx.stroke();
      var label = timeLabel(tt.ticks[i], tt.unit), half = ctx.measureText(label).width / 2;
      if (x - half < 2 || x + half > g.w - 1) continue;  /* a clipped label reads worse than none */
      ctx.fillStyle = this.colors.faint;
      ctx.fillText(label, x, plot.bottom + 7);
    }

    ctx.save();
    ctx.beginPath();
    ctx.rect(plot.left, plot.top - 2, plot.right - plot.left, plot.bottom - plot.top + 4);
    ctx.clip();
    /* a line breaks where data is missing: gaps well beyond the usual spacing of the points
       (which can be wider than the bucket step when the meter was stored less often) */
    var gap = Math.max(d.step || 0, this.inferStep()) * 2.5;
    for (s = 0; s < d.series.length; s++) this.drawSeries(ctx, plot, d.series[s], gap);
    if (this.hover !== null) {
      var hx = plot.x(this.hover);
      ctx.strokeStyle = this.colors.faint;
      ctx.setLineDash([3, 3]);
      ctx.beginPath(); ctx.moveTo(Math.round(hx) + 0.5, plot.top); ctx.lineTo(Math.round(hx) + 0.5, plot.bottom); ctx.stroke();
      ctx.setLineDash([]);
      for (s = 0; s < d.series.length; s++) {
        var pts = d.series[s].points, k = lowerBound(pts, this.hover);
        if (k < pts.length && pts[k][0] === this.hover) {
          ctx.fillStyle = cssVar(this.el, d.series[s].color, "#888");
          ctx.beginPath(); ctx.arc(hx, plot.y(pts[k][1]), 3.5, 0, 2 * Math.PI); ctx.fill();
        }
      }
    }
    if (this.drag) {
      ctx.fillStyle = this.colors.accentSoft;
      var x0 = Math.min(this.drag.x0, this.drag.x1), x1 = Math.max(this.drag.x0, this.drag.x1);
      ctx.fillRect(x0, plot.top, x1 - x0, plot.bottom - plot.top);
    }
    ctx.restore();
    if (!count) this.emptyText(ctx, plot, d.emptyText || "No data in this range yet");
    this.canvas.setAttribute("data-points", String(count));
  };

  TimeChart.prototype.inferStep = function () {
    var pts = this.data.series.length ? this.data.series[0].points : [];
    if (pts.length < 2) return 60e3;
    var deltas = [];
    for (var i = 1; i < pts.length; i++) deltas.push(pts[i][0] - pts[i - 1][0]);
    deltas.sort(function (a, b) { return a - b; });
    return deltas[deltas.length >> 1] || 60e3;
  };

  TimeChart.prototype.drawSeries = function (ctx, plot, ser, gap) {
    var color = cssVar(this.el, ser.color, "#2563eb");
    var i, segs = [], cur = [];
    var pts = ser.points;
    for (i = 0; i < pts.length; i++) {
      if (cur.length && pts[i][0] - cur[cur.length - 1][0] > gap) { segs.push(cur); cur = []; }
      cur.push(pts[i]);
    }
    if (cur.length) segs.push(cur);
    if (ser.band && ser.band.length) {
      var bsegs = [], bcur = [];
      for (i = 0; i < ser.band.length; i++) {
        if (bcur.length && ser.band[i][0] - bcur[bcur.length - 1][0] > gap) { bsegs.push(bcur); bcur = []; }
        bcur.push(ser.band[i]);
      }
      if (bcur.length) bsegs.push(bcur);
      ctx.fillStyle = cssVar(this.el, ser.bandColor || "--accent-soft", "rgba(37,99,235,.15)");
      for (var s = 0; s < bsegs.length; s++) {
        var seg = bsegs[s];
        if (seg.length < 2) continue;
        ctx.beginPath();
        ctx.moveTo(plot.x(seg[0][0]), plot.y(seg[0][2]));
        for (i = 1; i < seg.length; i++) ctx.lineTo(plot.x(seg[i][0]), plot.y(seg[i][2]));
        for (i = seg.length - 1; i >= 0; i--) ctx.lineTo(plot.x(seg[i][0]), plot.y(seg[i][1]));
        ctx.closePath();
        ctx.fill();
      }
    }
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.lineWidth = 1.7;
    ctx.lineJoin = "round";
    for (var k = 0; k < segs.length; k++) {
      var sg = segs[k];
      if (sg.length === 1) {
        ctx.beginPath(); ctx.arc(plot.x(sg[0][0]), plot.y(sg[0][1]), 2.5, 0, 2 * Math.PI); ctx.fill();
        continue;
      }
      ctx.beginPath();
      ctx.moveTo(plot.x(sg[0][0]), plot.y(sg[0][1]));
      for (i = 1; i < sg.length; i++) ctx.lineTo(plot.x(sg[i][0]), plot.y(sg[i][1]));
      ctx.stroke();
    }
  };

  /* ---- bars per day / month ------------------------------------------------------------ */

  function BarChart(el, opts) {
    Base.call(this, el, opts);
    var self = this;
    this.hover = null;
    var move = function (ev) {
      if (!self.plot || !self.data) return;
      var r = self.canvas.getBoundingClientRect();
      self.barAt(ev.clientX - r.left, ev.clientY - r.top);
    };
    this.canvas.addEventListener("pointermove", move);
    this.canvas.addEventListener("pointerdown", move);
  }
  BarChart.prototype = Object.create(Base.prototype);

  function periodEnd(t, period) {
    var d = new Date(t);
    if (period === "month") return new Date(d.getFullYear(), d.getMonth() + 1, 1).getTime();
    return new Date(d.getFullYear(), d.getMonth(), d.getDate() + 1).getTime();
  }

  BarChart.prototype.barAt = function (x, y) {
    var d = this.data, plot = this.plot, hit = null;
    for (var i = 0; i < d.bars.length; i++) {
      var b = d.bars[i];
      if (x >= plot.x(b.t) && x < plot.x(periodEnd(b.t, d.period))) { hit = i; break; }
    }
    if (hit === this.hover) return;
    this.hover = hit;
    this.draw();
    if (hit === null) { this.tip.hidden = true; return; }
    var bar = d.bars[hit];
    var when = d.period === "month"
      ? dtf("my", { month: "long", year: "numeric" }).format(new Date(bar.t))
      : dtf("wdmy", { weekday: "short", day: "numeric", month: "short", year: "numeric" }).format(new Date(bar.t));
    var rows = [];
    for (var s = 0; s < d.series.length; s++) {
      var v = bar.values[s];
      if (v == null) continue;
      rows.push({ color: cssVar(this.el, d.series[s].color, "#888"), label: d.series[s].label,
                  value: num(v, d.decimals == null ? 2 : d.decimals) + " " + (d.unit || "") });
    }
    var cx = (plot.x(bar.t) + plot.x(periodEnd(bar.t, d.period))) / 2;
    this.showTip(cx, Math.max(plot.top + 20, y), when, rows);
  };

  BarChart.prototype.draw = function () {
    var g = this.begin(), ctx = g.ctx, d = this.data, i, s;
    if (!d || g.w < 40 || g.h < 40) { this.canvas.setAttribute("data-points", "0"); return; }
    var lo = 0, hi = 0, count = 0;
    for (i = 0; i < d.bars.length; i++) {
      for (s = 0; s < d.series.length; s++) {
        var v = d.bars[i].values[s];
        if (v == null) continue;
        var signed = v * (d.series[s].sign || 1);
        lo = Math.min(lo, signed); hi = Math.max(hi, signed); count++;
      }
    }
    if (hi === 0 && lo === 0) hi = 1;  /* nothing yet, or nothing used: an axis from 0 up */
    var scale = scaledScale(niceScale(lo, hi, Math.max(2, Math.floor(g.h / 50)), true), 1);
    var from = d.from, to = d.to;
    var plot = {
      left: Math.max(36, this.labelWidth(ctx, scale, 1) + 14), right: g.w - 10, top: 18, bottom: g.h - 24,
      x: function (t) { return plot.left + (t - from) / (to - from) * (plot.right - plot.left); },
      y: function (val) { return plot.bottom - (val - scale.min) / (scale.max - scale.min) * (plot.bottom - plot.top); }
    };
    this.plot = plot;
    this.yAxis(ctx, scale, plot, d.unit, 1);

    /* x labels: every k-th period so labels keep ~56 px apart */
    var periods = [], t = from;
    while (t < to && periods.length < 5000) { periods.push(t); t = periodEnd(t, d.period); }
    var pw = (plot.right - plot.left) / Math.max(1, periods.length);
    var every = Math.max(1, Math.ceil(56 / pw));
    if (d.period === "day" && every > 1) every = every <= 2 ? 2 : every <= 7 ? 7 : 14;
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    ctx.fillStyle = this.colors.faint;
    for (i = 0; i < periods.length; i++) {
      if (i % every) continue;
      var p0 = new Date(periods[i]);
      var label = d.period === "month"
        ? (p0.getMonth() === 0 || i === 0
          ? dtf("my2", { month: "short", year: "2-digit" }).format(p0)
          : dtf("mon", { month: "short" }).format(p0))
        : (p0.getDate() === 1 || i === 0
          ? dtf("dm", { day: "numeric", month: "short" }).format(p0)
          : String(p0.getDate()));
      ctx.fillText(label, plot.x(periods[i]) + pw / 2, plot.bottom + 7);
    }

    var zeroY = plot.y(0);
    for (i = 0; i < d.bars.length; i++) {
      var bar = d.bars[i];
      var x0 = plot.x(bar.t), x1 = plot.x(periodEnd(bar.t, d.period));
      var w = Math.max(1, (x1 - x0) * 0.72), bx = x0 + ((x1 - x0) - w) / 2;
      if (this.hover === i) {
        ctx.fillStyle = this.colors.grid;
        ctx.fillRect(x0, plot.top, x1 - x0, plot.bottom - plot.top);
      }
      for (s = 0; s < d.series.length; s++) {
        var val = bar.values[s];
        if (val == null) continue;
        var y = plot.y(val * (d.series[s].sign || 1));
        ctx.fillStyle = cssVar(this.el, d.series[s].color, "#2563eb");
        var top = Math.min(y, zeroY), hgt = Math.max(Math.abs(zeroY - y), val ? 1 : 0);
        var r = Math.min(3, w / 2, hgt);
        ctx.beginPath();
        if (ctx.roundRect && r > 0) {
          var radii = y <= zeroY ? [r, r, 0, 0] : [0, 0, r, r];
          ctx.roundRect(bx, top, w, hgt, radii);
        } else {
          ctx.rect(bx, top, w, hgt);
        }
        ctx.fill();
      }
    }
    if (!count) this.emptyText(ctx, plot, d.emptyText || "No data in this range yet");
    this.canvas.setAttribute("data-points", String(count));
  };

  /* ---- sparkline: points [[tMs, v]] over [from, to], filled down to zero ------------------ */

  function sparkline(canvas, points, from, to, color) {
    var w = canvas.clientWidth, h = canvas.clientHeight, dpr = global.devicePixelRatio || 1;
    if (!w || !h) return;
    if (canvas.width !== Math.round(w * dpr)) canvas.width = Math.round(w * dpr);
    if (canvas.height !== Math.round(h * dpr)) canvas.height = Math.round(h * dpr);
    var ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    if (points.length < 2) return;
    var lo = 0, hi = 0;
    for (var i = 0; i < points.length; i++) { lo = Math.min(lo, points[i][1]); hi = Math.max(hi, points[i][1]); }
    if (hi - lo < 1e-9) hi = lo + 1;
    var pad = 2;
    var x = function (t) { return (t - from) / (to - from) * w; };
    var y = function (v) { return pad + (hi - v) / (hi - lo) * (h - 2 * pad); };
    var stroke = cssVar(canvas, color, "#2563eb");
    ctx.beginPath();
    ctx.moveTo(x(points[0][0]), y(0));
    for (i = 0; i < points.length; i++) ctx.lineTo(x(points[i][0]), y(points[i][1]));
    ctx.lineTo(x(points[points.length - 1][0]), y(0));
    ctx.closePath();
    var grad = ctx.createLinearGradient(0, 0, 0, h);
    grad.addColorStop(0, cssVar(canvas, "--accent-soft", "rgba(37,99,235,.18)"));
    grad.addColorStop(1, "rgba(0,0,0,0)");
    ctx.fillStyle = grad;
    ctx.fill();
    ctx.beginPath();
    for (i = 0; i < points.length; i++) {
      if (i) ctx.lineTo(x(points[i][0]), y(points[i][1])); else ctx.moveTo(x(points[i][0]), y(points[i][1]));
    }
    ctx.strokeStyle = stroke;
    ctx.lineWidth = 1.5;
    ctx.lineJoin = "round";
    ctx.stroke();
  }

  global.SmChart = {
    sparkline: sparkline, TimeChart: TimeChart, BarChart: BarChart, niceScale: niceScale, timeTicks: timeTicks };
})(window);
