// The summary page: counts, A's win rate with its 95% interval, metric deltas per pair.
"use strict";

const LABELS = {a: "A better", b: "B better", tie: "tie", both_bad: "both bad"};

function shortName(path) { return path.replace(/\/+$/, "").split("/").slice(-2).join("/"); }

function percent(x) { return x === null ? "–" : (100 * x).toFixed(1) + "%"; }
function signed(x) { return x === null ? "–" : (x > 0 ? "+" : "") + x.toFixed(2); }

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
}

function render(s) {
  document.getElementById("name-a").textContent = s.names.a;
  document.getElementById("name-b").textContent = s.names.b;
  document.getElementById("voted").textContent = s.voted + " of " + s.total + " pairs voted";
  for (const k of Object.keys(LABELS)) {
    document.getElementById("count-" + k).textContent = s.counts[k];
  }
  document.getElementById("win-rate").textContent = percent(s.a_win_rate);
  document.getElementById("interval").textContent =
    percent(s.a_win_rate_95[0]) + " – " + percent(s.a_win_rate_95[1]);
  document.getElementById("delta-bleu").textContent = signed(s.mean_delta.bleu4);
  document.getElementById("delta-rouge").textContent = signed(s.mean_delta.rougeL);
  document.getElementById("agreement").textContent =
    percent(s.metric_agreement.rougeL_agrees) + " of " + s.metric_agreement.pairs;
  const body = document.getElementById("rows");
  body.innerHTML = "";
  for (const r of s.rows) {
    const tr = document.createElement("tr");
    cell(tr, r.prompt);
    const winner = {a: s.names.a, b: s.names.b}[r.choice];
    cell(tr, winner ? shortName(winner) + " better" : LABELS[r.choice], "vote-" + r.choice);
    cell(tr, signed(r.delta.bleu4), r.delta.bleu4 > 0 ? "up" : r.delta.bleu4 < 0 ? "down" : "");
    cell(tr, signed(r.delta.rougeL), r.delta.rougeL > 0 ? "up" : r.delta.rougeL < 0 ? "down" : "");
    body.appendChild(tr);
  }
}

api("/api/summary").then(render).catch((err) => {
  document.getElementById("error").textContent = err.message;
});
