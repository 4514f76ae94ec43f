// The vote page: one pair at a time, left/right order chosen by the server, names hidden.
"use strict";

const KEYS = {a: "left", ArrowLeft: "left", "1": "left", b: "right", ArrowRight: "right",
              "2": "right", t: "tie", "3": "tie", x: "both_bad", "4": "both_bad"};
let current = null;
let busy = false;

function show(state) {
  current = state.pair || null;
  const bar = document.getElementById("progress-bar");
  document.getElementById("progress").textContent = state.voted + " / " + state.total + " voted";
  bar.style.width = (state.total ? 100 * state.voted / state.total : 0) + "%";
  document.getElementById("done").hidden = !state.done;
  document.getElementById("pair").hidden = state.done;
  if (!current) return;
  const history = document.getElementById("history");
  history.innerHTML = "";
  for (const m of current.prompt) {
    const div = document.createElement("div");
    div.className = "turn " + m.role;
    div.innerHTML = '<div class="role">' + escapeHtml(m.role) + "</div>" +
      renderMarkdown(typeof m.content === "string" ? m.content : JSON.stringify(m.content));
    history.appendChild(div);
  }
  document.getElementById("left").innerHTML = renderMarkdown(current.left);
  document.getElementById("right").innerHTML = renderMarkdown(current.right);
  window.scrollTo(0, 0);
}

async function vote(choice) {
  if (!current || busy) return;
  busy = true;
  try {
    show(await api("/api/vote", {id: current.id, choice: choice}));
  } catch (err) {
    document.getElementById("error").textContent = "Vote not saved: " + err.message;
  } finally {
    busy = false;
  }
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const choice = KEYS[event.key];
  if (choice) { event.preventDefault(); vote(choice); }
});
for (const button of document.querySelectorAll("button[data-choice]")) {
  button.addEventListener("click", () => vote(button.dataset.choice));
}
api("/api/next").then(show).catch((err) => {
  document.getElementById("error").textContent = err.message;
});
