// Shared by the compare and summary pages: a small, safe Markdown renderer (no network, no
// libraries). Text is HTML-escaped first, so a reply can never inject markup.
"use strict";

function escapeHtml(s) {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

function inline(s) {
  return s
    .replace(/`([^`]+)`/g, "<code>$1</code>")
    .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^*])\*([^*\s][^*]*)\*/g, "$1<em>$2</em>");
}

function renderMarkdown(text) {
  const out = [];
  const parts = escapeHtml(text || "").split(/^```[^\n]*\n?/m);
  // Even parts are prose, odd parts are fenced code.
  parts.forEach((part, i) => {
    if (i % 2 === 1) {
      out.push("<pre><code>" + part.replace(/\n$/, "") + "</code></pre>");
      return;
    }
    let list = null;
    const closeList = () => { if (list) { out.push("</" + list + ">"); list = null; } };
    for (const block of part.split(/\n{2,}/)) {
      for (const line of block.split("\n")) {
        const bullet = line.match(/^\s*[-*+]\s+(.*)$/);
        const numbered = line.match(/^\s*\d+[.)]\s+(.*)$/);
        const heading = line.match(/^(#{1,6})\s+(.*)$/);
        if (bullet || numbered) {
          const kind = bullet ? "ul" : "ol";
          if (list !== kind) { closeList(); out.push("<" + kind + ">"); list = kind; }
          out.push("<li>" + inline((bullet || numbered)[1]) + "</li>");
        } else if (heading) {
          closeList();
          const level = Math.min(heading[1].length + 2, 6);
          out.push("<h" + level + ">" + inline(heading[2]) + "</h" + level + ">");
        } else if (line.trim()) {
          closeList();
          out.push("<p>" + inline(line) + "</p>");
        }
      }
      closeList();
    }
  });
  return out.join("\n");
}

async function api(path, body) {
  const response = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const data = await response.json();
  if (!response.ok) throw new Error(data.error ? data.error.message : response.statusText);
  return data;
}
