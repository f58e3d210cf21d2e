// Stalwart's browser journal: no keystroke is lost to a reload, a closed tab or a dead server.
//
// One journal per form and page load. It listens (capturing) to `input` events of the form's
// text-like widgets (their containers carry the class `st-key-sw__<form>__<field>`), and:
//  1. writes the value to localStorage synchronously, before the next event can run, so a
//     keystroke that is on screen is already journalled when the page is reloaded;
//  2. queues it in an outbox that is sent to Python (debounced) as this component's *state*.
//     The outbox is cumulative and numbered: Python applies the items above the last id it
//     processed and acknowledges that id through `data.acked`, so if Streamlit coalesces two
//     reruns into one, nothing in between is lost;
//  3. forgets a journal entry once the server's value (`data.values`) equals it;
//  4. on the first render after a page load, sends the entries the server does not have yet
//     as one `replay` item: Python takes those newer than what it holds.
// Ctrl+Z / Ctrl+Shift+Z (Cmd on macOS; Ctrl+Y too) inside the form become form-level undo and
// redo items, sent after any typing still queued so the order is kept.

const DEBOUNCE_MS = 120;

// The server holds a number as a number: "0.50" typed is 0.5 stored, and the same value.
function sameValue(server, typed) {
  const a = String(server ?? "");
  const b = String(typed ?? "");
  if (a === b) return true;
  return a.trim() !== "" && b.trim() !== "" && !isNaN(a) && !isNaN(b) && Number(a) === Number(b);
}

function journalFor(form, ns) {
  const registry = (window.__stalwartJournals ??= {});
  const id = `${ns}:${form}`;
  if (registry[id]) return registry[id];

  const storageKey = `stalwart:journal:${id}`;
  const prefix = `st-key-sw__${form}__`;
  const j = {
    form, prefix, storageKey, revision: 0, values: {}, acked: 0, nextId: 1,
    outbox: [], replayed: false, timer: null, setState: null,
  };

  j.read = () => {
    try { return JSON.parse(localStorage.getItem(storageKey) || "{}"); } catch { return {}; }
  };
  j.write = (entries) => {
    try {
      if (Object.keys(entries).length) localStorage.setItem(storageKey, JSON.stringify(entries));
      else localStorage.removeItem(storageKey);
    } catch { /* storage full or denied: the outbox still carries the value */ }
  };
  j.fieldOf = (el) => {
    const box = el.closest(`[class*="${prefix}"]`);
    if (!box) return null;
    const cls = [...box.classList].find((c) => c.startsWith(prefix));
    return cls ? cls.slice(prefix.length) : null;
  };
  j.send = () => {
    clearTimeout(j.timer);
    j.timer = null;
    if (j.setState) j.setState("outbox", { items: j.outbox.slice() });
  };
  j.push = (item, now) => {
    item.id = Math.max(j.nextId, j.acked + 1);
    j.nextId = item.id + 1;
    j.outbox.push(item);
    if (now) j.send();
    else if (!j.timer) j.timer = setTimeout(j.send, DEBOUNCE_MS);
  };

  j.onInput = (event) => {
    const el = event.target;
    if (!(el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement)) return;
    const field = j.fieldOf(el);
    if (!field || !(field in j.values)) return; // only the fields the server journals
    const value = el.value;
    const entries = j.read();
    entries[field] = { v: value, base: j.revision, t: Date.now() };
    j.write(entries);
    // Only the newest typed value of a field needs to travel; keep one item per field.
    j.outbox = j.outbox.filter((it) => !(it.kind === "typed" && it.field === field && it.id > j.acked));
    j.push({ kind: "typed", field, v: value, base: j.revision }, false);
  };

  j.onKey = (event) => {
    if (!(event.ctrlKey || event.metaKey) || event.altKey) return;
    const key = event.key.toLowerCase();
    const redo = (key === "z" && event.shiftKey) || key === "y";
    if (key !== "z" && key !== "y") return;
    const inForm = event.target instanceof Element && j.fieldOf(event.target) !== null;
    const onlyForm = Object.keys(window.__stalwartJournals).length === 1;
    const onPage = event.target === document.body || event.target === document.documentElement;
    if (!inForm && !(onlyForm && onPage)) return;
    event.preventDefault();
    event.stopPropagation();
    j.push({ kind: redo ? "redo" : "undo" }, true);
  };

  document.addEventListener("input", j.onInput, true);
  document.addEventListener("keydown", j.onKey, true);
  registry[id] = j;
  return j;
}

export default function (component) {
  const { data, setStateValue } = component;
  if (!data || !data.form) return;
  const j = journalFor(data.form, data.ns);
  j.setState = setStateValue;
  if (j.session !== data.session) {
    // The server side is new (it restarted, or the page reconnected to another session):
    // it has applied nothing of ours, so number afresh and offer the journal again.
    j.session = data.session;
    j.acked = 0;
    j.nextId = 1;
    j.outbox = [];
    j.replayed = false;
  }
  j.revision = data.revision;
  j.values = data.values || {};
  if (data.acked > j.acked) {
    j.acked = data.acked;
    j.outbox = j.outbox.filter((it) => it.id > j.acked);
  }
  j.nextId = Math.max(j.nextId, j.acked + 1);

  // While the server cannot store what it was sent, ask it again every second: that rerun
  // retries the queued changes, and the outbox (never acknowledged yet) is still in the state.
  clearTimeout(j.retryTimer);
  if (data.retry) j.retryTimer = setTimeout(() => setStateValue("tick", Date.now()), 1000);

  // Forget what the server holds now; what it does not hold stays journalled.
  const entries = j.read();
  for (const [field, entry] of Object.entries(entries)) {
    if (sameValue(j.values[field], entry.v)) delete entries[field];
  }
  j.write(entries);

  if (!j.replayed) {
    j.replayed = true;
    const pending = {};
    for (const [field, entry] of Object.entries(entries)) {
      if (field in j.values) pending[field] = { v: entry.v, base: entry.base };
    }
    if (Object.keys(pending).length) j.push({ kind: "replay", entries: pending }, true);
  }
  // Mirror the journal into the DOM for people and tests ("3 changes kept in this browser").
  document.documentElement.dataset[`stalwartJournal_${data.form.replace(/\W/g, "_")}`] =
    String(Object.keys(entries).length);
}
