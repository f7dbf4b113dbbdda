// kiln's live pages. Everything reads without this; with it:
// - pages marked data-live re-render their <main> when the master reports a change (server-sent events);
// - a running step's log is followed from its last offset through the JSON API;
// - a running step's "for N s" keeps counting.
(() => {
  "use strict";
  const esc = (s) => s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  function ansi(text) {
    let out = "", open = false;
    const parts = text.split(/\x1b\[([0-9;]*)m/);
    for (let i = 0; i < parts.length; i++) {
      if (i % 2 === 0) { out += esc(parts[i]); continue; }
      if (open) { out += "</span>"; open = false; }
      const cls = parts[i].split(";").map(Number).map((n) =>
        n === 1 ? "ansi-bold" : n >= 30 && n <= 37 ? "ansi-" + (n - 30) : n >= 90 && n <= 97 ? "ansi-" + (n - 82) : null
      ).filter(Boolean);
      if (cls.length) { out += '<span class="' + cls.join(" ") + '">'; open = true; }
    }
    return open ? out + "</span>" : out;
  }

  const following = new Set();
  function follow(pre) {
    const key = pre.dataset.build + "/" + pre.dataset.step;
    if (following.has(key)) return;
    following.add(key);
    const tick = async () => {
      if (!document.body.contains(pre)) { following.delete(key); return; }
      try {
        const r = await fetch(`/api/v1/builds/${pre.dataset.build}/steps/${pre.dataset.step}/log?offset=${pre.dataset.offset}`);
        if (r.ok) {
          const chunk = await r.json();
          if (chunk.data) {
            const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
            pre.insertAdjacentHTML("beforeend", ansi(chunk.data));
            pre.dataset.offset = chunk.next_offset;
            if (atEnd) pre.scrollTop = pre.scrollHeight;
          }
          if (chunk.complete) { following.delete(key); return; }
        }
      } catch (_) { /* the master may be restarting; try again */ }
      setTimeout(tick, 700);
    };
    tick();
  }
  const followAll = () => document.querySelectorAll("pre.log[data-follow]").forEach(follow);

  let refreshing = false, again = false;
  async function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      // Keep what the user is doing: an open force form, or typing.
      const active = document.activeElement;
      if (active && active.closest && active.closest("form") && active.matches("input, select, textarea")) return;
      const r = await fetch(location.href, { headers: { Accept: "text/html" } });
      if (!r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const fresh = doc.getElementById("main"), main = document.getElementById("main");
      if (!fresh || !main) return;
      // Nothing changed but relative times: keep the page as it is (and whatever the user is on).
      // (A running step's timer is a <time> too: its render time is not a change.)
      const norm = (el) => el.innerHTML.replace(/<time([^>]*)>[^<]*<\/time>/g, "<time$1></time>").replace(/ data-(rendered-ms|base)="\d+"/g, "");
      if (norm(fresh) === norm(main)) return;
      // Running logs keep their live text: carry them over into the new page.
      const logs = new Map();
      main.querySelectorAll("pre.log").forEach((p) => logs.set(p.dataset.build + "/" + p.dataset.step, p));
      const open = new Set([...main.querySelectorAll("details[open]")].map((d, i) => i));
      fresh.querySelectorAll("pre.log").forEach((p) => {
        const old = logs.get(p.dataset.build + "/" + p.dataset.step);
        if (old && Number(old.dataset.offset) > Number(p.dataset.offset)) { p.innerHTML = old.innerHTML; p.dataset.offset = old.dataset.offset; }
      });
      fresh.querySelectorAll("details").forEach((d, i) => { if (open.has(i)) d.open = true; });
      main.replaceWith(fresh);
      window.kilnRefreshes = (window.kilnRefreshes || 0) + 1;
      document.body.dataset.live = doc.body.dataset.live || "";
      document.title = doc.title;
      followAll();
    } finally {
      refreshing = false;
      if (again) { again = false; refresh(); }
    }
  }

  function tickTimers() {
    const now = Date.now();
    document.querySelectorAll("time.since[data-start-ms]").forEach((t) => {
      if (!t.dataset.base) t.dataset.base = now - (Number(t.dataset.renderedMs) - Number(t.dataset.startMs));
      t.textContent = "for " + Math.max(0, Math.floor((now - Number(t.dataset.base)) / 1000)) + " s";
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    followAll();
    setInterval(tickTimers, 1000);
    if (document.body.dataset.live && window.EventSource) {
      const es = new EventSource("/events");
      es.addEventListener("change", () => {
        window.kilnChanges = (window.kilnChanges || 0) + 1;
        if (document.body.dataset.live) refresh();
      });
      es.onerror = () => { window.kilnSseErrors = (window.kilnSseErrors || 0) + 1; };
      // Whatever changed between rendering this page and subscribing (or while reconnecting).
      es.onopen = () => { if (document.body.dataset.live) refresh(); };
    }
  });
})();
