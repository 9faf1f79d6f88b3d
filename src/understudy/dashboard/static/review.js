// The review queue: one call at a time, driven by the keyboard.
// Number keys pick a label for the current head (the last head submits the call through the
// public feedback API), "s" skips, "u" undoes the last label or skip. Skipped ids are sent back
// to the server as `exclude`, so the next batch does not offer them again this session.
(function () {
  "use strict";
  const root = document.getElementById("review");
  const config = JSON.parse(root.dataset.config);
  const $ = (id) => document.getElementById(id);
  let items = [];
  let index = 0;
  let pending = {};      // head name -> label chosen so far for the current call
  let headIndex = 0;
  const skipped = [];
  const history = [];    // {action: "label"|"skip", item}
  let labelled = 0;

  function status(text) { $("status").textContent = text; }

  function jsonValue(head, label) {
    return head.kind === "bool" ? label === "true" : label;
  }

  function describe(labels) {
    const parts = Object.entries(labels || {}).map(([h, v]) => config.heads.length > 1 ? h + "=" + v : v);
    return parts.length ? parts.join(", ") : "–";
  }

  async function load() {
    const params = new URLSearchParams();
    if (config.filters.label) params.set("label", config.filters.label);
    if (config.filters.disagreement) params.set("disagreement", "true");
    if (skipped.length) params.set("exclude", skipped.join(","));
    const response = await fetch(config.queue + "?" + params.toString());
    if (!response.ok) throw new Error("queue: HTTP " + response.status);
    items = (await response.json()).items;
    index = 0;
  }

  function render() {
    const item = items[index];
    $("item").hidden = !item;
    $("empty").hidden = Boolean(item);
    if (!item) return;
    const head = config.heads[headIndex];
    $("item").dataset.callId = item.call_id;
    $("reason").textContent = item.reason;
    const confidence = item.confidence == null ? "" : " · confidence " + (item.confidence * 100).toFixed(1) + "%";
    $("meta").textContent = (item.answered_by ? "answered by " + item.answered_by : "") + confidence;
    $("text").textContent = item.text;
    $("teacher").textContent = describe(item.teacher_labels);
    $("student").textContent = describe(item.student_labels);
    $("head").textContent = head.name + (config.heads.length > 1 ? " (" + (headIndex + 1) + "/" + config.heads.length + ")" : "");
    const list = $("choices");
    list.replaceChildren();
    head.labels.forEach((label, i) => {
      const li = document.createElement("li");
      const kbd = document.createElement("kbd");
      kbd.textContent = String(i + 1);
      li.append(kbd, label);
      if ((item.teacher_labels || {})[head.name] === label) li.className = "teacher";
      li.addEventListener("click", () => pick(i));
      list.append(li);
    });
  }

  async function advance() {
    index += 1;
    headIndex = 0;
    pending = {};
    if (index >= items.length) await load();
    render();
  }

  async function pick(choice) {
    const item = items[index];
    const head = config.heads[headIndex];
    if (!item || choice >= head.labels.length) return;
    pending[head.name] = jsonValue(head, head.labels[choice]);
    if (headIndex + 1 < config.heads.length) {
      headIndex += 1;
      render();
      return;
    }
    const response = await fetch(config.feedback, {
      method: "POST",
      headers: {"content-type": "application/json"},
      body: JSON.stringify({request_id: item.call_id, labels: pending}),
    });
    if (!response.ok) {
      status("Saving failed: HTTP " + response.status + " " + (await response.text()));
      pending = {};
      headIndex = 0;
      render();
      return;
    }
    const saved = (await response.json()).labels;
    history.push({action: "label", item: item});
    labelled += 1;
    status("Labelled " + item.call_id + " as " + describe(saved) + " · " + labelled + " labelled this session");
    await advance();
  }

  async function skip() {
    const item = items[index];
    if (!item) return;
    skipped.push(item.call_id);
    history.push({action: "skip", item: item});
    status("Skipped " + item.call_id);
    await advance();
  }

  async function undo() {
    const last = history.pop();
    if (!last) { status("Nothing to undo"); return; }
    if (last.action === "label") {
      const response = await fetch(config.undo + encodeURIComponent(last.item.call_id) + "/undo", {method: "POST"});
      if (!response.ok) { history.push(last); status("Undo failed: HTTP " + response.status); return; }
      labelled -= 1;
    } else {
      skipped.splice(skipped.indexOf(last.item.call_id), 1);
    }
    items.splice(index, 0, last.item);
    headIndex = 0;
    pending = {};
    status("Undid " + last.action + " of " + last.item.call_id + " · " + labelled + " labelled this session");
    render();
  }

  // Keys act one after another in the order pressed (a fast typist's keys are queued, not lost).
  let chain = Promise.resolve();
  let queued = 0;
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement) return;
    let action = null;
    if (/^[1-9]$/.test(event.key)) action = () => pick(Number(event.key) - 1);
    else if (event.key === "s") action = skip;
    else if (event.key === "u") action = undo;
    if (!action) return;
    event.preventDefault();
    queued += 1;
    root.dataset.busy = "true";
    chain = chain.then(action).catch((error) => status(String(error))).then(() => {
      queued -= 1;
      if (queued === 0) root.dataset.busy = "false";
    });
  });

  // The first batch loads before any key acts.
  root.dataset.busy = "true";
  chain = load()
    .then(() => { render(); status(items.length ? "Ready" : "Queue empty"); })
    .catch((error) => status(String(error)))
    .then(() => { if (queued === 0) root.dataset.busy = "false"; });
})();
