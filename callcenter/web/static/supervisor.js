"use strict";
// The supervisor's view. All data goes into the page with textContent, never innerHTML.
(() => {
  const T = JSON.parse(document.getElementById("i18n").textContent);
  const $ = (id) => document.getElementById(id);
  const CASE_STATES = ["dispatch", "handle", "feedback", "closed", "cancelled", "escalated"];
  const ALARM_STATES = ["new", "claimed", "handled"];

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function row(cells, cls) {
    const tr = el("tr", undefined, cls);
    for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
    return tr;
  }

  function fillTable(id, rows) {
    const body = document.querySelector(`#${id} tbody`);
    const columns = document.querySelectorAll(`#${id} thead th`).length;
    if (!rows.length) {
      const td = el("td", T.none, "muted");
      td.colSpan = columns;
      rows = [row([td])];
    }
    body.replaceChildren(...rows);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Math.max(0, Math.round(seconds));
    if (s < 3600) return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    const h = Math.floor(s / 3600);
    return `${h} ${T.hours} ${Math.floor((s % 3600) / 60)} ${T.minutes}`;
  }

  function when(iso) {
    return iso ? new Date(iso).toLocaleString() : T.none;
  }

  function kindName(kind) {
    return T[`kind_${kind}`] || kind;
  }

  function counted(id, shown, total) {
    $(id).textContent = shown < total ? `${total}（${T.showing_first.replace("{n}", shown)}）`
      : String(total);
  }

  function share(threshold) {
    if (threshold.share === null) return el("td", "—", "muted");
    const judged = threshold.met + threshold.missed;
    const text = `${(threshold.share * 100).toFixed(1)}% (${threshold.met}/${judged})`;
    const td = el("td", text, threshold.missed ? "missed" : "met");
    td.dataset.withinS = threshold.within_s;
    if (threshold.pending) td.append(el("span", ` +${threshold.pending} ${T.waiting}`, "muted"));
    return td;
  }

  function render(data) {
    $("day").textContent = data.day;
    $("updated").textContent = new Date(data.now).toLocaleTimeString();

    $("unclaimed-card").classList.toggle("quiet", data.unclaimed_life_safety.length === 0);
    $("unclaimed-count").textContent = String(data.unclaimed_life_safety.length);
    fillTable("unclaimed", data.unclaimed_life_safety.map((a) => {
      const tr = row([kindName(a.kind), a.elder_name || `${T.unknown_caller} ${a.caller}`,
        duration(a.wait_s)], "flagged-alarm");
      tr.dataset.alarmId = a.id;
      return tr;
    }));

    fillTable("compliance", data.compliance.map((c) => {
      const tr = row([T[`group_${c.group}`] || c.group, c.alarms, c.answered, c.waiting,
        duration(c.median_answer_s), ...c.thresholds.map(share)]);
      tr.dataset.group = c.group;
      return tr;
    }));

    const byKind = (counts, states) => counts.map((k) => row([kindName(k.kind), k.total,
      ...states.map((s) => k.by_state[s] || 0)]));
    fillTable("today-alarms", byKind(data.alarms, ALARM_STATES));
    fillTable("today-cases", byKind(data.cases, CASE_STATES));

    counted("late-count", data.late_cases.length, data.late_cases_count);
    fillTable("late-cases", data.late_cases.map((c) => row([c.code, kindName(c.kind),
      T[`state_${c.state}`] || c.state, c.elder_name || "—", when(c.target_at),
      duration(c.late_s)])));

    counted("silent-count", data.silent_terminals.length, data.silent_terminals_count);
    fillTable("silent-terminals", data.silent_terminals.map((t) => row([t.serial,
      t.elder_name || "—", t.community || "—", when(t.last_seen_at), duration(t.silent_s)])));

    $("on-duty-count").textContent = String(data.on_duty.total);
    fillTable("on-duty", Object.entries(data.on_duty.by_community).map(
      ([community, n]) => row([community || "—", n])));

    counted("visits-count", data.escalated_visits.length, data.escalated_visits_count);
    fillTable("escalated-visits", data.escalated_visits.map((v) => row([v.elder_name,
      `${v.street} ${v.community}`, T[`visit_${v.kind}`] || v.kind, v.window_end,
      v.volunteer_name || "—"])));
  }

  // The database is down (issue #7): static/banner.js, shared with the other page.
  const database = (down, since) => window.hytDatabaseBanner(down, since, T);

  async function load() {
    const response = await fetch("/api/supervisor");
    if (response.status === 401) {
      location.assign("/login?next=/supervisor");
      return;
    }
    if (response.status === 503) {
      const data = await response.json().catch(() => null);
      if (data && data.database === "down") database(true);
    }
    if (!response.ok) throw new Error(String(response.status));
    const data = await response.json();
    database(false);
    render(data);
  }

  // Refresh on every change of the live queue (a supervisor's stream also says when a
  // life-safety alarm passes the flag threshold unclaimed), at most once a second.
  let pending = null;
  function soon() {
    if (pending) return;
    pending = setTimeout(() => { pending = null; load().catch(() => {}); }, 1000);
  }

  function connect() {
    const source = new EventSource("/api/events");
    source.addEventListener("open", () => {
      $("live").textContent = T.live;
      $("live").classList.remove("off");
    });
    source.addEventListener("alarms", soon);
    source.addEventListener("status", (event) => {
      let data = null;
      try { data = JSON.parse(event.data); } catch (_) { data = null; }
      if (data && data.database === "down") database(true, data.since);
      else if (data && data.database === "up") { database(false); soon(); }
    });
    // A closed stream (refused: the login expired, or the database is down) is retried after
    // a reload of the view, which says which (login page on 401, database banner on 503).
    source.addEventListener("error", () => {
      setTimeout(() => {
        if (source.readyState === EventSource.OPEN) return;
        $("live").textContent = T.offline;
        $("live").classList.add("off");
        if (source.readyState === EventSource.CLOSED) {
          load().catch(() => {});
          setTimeout(connect, 3000);
        }
      }, 2000);
    });
  }

  $("logout").addEventListener("click", async () => {
    await fetch("/api/session", { method: "DELETE" });
    location.assign("/login");
  });

  load().catch(() => {});
  connect();
  setInterval(() => load().catch(() => {}), 30000); // cases and terminals change without alarms
})();
