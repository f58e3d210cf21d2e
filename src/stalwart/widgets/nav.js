// Stalwart's navigation links: real <a href="?page=…"> links (middle-click and Ctrl+click open
// a new tab, the keyboard reaches them, the status bar shows where they go) that switch pages
// in place. A plain click pushes the new URL and tells Streamlit the history changed, which
// sends the rerun at once from inside the click. A button would send it from a timer that
// waits for the next frame: about 12 ms later on every page switch (bench/run_bench.py).

//
// A click that is also the blur of an edited text field makes Streamlit commit the field
// from a timer (a rerun carrying the URL of the page being left). Streamlit merges queued
// reruns into the newest one's URL, so the navigation must be sent after that commit:
// it waits for the same kind of timer, which runs after the one already queued. Typing that
// the form's journal has not sent yet is sent first, likewise: sent later, it would carry the
// new URL and rerun the old page's journal on the new page.

let blurring = false;

function noteFocus() {
  const active = document.activeElement;
  blurring = active instanceof HTMLInputElement || active instanceof HTMLTextAreaElement;
}

function go(href) {
  history.pushState(null, "", href);
  window.dispatchEvent(new PopStateEvent("popstate", { state: null }));
}

function follow(event) {
  const link = event.currentTarget;
  if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) {
    return; // the browser's own handling: a new tab or window
  }
  event.preventDefault();
  if (link.getAttribute("aria-current") === "page" && link.href === location.href) return;
  // Typing still waiting in a form's journal (debounced) goes first too, for the same reason.
  const journals = Object.values(window.__stalwartJournals || {});
  const typing = journals.filter((j) => j.timer !== null);
  typing.forEach((j) => j.send());
  if (blurring || typing.length) {
    blurring = false;
    setTimeout(() => go(link.href), 0);
  } else {
    go(link.href);
  }
}

// A link outside the page router: followed by the browser itself, or sent as a POST (a form,
// so the browser sends its Origin and follows the redirect as a page load).
function post(event) {
  if (event.button !== 0) return;
  event.preventDefault();
  const form = document.createElement("form");
  form.method = "post";
  form.action = event.currentTarget.href;
  form.style.display = "none";
  document.body.appendChild(form);
  form.submit();
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
      if (item.external) {
        if (item.method === "post") a.addEventListener("click", post);
        return a;
      }
      a.addEventListener("pointerdown", noteFocus);
      a.addEventListener("click", follow);
      return a;
    }),
  );
}
