// justpipe dashboard: progressive enhancement over server-rendered pages.
// Loaded as an ES module (the CSP forbids inline script). Everything that reaches
// the DOM from data is set with textContent or comes pre-escaped from the server.

const root = document.documentElement;
const body = document.body;

// -- theme ---------------------------------------------------------------------
const THEME_KEY = "justpipe-theme";
function applyTheme(theme) {
  root.dataset.theme = theme;
}
function currentTheme() {
  const stored = localStorage.getItem(THEME_KEY);
  if (stored === "light" || stored === "dark") return stored;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}
applyTheme(currentTheme());
function toggleTheme() {
  const next = root.dataset.theme === "dark" ? "light" : "dark";
  localStorage.setItem(THEME_KEY, next);
  applyTheme(next);
}
document.getElementById("theme-toggle")?.addEventListener("click", toggleTheme);

// -- keyboard ------------------------------------------------------------------
function typing(target) {
  return target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement ||
    target instanceof HTMLSelectElement || (target instanceof HTMLElement && target.isContentEditable);
}
let pendingG = false;
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (typing(event.target)) {
    if (event.key === "Escape") event.target.blur();
    return;
  }
  if (event.key === "/") {
    event.preventDefault();
    const search = document.getElementById("global-search");
    search?.focus();
    search?.select();
  } else if (event.key === "t") {
    toggleTheme();
  } else if (event.key === "g") {
    pendingG = true;
    setTimeout(() => { pendingG = false; }, 1500);
    return;
  } else if (event.key === "p" && pendingG) {
    location.href = "/";
  } else if (/^[1-4]$/.test(event.key)) {
    const tab = document.querySelector(`.tabs a[data-key="${event.key}"]`);
    if (tab) location.href = tab.getAttribute("href");
  }
  pendingG = false;
});

// -- client-side row filter (pipelines) ----------------------------------------
for (const input of document.querySelectorAll("input[data-filter-rows]")) {
  const selector = input.dataset.filterRows;
  const apply = () => {
    const needle = input.value.trim().toLowerCase();
    for (const row of document.querySelectorAll(selector)) {
      row.hidden = needle !== "" && !(row.dataset.name || "").includes(needle);
    }
  };
  input.addEventListener("input", apply);
  apply();
}

// -- forms that submit on change -----------------------------------------------
for (const control of document.querySelectorAll("[data-autosubmit]")) {
  control.addEventListener("change", () => control.form?.requestSubmit());
}

// -- relative / absolute event times -------------------------------------------
function bindTimeToggle() {
  const button = document.getElementById("time-toggle");
  if (!button) return;
  const sync = () => {
    const absolute = localStorage.getItem("justpipe-abs-time") === "1";
    body.classList.toggle("abs-time", absolute);
    button.setAttribute("aria-pressed", String(absolute));
    button.textContent = absolute ? "Relative time" : "Absolute time";
  };
  button.addEventListener("click", () => {
    const absolute = localStorage.getItem("justpipe-abs-time") === "1";
    localStorage.setItem("justpipe-abs-time", absolute ? "0" : "1");
    sync();
  });
  sync();
}
bindTimeToggle();

// -- deep link to an event: #123 or #e123 ----------------------------------------
function followEventLink() {
  const match = /^#e?(\d+)$/.exec(location.hash);
  if (!match || !body.dataset.runId) return;
  const target = document.getElementById(`e${match[1]}`);
  if (target) {
    target.classList.add("flash");
    target.scrollIntoView({ block: "center" });
    target.querySelector("details")?.setAttribute("open", "");
  } else {
    const url = new URL(location.href);
    url.searchParams.set("tab", "events");
    url.searchParams.set("seq", match[1]);
    url.hash = `e${match[1]}`;
    location.replace(url.toString());
  }
}
window.addEventListener("hashchange", followEventLink);
followEventLink();

// -- DAG node inspector ---------------------------------------------------------
const inspector = document.getElementById("node-inspector");
function inspect(node) {
  if (!inspector) return;
  for (const other of document.querySelectorAll(".node.selected")) other.classList.remove("selected");
  node.classList.add("selected");
  inspector.replaceChildren();
  const title = document.createElement("h3");
  title.textContent = node.dataset.name;
  const list = document.createElement("dl");
  list.className = "facts";
  const facts = [
    ["Kind", node.dataset.kind], ["Latest run", node.dataset.status],
    ["Targets", node.dataset.targets || "none"], ["Barrier", node.dataset.barrier],
    ["Timeout", node.dataset.timeout || "none"], ["Retries", node.dataset.retries || "0"],
    ["Entry", node.dataset.entry], ["Terminal", node.dataset.terminal],
  ];
  for (const [label, value] of facts) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  }
  inspector.append(title, list);
  inspector.hidden = false;
}
for (const node of document.querySelectorAll(".dag .node")) {
  node.addEventListener("click", () => inspect(node));
  node.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      inspect(node);
    }
  });
}

// -- cleanup confirmation ---------------------------------------------------------
const confirmBox = document.getElementById("confirm-check");
const confirmButton = document.getElementById("confirm-delete");
if (confirmBox && confirmButton) {
  const sync = () => { confirmButton.disabled = !confirmBox.checked; };
  confirmBox.addEventListener("change", sync);
  sync();
}

// -- live updates -----------------------------------------------------------------
const region = document.getElementById("live-region");
let refreshTimer = null;
function refreshRegion(delay = 400) {
  if (!region || refreshTimer !== null) return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = null;
    const url = new URL(region.dataset.fragmentUrl, location.href);
    for (const [key, value] of new URL(location.href).searchParams) {
      if (!url.searchParams.has(key)) url.searchParams.set(key, value);
    }
    const response = await fetch(url, { headers: { accept: "text/html" } });
    if (!response.ok) return;
    // the fragment is server-rendered with every value escaped
    region.innerHTML = await response.text();
    bindTimeToggle();
    body.dispatchEvent(new CustomEvent("justpipe:refreshed"));
  }, delay);
}

function watchRun() {
  const runId = body.dataset.runId;
  if (!runId || body.dataset.runStatus !== "running") return;
  const count = document.getElementById("event-count");
  const badge = document.getElementById("run-status");
  const source = new EventSource(
    `/api/runs/${encodeURIComponent(runId)}/stream?after=${body.dataset.lastSeq || 0}`,
  );
  let seen = Number(count?.textContent || 0);
  source.addEventListener("event", (message) => {
    seen += 1;
    if (count) count.textContent = String(seen);
    body.dataset.lastSeq = message.lastEventId;
    refreshRegion();
  });
  source.addEventListener("status", (message) => {
    const { status } = JSON.parse(message.data);
    if (badge) {
      badge.textContent = status;
      badge.className = `badge big s-${status}`;
    }
  });
  source.addEventListener("end", () => {
    source.close();
    location.reload();
  });
  source.addEventListener("problem", (message) => {
    // the run or its store went away: stop following (no automatic reconnect)
    source.close();
    if (badge) badge.textContent = JSON.parse(message.data).error || "unavailable";
  });
}
watchRun();

function watchRuns() {
  if (!body.hasAttribute("data-live-runs") || !region) return;
  const pipeline = body.dataset.liveRuns;
  const url = pipeline ? `/api/stream/runs?pipeline=${encodeURIComponent(pipeline)}` : "/api/stream/runs";
  const source = new EventSource(url);
  let first = true;
  source.addEventListener("runs", () => {
    if (first) { first = false; return; }
    refreshRegion(100);
  });
}
watchRuns();
body.dataset.ready = "1";
