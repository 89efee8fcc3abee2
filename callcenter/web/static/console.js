"use strict";
// The live operator console. All data goes into the page with textContent, never innerHTML.
(() => {
  const T = JSON.parse(document.getElementById("i18n").textContent);
  const LANG = document.documentElement.lang.startsWith("zh") ? "zh" : "en";
  const $ = (id) => document.getElementById(id);
  const NUMBER = new Intl.NumberFormat(LANG === "zh" ? "zh-CN" : "en"); // 1,234
  const state = {
    me: Number($("me").dataset.userId),
    queue: [],
    notShown: { not_shown: 0, not_shown_by_kind: {} },
    streamSaysDown: false, // the live stream's last word on the database
    loadedAt: performance.now(),
    shownAt: new Map(), // alarm id -> when its row first appeared (ms since epoch)
    known: new Set(),
    first: true,
    alarm: null, // the alarm being handled
    caseId: null,
    catalog: null,
    offersTimer: null,
    flaggedSeen: new Set(), // flagged alarm ids already announced with a beep
    voiceTimer: null,
  };

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function say(id, text, isError) {
    const node = $(id);
    node.textContent = text;
    node.classList.toggle("error", Boolean(isError));
  }

  // The database is down (issue #7): static/banner.js, shared with the other page.
  const database = (down, since) => window.hytDatabaseBanner(down, since, T);

  // The answer and its JSON; 401 goes to the login page, 503 shows the database banner.
  async function send(method, url, body) {
    const init = { method, headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    if (response.status === 401) {
      location.assign("/login?next=/console");
      throw new Error("login required");
    }
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (response.status === 503 && data && data.database === "down") database(true);
    if (!response.ok) {
      const detail = data && data.detail;
      const text = typeof detail === "string" ? detail : JSON.stringify(detail);
      const error = new Error(text || String(response.status));
      error.status = response.status;
      throw error;
    }
    return { response, data };
  }

  async function api(method, url, body) {
    return (await send(method, url, body)).data;
  }

  function clock(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const m = Math.floor(s / 60);
    return `${m}:${String(s % 60).padStart(2, "0")}`;
  }

  // A short beep for life-safety alarms (WebAudio; silent if the browser blocks audio).
  function beep() {
    try {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return;
      state.audio = state.audio || new Ctx();
      const ctx = state.audio;
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.frequency.value = 880;
      gain.gain.value = 0.2;
      osc.connect(gain).connect(ctx.destination);
      osc.start();
      osc.stop(ctx.currentTime + 0.25);
    } catch (_) { /* no audio is not an error */ }
  }

  // -- queue ---------------------------------------------------------------------------
  // The queue as sent: every life-safety alarm and the first others (the server's limit), and
  // how many are left out ("not_shown", per kind in "not_shown_by_kind").
  async function loadQueue() {
    const { response, data: items } = await send("GET", "/api/queue");
    const byKind = {};
    for (const part of (response.headers.get("X-Queue-Not-Shown-By-Kind") || "").split(",")) {
      const [kind, n] = part.trim().split("=");
      if (kind && n) byKind[kind] = Number(n);
    }
    showQueue(items, {
      not_shown: Number(response.headers.get("X-Queue-Not-Shown") || 0),
      not_shown_by_kind: byKind,
    });
  }

  // age_s: how long ago the server counted the items' wait_s (a stream's first event is the
  // server's current queue, read when it last changed).
  function showQueue(items, counts, ageS) {
    // A queue read that worked does not overrule the stream: it says "down" until "up" (the
    // marker can be slow or failing while a queue read still answers).
    if (!state.streamSaysDown) database(false);
    state.queue = items;
    state.notShown = counts || { not_shown: 0, not_shown_by_kind: {} };
    state.loadedAt = performance.now() - 1000 * (Number(ageS) || 0);
    let alert = false;
    for (const item of items) {
      if (!state.known.has(item.id)) {
        state.known.add(item.id);
        if (!state.first && item.life_safety && item.status === "new") alert = true;
      }
    }
    state.first = false;
    renderQueue();
    if (alert) beep();
  }

  function renderQueue() {
    const body = $("queue-body");
    const rows = [];
    for (const item of state.queue) {
      const tr = el("tr");
      tr.dataset.alarmId = item.id;
      tr.dataset.status = item.status;
      if (!state.shownAt.has(item.id)) state.shownAt.set(item.id, Date.now());
      tr.dataset.shownAt = state.shownAt.get(item.id);
      if (item.life_safety) tr.classList.add("life-safety");
      if (item.flagged) tr.classList.add("flagged"); // supervisors only: unclaimed too long
      if (item.status === "claimed") tr.classList.add("claimed");
      if (item.claimed_by_id === state.me) tr.classList.add("mine");
      tr.append(el("td", item.priority));
      tr.append(el("td", T[`kind_${item.kind}`] || item.kind));
      const who = item.elder_name || `${T.unknown_caller} ${item.caller || ""}`;
      const elderCell = el("td", who, "elder");
      if (item.case_code) elderCell.append(el("span", ` · ${item.case_code}`, "muted"));
      tr.append(elderCell);
      const wait = el("td", clock(item.wait_s), "wait");
      wait.dataset.waitS = item.wait_s;
      tr.append(wait);
      const status = el("td", T[`status_${item.status}`] || item.status);
      if (item.flagged) status.append(el("span", ` ⚠ ${T.flag}`, "flag"));
      if (item.claimed_by) status.append(el("span", ` (${item.claimed_by})`, "muted"));
      tr.append(status);
      const action = el("td");
      if (item.status === "new") {
        const button = el("button", T.claim, "claim");
        button.type = "button";
        button.addEventListener("click", () => claim(item, tr));
        action.append(button);
      } else if (item.claimed_by_id === state.me) {
        const button = el("button", T.open, "open");
        button.type = "button";
        button.addEventListener("click", () => openAlarm(item));
        action.append(button);
      }
      tr.append(action);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    $("queue-empty").hidden = rows.length > 0;
    const more = $("queue-more");
    const notShown = state.notShown.not_shown || 0;
    more.hidden = notShown === 0;
    more.dataset.notShown = notShown;
    more.textContent = T.queue_more.replace("{n}", NUMBER.format(notShown));
    // Per kind on hover: e.g. "设备故障 1,234 · 测试 5".
    more.title = Object.entries(state.notShown.not_shown_by_kind || {})
      .map(([kind, n]) => `${T[`kind_${kind}`] || kind} ${NUMBER.format(n)}`).join(" · ");
    const flagged = state.queue.filter((item) => item.flagged);
    $("flag-banner").hidden = flagged.length === 0;
    $("flag-banner").textContent = T.flag_banner.replace("{n}", flagged.length)
      .replace("{s}", $("flag-banner").dataset.flagS);
    // A supervisor hears it once when a life-safety alarm passes the threshold unclaimed.
    const newlyFlagged = flagged.filter((item) => !state.flaggedSeen.has(item.id));
    for (const item of newlyFlagged) state.flaggedSeen.add(item.id);
    if (newlyFlagged.length) beep();
  }

  function tick() {
    const elapsed = (performance.now() - state.loadedAt) / 1000;
    for (const cell of document.querySelectorAll("#queue-body td.wait")) {
      cell.textContent = clock(Number(cell.dataset.waitS) + elapsed);
    }
  }

  async function claim(item, tr) {
    try {
      await api("POST", `/api/alarms/${item.id}/claim`);
    } catch (error) {
      const note = el("span", ` ${error.status === 409 ? T.claim_conflict : error.message}`,
        "error");
      tr.lastChild.append(note);
      loadQueue();
      return;
    }
    item.status = "claimed";
    item.claimed_by_id = state.me;
    openAlarm(item);
    loadQueue();
  }

  function connect() {
    // The server polls the database for changes (one poller per web process), so any web
    // worker can serve this stream.
    const source = new EventSource("/api/events");
    source.addEventListener("open", () => {
      $("live").textContent = T.live;
      $("live").classList.remove("off");
    });
    // Each event carries the queue (the server reads it once for every console), the first
    // one of each stream too: no fetch after a reconnection. Without it (the database was
    // down when the stream opened) the queue is fetched.
    source.addEventListener("alarms", (event) => {
      let data = null;
      try { data = JSON.parse(event.data); } catch (_) { data = null; }
      if (data && Array.isArray(data.queue)) showQueue(data.queue, data, data.age_s);
      else loadQueue().catch(() => {});
    });
    // The database went down ({"database": "down", "since": …}) or is back ("up", then an
    // alarms event with the queue).
    source.addEventListener("status", (event) => {
      let data = null;
      try { data = JSON.parse(event.data); } catch (_) { data = null; }
      if (data && data.database === "down") {
        state.streamSaysDown = true;
        database(true, data.since);
      } else if (data && data.database === "up") {
        state.streamSaysDown = false;
        database(false);
      }
    });
    // Each (re)connected stream says "down" first if it still is.
    source.addEventListener("open", () => { state.streamSaysDown = false; });
    // The server ends each stream after a while and the browser reconnects at once: say
    // "offline" only if it stays down. A closed stream (e.g. the login expired) is retried by
    // reloading the queue, which goes to the login page on 401 and shows the database banner
    // on 503 (the stream is refused too while the database is down: it checks the login).
    source.addEventListener("error", () => {
      setTimeout(() => {
        if (source.readyState === EventSource.OPEN) return;
        $("live").textContent = T.offline;
        $("live").classList.add("off");
        if (source.readyState === EventSource.CLOSED) {
          loadQueue().then(connect, () => setTimeout(connect, 3000));
        }
      }, 2000);
    });
  }

  // -- screen pop ----------------------------------------------------------------------
  function fact(dl, label, value, cls) {
    dl.append(el("dt", label));
    dl.append(el("dd", value === "" || value === null || value === undefined ? T.none : value,
      cls));
  }

  function caseLine(c) {
    const state_ = T[`state_${c.state}`] || c.state;
    const what = c.item_code || T[`kind_${c.kind}`] || c.kind;
    return `${c.code} · ${state_} · ${what}${c.summary ? " · " + c.summary : ""}`;
  }

  function fill(listId, values, render) {
    const list = $(listId);
    list.replaceChildren(...(values.length ? values.map(render) : [el("li", T.none, "muted")]));
  }

  async function showElder(elderId) {
    const e = await api("GET", `/api/elders/${elderId}`);
    $("pop-name").textContent = `${e.name}（${e.age}${T.age}）`;
    $("pop-line").textContent = `${e.street} ${e.community} · ${e.code}`;
    const dl = $("pop-facts");
    dl.replaceChildren();
    fact(dl, T.address, e.address);
    fact(dl, T.access_notes, e.access_notes);
    fact(dl, T.phone, e.phone);
    fact(dl, T.medical_notes, e.medical_notes);
    fact(dl, T.medications, e.medications.join("、"));
    fact(dl, T.allergies, e.allergies.join("、"), e.allergies.length ? "allergy" : "");
    fact(dl, T.language, e.language);
    fact(dl, T.mobility, T[`mobility_${e.mobility}`] || e.mobility);
    fact(dl, T.lives_alone, e.lives_alone ? "✓" : "—");
    fill("pop-contacts", e.contacts, (c) => el("li", `${c.name}（${c.relation}）${c.phone}`,
      "contact"));
    fill("pop-terminals", e.terminals, (term) => {
      const seen = term.last_seen_at ? new Date(term.last_seen_at).toLocaleString() : T.none;
      const battery = term.battery_pct === null ? "—" : `${term.battery_pct}%`;
      const status = T[`terminal_${term.status}`] || term.status;
      return el("li", `${term.serial} ${term.model} · ${status} · ${T.battery} ${battery}` +
        ` · ${T.last_seen} ${seen}`);
    });
    fill("pop-open-cases", e.open_cases, (c) => el("li", caseLine(c)));
    fill("pop-recent-cases", e.recent_cases, (c) => el("li", caseLine(c)));
    $("screen-pop").hidden = false;
  }

  async function openAlarm(item) {
    state.alarm = item;
    $("detail").hidden = false;
    $("outcome-form").hidden = false;
    $("outcome-alarm").textContent = `#${item.id}`;
    say("outcome-msg", "");
    if (item.elder_id) {
      await showElder(item.elder_id);
    } else {
      $("pop-name").textContent = `${T.unknown_caller} ${item.caller || ""}`;
      $("pop-line").textContent = "";
      for (const id of ["pop-facts", "pop-contacts", "pop-terminals", "pop-open-cases",
        "pop-recent-cases"]) $(id).replaceChildren();
    }
    openVoice(item);
    if (item.case_id) await openCase(item.case_id); else closeCasePanel();
  }

  // -- voice: the operator's SIP phone joined to the elder's call -----------------------
  const VOICE_ACTIVE = new Set(["requested", "connecting", "connected"]);

  function openVoice(item) {
    if (state.voiceTimer) clearInterval(state.voiceTimer);
    state.voiceTimer = null;
    $("voice-panel").hidden = item.claimed_by_id !== state.me;
    say("voice-msg", "");
    $("voice-calls").replaceChildren();
    if (!$("voice-panel").hidden) refreshVoice().catch(() => {});
  }

  function voiceLine(call) {
    const li = el("li", `#${call.id} · ${T["voice_" + call.state] || call.state}`, "voice-call");
    li.dataset.state = call.state;
    if (call.mode) li.append(el("span", ` · ${T["voice_mode_" + call.mode] || call.mode}`));
    if (call.ended_by) li.append(el("span", ` · ${T["voice_ended_by_" + call.ended_by] || ""}`));
    if (call.reason) li.append(el("div", call.reason, "muted"));
    if (call.recording_url) {
      const link = el("a", `${T.voice_recording} (${Math.round(call.recording_s || 0)}${T.seconds})`);
      link.href = call.recording_url;
      const player = el("audio");
      player.controls = true;
      player.preload = "none";
      player.src = call.recording_url;
      li.append(el("br"), link, player);
    }
    return li;
  }

  async function refreshVoice() {
    const alarm = state.alarm;
    if (!alarm) return;
    const calls = await api("GET", `/api/alarms/${alarm.id}/voice`);
    if (!state.alarm || state.alarm.id !== alarm.id) return;
    $("voice-calls").replaceChildren(...calls.map(voiceLine));
    const busy = calls.some((c) => VOICE_ACTIVE.has(c.state));
    $("voice-connect").disabled = busy;
    if (busy && !state.voiceTimer) {
      state.voiceTimer = setInterval(() => refreshVoice().catch(() => {}), 1000);
    } else if (!busy && state.voiceTimer) {
      clearInterval(state.voiceTimer);
      state.voiceTimer = null;
    }
  }

  $("voice-connect").addEventListener("click", async () => {
    if (!state.alarm) return;
    $("voice-connect").disabled = true;
    say("voice-msg", T.voice_requested);
    try {
      const call = await api("POST", `/api/alarms/${state.alarm.id}/voice`);
      say("voice-msg", T["voice_" + call.state] || call.state);
    } catch (error) {
      say("voice-msg", `${T.voice_failed}: ${error.message}`, true);
    }
    await refreshVoice().catch(() => {});
  });

  // -- outcome -------------------------------------------------------------------------
  $("outcome-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!state.alarm) return;
    try {
      await api("POST", `/api/alarms/${state.alarm.id}/outcome`, {
        outcome: $("outcome").value,
        note: $("outcome-note").value,
        reason: $("outcome-reason").value,
      });
      say("outcome-msg", T.outcome_saved);
      loadQueue();
    } catch (error) {
      say("outcome-msg", `${T.error}: ${error.message}`, true);
    }
  });

  // -- case ----------------------------------------------------------------------------
  function option(value, text) {
    const node = el("option", text);
    node.value = value;
    return node;
  }

  async function loadCatalog() {
    if (!state.catalog) state.catalog = await api("GET", "/api/catalog");
    const categories = state.catalog.categories;
    $("category").replaceChildren(option("", T.select),
      ...categories.map((c) => option(c.code, LANG === "zh" ? c.name_zh : c.name_en)));
  }

  function fillItems(categoryCode, selected) {
    const category = state.catalog.categories.find((c) => c.code === categoryCode);
    const items = category ? category.items : [];
    $("item").replaceChildren(option("", T.select),
      ...items.map((i) => option(i.code, LANG === "zh" ? i.name_zh : i.name_en)));
    if (selected) $("item").value = selected;
  }
  $("category").addEventListener("change", () => fillItems($("category").value));

  function closeCasePanel() {
    state.caseId = null;
    $("case-panel").hidden = true;
    if (state.offersTimer) clearInterval(state.offersTimer);
    state.offersTimer = null;
  }

  async function openCase(caseId) {
    state.caseId = caseId;
    await loadCatalog();
    const detail = await refreshCase();
    if (detail.item_code) {
      $("category").value = detail.category_code || "";
      fillItems(detail.category_code, detail.item_code);
      await loadCandidates();
    } else {
      fillItems("");
      $("candidates").replaceChildren();
    }
    $("case-summary").value = detail.summary || "";
    say("case-msg", "");
    $("case-panel").hidden = false;
    if (state.offersTimer) clearInterval(state.offersTimer);
    state.offersTimer = setInterval(() => refreshCase().catch(() => {}), 1000);
  }

  async function refreshCase() {
    const caseId = state.caseId;
    const detail = await api("GET", `/api/cases/${caseId}`);
    if (caseId !== state.caseId) return detail;
    $("case-code").textContent = detail.code;
    $("case-state").textContent = T[`state_${detail.state}`] || detail.state;
    $("case-panel").dataset.state = detail.state;
    fill("offers", detail.offers, (o) => {
      const li = el("li", `${o.volunteer_name} · ${T["offer_" + o.status] || o.status}` +
        ` · ${T.score} ${o.score.toFixed(2)}`, "offer");
      li.dataset.status = o.status;
      return li;
    });
    return detail;
  }

  async function loadCandidates() {
    const list = await api("GET", `/api/cases/${state.caseId}/candidates`);
    fill("candidates", list, (c) => {
      const li = el("li", `${c.name} · ${T.distance} ${Math.round(c.distance_m)} m · ` +
        `${T.score} ${c.score.toFixed(2)}`, "candidate");
      li.append(el("div", LANG === "zh" ? c.explain_zh : c.explain_en, "muted"));
      return li;
    });
    if (!list.length) $("candidates").replaceChildren(el("li", T.no_candidates, "muted"));
  }

  $("item-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!state.caseId || !$("item").value) return;
    try {
      await api("PATCH", `/api/cases/${state.caseId}`, {
        item_code: $("item").value,
        summary: $("case-summary").value,
      });
      await refreshCase();
      await loadCandidates();
      say("case-msg", "");
    } catch (error) {
      say("case-msg", `${T.error}: ${error.message}`, true);
    }
  });

  async function caseAction(fn) {
    if (!state.caseId) return;
    try {
      await fn();
      await refreshCase();
    } catch (error) {
      say("case-msg", `${T.error}: ${error.message}`, true);
    }
  }

  $("dispatch").addEventListener("click", () => caseAction(async () => {
    const wave = await api("POST", `/api/cases/${state.caseId}/dispatch`);
    say("case-msg", T.dispatched.replace("{wave}", wave.wave)
      .replace("{n}", wave.offered_volunteer_ids.length));
  }));
  $("close-case").addEventListener("click", () => caseAction(async () => {
    await api("POST", `/api/cases/${state.caseId}/close`,
      { satisfied: $("satisfied").checked, note: "" });
    say("case-msg", "");
  }));
  $("cancel-case").addEventListener("click", () => caseAction(async () => {
    await api("POST", `/api/cases/${state.caseId}/cancel`, { reason: $("cancel-reason").value });
    say("case-msg", "");
  }));

  // -- search --------------------------------------------------------------------------
  $("search-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const q = $("search-q").value.trim();
    if (!q) return;
    const hits = await api("GET", `/api/elders?q=${encodeURIComponent(q)}`);
    fill("search-results", hits, (h) => {
      const li = el("li");
      const button = el("button", `${h.name} (${h.name_pinyin})`, "hit");
      button.type = "button";
      button.addEventListener("click", () => {
        $("detail").hidden = false;
        showElder(h.id);
      });
      li.append(button, el("span", ` ${h.community} ${h.address} ${h.phone || ""}`, "muted"));
      return li;
    });
    if (!hits.length) $("search-results").replaceChildren(el("li", T.no_results, "muted"));
  });

  $("logout").addEventListener("click", async () => {
    await fetch("/api/session", { method: "DELETE" });
    location.assign("/login");
  });

  loadQueue().catch(() => {});
  connect();
  setInterval(tick, 1000);
  setInterval(() => loadQueue().catch(() => {}), 15000); // in case an event was missed
})();
