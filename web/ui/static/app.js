// Gatehouse dashboard: commands, lock all, and live updates from the
// session's event stream. No framework; every answer in words.
"use strict";
(function () {
  const csrf = (document.querySelector('meta[name="csrf"]') || {}).content || "";
  const $ = (sel, root) => (root || document).querySelector(sel);
  const enc = encodeURIComponent;

  async function call(url, method) {
    const r = await fetch(url, { method: method || "GET", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" });
    let body = null;
    try { body = await r.json(); } catch (e) { /* not JSON */ }
    if (r.status === 401) { location.href = "/signin?why=ended"; throw new Error("your session has ended"); }
    if (!r.ok) throw new Error((body && body.error && body.error.message) || ("the server answered " + r.status));
    return body;
  }

  function describe(c) {
    let s = c.verb + ": " + c.status;
    if (c.status === "done" && c.state) s = c.verb + ": done, " + c.state;
    if (c.reason) s += " (" + c.reason + ")";
    return s;
  }

  function show(out, text, cls) {
    if (!out) return;
    out.textContent = text;
    out.className = "cmd " + (cls || "");
  }

  function outFor(device) { return $("#dev-" + CSS.escape(device) + " .cmd"); }

  // follow waits for a command to leave "sent" (the server long-polls).
  async function follow(c, report) {
    report(c);
    while (c.status === "sent") {
      c = await call("/ui/commands/" + enc(c.id));
      report(c);
    }
    return c;
  }

  async function command(btn) {
    const device = btn.dataset.device, verb = btn.dataset.verb;
    const out = outFor(device);
    const buttons = btn.parentElement.querySelectorAll("button");
    buttons.forEach(b => b.disabled = true);
    show(out, verb + ": sending…", "sent");
    try {
      const c = await call("/ui/devices/" + enc(device) + "/" + verb, "POST");
      await follow(c, c => show(out, describe(c), c.status));
      refresh(device);
    } catch (e) {
      show(out, e.message, "error");
    } finally {
      buttons.forEach(b => b.disabled = false);
    }
  }

  async function all(btn) {
    const verb = btn.dataset.all, list = $("#allresult");
    btn.disabled = true;
    list.textContent = "";
    try {
      const res = await call("/ui/" + verb, "POST");
      if (!res.items.length) { const li = document.createElement("li"); li.textContent = "no lock you may operate"; list.append(li); }
      await Promise.all(res.items.map(async c => {
        const li = document.createElement("li");
        list.append(li);
        const report = c => {
          const text = c.status === "offline" ? c.device + " is offline: nothing sent" : c.device + " " + describe(c);
          li.textContent = text;
          li.className = "cmd " + c.status;
          show(outFor(c.device), c.status === "offline" ? verb + ": offline, not sent" : describe(c), c.status);
        };
        if (c.status === "offline") return report(c);
        try { await follow(c, report); } catch (e) { li.textContent = c.device + ": " + e.message; }
        refresh(c.device);
      }));
    } catch (e) {
      const li = document.createElement("li");
      li.className = "cmd error";
      li.textContent = e.message;
      list.append(li);
    } finally { btn.disabled = false; }
  }

  document.addEventListener("click", ev => {
    const b = ev.target.closest("button[data-verb]");
    if (b) { ev.preventDefault(); command(b); return; }
    const a = ev.target.closest("button[data-all]");
    if (a) { ev.preventDefault(); all(a); }
  });
  document.addEventListener("submit", ev => {
    const msg = ev.target.dataset.confirm;
    if (msg && !window.confirm(msg)) ev.preventDefault();
  });

  // refresh puts the server's current card of a device in place (or
  // removes it when the person may no longer see it).
  const pending = new Map();
  function refresh(device) {
    const grid = $("#devices");
    if (!grid || pending.has(device)) return;
    if (grid.classList.contains("one") && !$("#dev-" + CSS.escape(device))) return;
    pending.set(device, setTimeout(async () => {
      pending.delete(device);
      const r = await fetch("/ui/devices/" + enc(device) + "/card", { credentials: "same-origin" });
      const old = $("#dev-" + CSS.escape(device));
      if (r.status === 404) { if (old) old.remove(); return; }
      if (!r.ok) return;
      const tpl = document.createElement("template");
      tpl.innerHTML = (await r.text()).trim();
      const card = tpl.content.firstElementChild;
      if (old) {
        const msg = old.querySelector(".cmd");
        card.querySelector(".cmd").replaceWith(msg);
        old.replaceWith(card);
      } else {
        const none = $("#nodevices");
        if (none) none.remove();
        grid.append(card);
      }
    }, 100));
  }

  function toast(node) {
    const t = document.createElement("div");
    t.className = "toast";
    t.append(node);
    $("#toasts").append(t);
    setTimeout(() => t.remove(), 8000);
  }

  function fmt(iso) {
    const d = new Date(iso);
    const p = n => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " + p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
  }

  function addEvent(e) {
    document.querySelectorAll("tbody[data-live]").forEach(tb => {
      const f = tb.dataset;
      if ((f.device && f.device !== e.device) || (f.type && f.type !== e.type) || (f.user && f.user !== e.user)) return;
      if (tb.querySelector('tr[data-id="' + CSS.escape(e.id) + '"]')) return;
      const empty = tb.querySelector("tr.empty");
      if (empty) empty.remove();
      const tr = document.createElement("tr");
      tr.dataset.id = e.id;
      tr.className = "new";
      const cells = [fmt(e.time), e.type, e.device || "", e.user || "", e.via || "", e.detail || ""];
      cells.forEach((v, i) => {
        const td = document.createElement("td");
        if (i === 1) { const s = document.createElement("span"); s.className = "tag"; s.textContent = v; td.append(s); }
        else if (i === 2 && v) { const a = document.createElement("a"); a.href = "/devices/" + enc(v); a.textContent = v; td.append(a); }
        else td.textContent = v;
        tr.append(td);
      });
      tb.prepend(tr);
    });
  }

  async function pictures(e) {
    const box = $("#pictures[data-live]");
    const note = document.createElement("span");
    note.append("New picture from " + e.device + " · ");
    const a = document.createElement("a");
    a.href = "/pictures";
    a.textContent = "see it";
    note.append(a);
    toast(note);
    if (!box) return;
    const res = await call("/ui/pictures");
    res.items.slice().reverse().forEach(p => {
      if (box.querySelector('figure[data-id="' + CSS.escape(p.id) + '"]')) return;
      const empty = box.querySelector(".empty");
      if (empty) empty.remove();
      const fig = document.createElement("figure");
      fig.dataset.id = p.id;
      fig.className = "new";
      const link = document.createElement("a");
      link.href = p.url;
      const img = document.createElement("img");
      img.src = p.url;
      img.alt = "stranger at " + p.device;
      link.append(img);
      const cap = document.createElement("figcaption");
      cap.textContent = p.device + " · " + fmt(p.time);
      fig.append(link, cap);
      box.prepend(fig);
    });
  }

  // The live stream: the session cookie authenticates it. When it closes
  // for good (401: token revoked, session ended), go to the sign-in page.
  function live() {
    if (!csrf) return;
    const dot = $("#live");
    const es = new EventSource("/ui/events");
    es.onopen = () => dot && dot.classList.add("on");
    es.onmessage = m => {
      let e;
      try { e = JSON.parse(m.data); } catch (err) { return; }
      if (e.device) refresh(e.device);
      addEvent(e);
      if (e.type === "stranger") pictures(e).catch(() => {});
    };
    es.onerror = async () => {
      if (dot) dot.classList.remove("on");
      if (es.readyState !== EventSource.CLOSED) return;
      try {
        const r = await fetch("/ui/session", { credentials: "same-origin" });
        if (r.status === 401) { location.href = "/signin?why=ended"; return; }
      } catch (err) { /* server away: try again */ }
      setTimeout(live, 3000);
    };
  }
  live();
})();
