// Stalwart's navigation links: real <a href="?page=…"> links (middle-click and Ctrl+click open
// a new tab, the keyboard reaches them, the status bar shows where they go) that switch pages
// in place. A plain click pushes the new URL and tells Streamlit the history changed, which
// sends the rerun at once from inside the click. A button would send it from a timer that
// waits for the next frame: about 12 ms later on every page switch (bench/run_bench.py).

function follow(event) {
  const link = event.currentTarget;
  if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) {
    return; // the browser's own handling: a new tab or window
  }
  event.preventDefault();
  if (link.getAttribute("aria-current") === "page" && link.href === location.href) return;
  history.pushState(null, "", link.href);
  window.dispatchEvent(new PopStateEvent("popstate", { state: null }));
}

export default function (component) {
  const { data, parentElement } = component;
  if (!data || !Array.isArray(data.links)) return;
  const nav = parentElement.querySelector("nav") || parentElement.appendChild(document.createElement("nav"));
  nav.className = `stalwart-nav stalwart-nav-${data.layout || "column"}`;
  nav.setAttribute("aria-label", data.label || "Pages");
  nav.replaceChildren(
    ...data.links.map((item) => {
      const a = document.createElement("a");
      a.href = item.href;
      a.textContent = item.label;
      a.dataset.target = item.id;
      if (item.current) a.setAttribute("aria-current", "page");
      a.addEventListener("click", follow);
      return a;
    }),
  );
}
