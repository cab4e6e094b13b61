<!doctype html>
<%
f = live["fields"]
def has(*names):
    return any(f.get(n) is not None for n in names)
end
power_text, power_unit = fmt_power(f.get("p_sum"))
p = f.get("p_sum")
flow = "export" if p is not None and p < 0 else "import"
phases = [("L1", "p_L1"), ("L2", "p_L2"), ("L3", "p_L3")]
scale = max([abs(f.get(k) or 0) for _, k in phases] + [500.0])
state = link["state"] or link_states["initial"]
state_text = link_states["labels"].get(state, state)
rate = link["crc_error_rate"]
age = live["age_s"]
%>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="theme-color" content="#f4f6fa" media="(prefers-color-scheme: light)">
<meta name="theme-color" content="#0e1116" media="(prefers-color-scheme: dark)">
<title>{{power_text + " " + power_unit + " · " if p is not None else ""}}smlogger</title>
<link rel="icon" type="image/svg+xml" href="{{asset('icon.svg')}}">
<link rel="stylesheet" href="{{asset('style.css')}}">
<noscript><meta http-equiv="refresh" content="10"></noscript>
<script src="{{asset('smchart.js')}}" defer></script>
<script src="{{asset('app.js')}}" defer></script>
</head>
<body>
<header class="topbar">
  <div class="brand">
    <svg class="logo" viewBox="0 0 24 24" aria-hidden="true"><path d="M13.5 2 5 13.2h6.1L9.8 22l8.7-11.6h-6.2z"/></svg>
    <span>smlogger</span>
  </div>
  <form class="meter-pick" method="get" action="/">
    <label for="meter">Meter</label>
    <select id="meter" name="meter"{{!"" if meters else " disabled"}}>
% if not meters:
      <option value="">waiting for a meter…</option>
% end
% for m in meters:
      <option value="{{m}}" title="{{m}}"{{!" selected" if m == meter else ""}}>{{meter_label(m)}}</option>
% end
    </select>
% if token:
    <input type="hidden" name="token" value="{{token}}">
% end
    <noscript><button type="submit">Show</button></noscript>
  </form>
  <div class="link" id="link" data-state="{{state}}" role="status" aria-live="polite">
    <span class="dot" aria-hidden="true"></span>
    <span id="link-text" title="{{link['detail'] or ''}}">{{state_text}}</span>
    <span class="sep" aria-hidden="true">·</span>
    <span id="crc" title="share of frames dropped for a bad CRC">CRC errors {{"–" if rate is None else "%.2f %%" % (rate * 100)}}</span>
    <span class="sep" aria-hidden="true">·</span>
    <span id="age" data-ts="{{live['ts'] if live['ts'] is not None else ''}}">{{"no data yet" if age is None else "updated %d s ago" % age}}</span>
  </div>
</header>

<main>
  <section class="diag" id="diag" role="alert" aria-label="What keeps data from arriving"{{!"" if problems else " hidden"}}>
% for problem in problems:
    <div class="diag-item" data-code="{{problem['code']}}" data-source="{{problem['source']}}">
      <p class="diag-sentence"><b class="diag-source">{{problem['source']}}:</b> {{problem['sentence']}}</p>
      <p class="diag-hint">{{problem['hint']}}</p>
    </div>
% end
  </section>

  <section class="tiles" id="tiles" aria-label="Live values">
    <article class="tile tile-power" data-flow="{{flow}}">
      <h2>Power<span id="meter-name">{{" · " + meter_name(meter) if meter and meter_name(meter) else ""}}</span></h2>
      <p class="big"><span data-f="p_sum">{{power_text}}</span><span class="unit" data-u="p_sum">{{power_unit}}</span></p>
      <p class="sub" id="flow">{{"no reading yet" if p is None else ("feeding into the grid" if flow == "export" else "drawing from the grid")}}</p>
      <canvas class="spark" id="spark" aria-hidden="true" hidden></canvas>
    </article>

    <article class="tile" data-group="import"{{!"" if has("e_sum", "e_t1", "e_t2") or p is None else " hidden"}}>
      <h2>Meter reading · import</h2>
      <p class="big"><span data-f="e_sum">{{fmt_number(f.get("e_sum"), 3)}}</span><span class="unit">kWh</span></p>
      <dl class="kv">
        <div id="today-row" hidden><dt>Today</dt><dd><span id="today">–</span> kWh</dd></div>
        <div data-row="e_t1"{{!"" if f.get("e_t1") is not None else " hidden"}}><dt>Tariff 1</dt><dd><span data-f="e_t1">{{fmt_number(f.get("e_t1"), 3)}}</span> kWh</dd></div>
        <div data-row="e_t2"{{!"" if f.get("e_t2") is not None else " hidden"}}><dt>Tariff 2</dt><dd><span data-f="e_t2">{{fmt_number(f.get("e_t2"), 3)}}</span> kWh</dd></div>
      </dl>
    </article>

    <article class="tile" data-group="export"{{!"" if has("e_export", "e_export_t1", "e_export_t2") else " hidden"}}>
      <h2>Meter reading · export</h2>
      <p class="big"><span data-f="e_export">{{fmt_number(f.get("e_export"), 3)}}</span><span class="unit">kWh</span></p>
      <dl class="kv">
        <div data-row="e_export_t1"{{!"" if f.get("e_export_t1") is not None else " hidden"}}><dt>Tariff 1</dt><dd><span data-f="e_export_t1">{{fmt_number(f.get("e_export_t1"), 3)}}</span> kWh</dd></div>
        <div data-row="e_export_t2"{{!"" if f.get("e_export_t2") is not None else " hidden"}}><dt>Tariff 2</dt><dd><span data-f="e_export_t2">{{fmt_number(f.get("e_export_t2"), 3)}}</span> kWh</dd></div>
      </dl>
    </article>

    <article class="tile tile-phases" data-group="phases"{{!"" if has("p_L1", "p_L2", "p_L3") else " hidden"}}>
      <h2>Power per phase</h2>
% for label, key in phases:
<%
v = f.get(key)
txt, unit = fmt_power(v)
width = 0 if v is None else min(100.0, abs(v) / scale * 100)
%>
      <div class="phase" data-row="{{key}}"{{!"" if v is not None else " hidden"}}>
        <span class="ph">{{label}}</span>
        <svg class="bar" viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true"><rect class="track" width="100" height="10"/><rect class="fill{{" neg" if v is not None and v < 0 else ""}}" data-bar="{{key}}" width="{{"%.2f" % width}}" height="10"/></svg>
        <span class="val"><span data-f="{{key}}">{{txt}}</span> <span data-u="{{key}}">{{unit}}</span></span>
      </div>
% end
    </article>

    <article class="tile tile-grid" data-group="grid"{{!"" if has("u_L1", "u_L2", "u_L3", "i_L1", "i_L2", "i_L3", "freq") else " hidden"}}>
      <h2>Grid</h2>
      <table>
        <thead><tr><th scope="col"><span class="sr-only">Phase</span></th><th scope="col">Voltage</th><th scope="col">Current</th></tr></thead>
        <tbody>
% for n in ("1", "2", "3"):
          <tr data-row="L{{n}}"{{!"" if has("u_L" + n, "i_L" + n) else " hidden"}}><th scope="row">L{{n}}</th><td><span data-f="u_L{{n}}">{{fmt_number(f.get("u_L" + n), 1)}}</span> V</td><td><span data-f="i_L{{n}}">{{fmt_number(f.get("i_L" + n), 2)}}</span> A</td></tr>
% end
        </tbody>
      </table>
      <p class="freq" data-row="freq"{{!"" if f.get("freq") is not None else " hidden"}}>Frequency <span><span data-f="freq">{{fmt_number(f.get("freq"), 2)}}</span> Hz</span></p>
    </article>
  </section>

  <section class="card" id="history" aria-labelledby="history-title">
    <div class="card-head">
      <h2 id="history-title">History</h2>
      <div class="controls">
        <div class="seg" role="group" aria-label="Quantity">
          <button type="button" data-series="power" aria-pressed="true">Power</button>
          <button type="button" data-series="energy" aria-pressed="false">Energy</button>
        </div>
        <div class="seg" role="group" aria-label="Time range">
          <button type="button" data-range="hour" aria-pressed="false">1 h</button>
          <button type="button" data-range="day" aria-pressed="true">24 h</button>
          <button type="button" data-range="week" aria-pressed="false">7 d</button>
          <button type="button" data-range="month" aria-pressed="false">30 d</button>
          <button type="button" data-range="year" aria-pressed="false">1 y</button>
        </div>
        <button type="button" class="ghost" id="zoom-reset" hidden>Reset zoom</button>
      </div>
    </div>
% if has_history:
    <div class="chart" id="history-chart" role="img" aria-label="Power history chart"></div>
    <p class="hint" id="history-hint">Drag across the chart to zoom in · double-click to reset</p>
% else:
    <p class="empty">History needs the database, which is switched off for this logger.</p>
% end
    <noscript><p class="empty">The charts need JavaScript; the live values above refresh every 10 s.</p></noscript>
  </section>

  <section class="card" id="consumption" aria-labelledby="consumption-title">
    <div class="card-head">
      <h2 id="consumption-title">Consumption</h2>
      <div class="controls">
        <div class="seg" role="group" aria-label="Period">
          <button type="button" data-period="day" aria-pressed="true">Daily</button>
          <button type="button" data-period="month" aria-pressed="false">Monthly</button>
        </div>
      </div>
    </div>
% if has_history:
    <p class="summary" id="consumption-summary"></p>
    <div class="chart chart-bars" id="consumption-chart" role="img" aria-label="Energy consumption per day"></div>
% else:
    <p class="empty">Consumption needs the database, which is switched off for this logger.</p>
% end
  </section>

  <section class="card" id="details">
    <details id="details-box">
      <summary>Sources, sinks and decoder statistics</summary>
      <div id="details-body" class="details-body"><p class="empty">Loading…</p></div>
    </details>
  </section>
</main>

<footer class="foot">
  <span>smlogger {{version}}</span>
  <a href="/api/status{{token_query}}">status</a>
  <a href="/api{{token_query}}">API</a>
  <a href="/metrics{{token_query}}">metrics</a>
</footer>
<script id="sm-initial" type="application/json">{{!initial_json}}</script>
</body>
</html>
