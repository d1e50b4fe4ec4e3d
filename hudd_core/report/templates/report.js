"use strict";
// Plays each cluster's contact sheet as its animation (one cell every 600 ms: the
// paper's 100 images per minute), only while the card is on screen.
(function () {
  const FRAME_MS = 600;
  function player(card) {
    const sheet = card.querySelector("img.sheet");
    const canvas = card.querySelector("canvas.anim");
    if (!sheet || !canvas) return null;
    const label = card.querySelector(".frame");
    const n = Number(canvas.dataset.n), cols = Number(canvas.dataset.cols);
    const cell = Number(canvas.dataset.cell);
    const ctx = canvas.getContext("2d");
    let i = 0, timer = null;
    function draw() {
      if (!sheet.complete || !sheet.naturalWidth) return;
      ctx.imageSmoothingEnabled = false;
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.drawImage(sheet, (i % cols) * cell, Math.floor(i / cols) * cell, cell, cell,
                    0, 0, canvas.width, canvas.height);
      if (label) label.textContent = (i + 1) + "/" + n;
    }
    sheet.addEventListener("load", draw);
    return {
      start() {
        sheet.loading = "eager";  // the animation needs the sheet now
        draw();
        if (!timer && n > 1) timer = setInterval(() => { i = (i + 1) % n; draw(); }, FRAME_MS);
      },
      stop() { clearInterval(timer); timer = null; },
    };
  }
  const players = new Map();
  for (const card of document.querySelectorAll("#cluster-cards .card")) {
    const p = player(card);
    if (p) players.set(card, p);
  }
  const seen = new IntersectionObserver((entries) => {
    for (const e of entries) {
      const p = players.get(e.target);
      if (e.isIntersecting) p.start(); else p.stop();
    }
  }, { rootMargin: "200px" });
  for (const card of players.keys()) seen.observe(card);
})();

// Sorting and filtering of the clusters: the overview table and the cards together.
(function () {
  const body = document.querySelector("#cluster-table tbody");
  const cards = document.getElementById("cluster-cards");
  if (!body || !cards) return;
  const $ = (id) => document.getElementById(id);
  const num = (el, key) => (el.dataset[key] === "" ? -1 : Number(el.dataset[key]));
  function apply() {
    const key = $("sort-key").value;
    const minSize = Number($("min-size").value) || 0;
    const minPurity = (Number($("min-purity").value) || 0) / 100;
    const minReduction = (Number($("min-reduction").value) || 0) / 100;
    const text = $("cause-text").value.trim().toLowerCase();
    const order = (a, b) => (key === "id" ? num(a, "id") - num(b, "id")
                                          : num(b, key) - num(a, key) || num(a, "id") - num(b, "id"));
    const rows = Array.from(body.rows).sort(order);
    let shown = 0;
    for (const row of rows) {
      const card = document.getElementById("cluster-" + row.dataset.id);
      const keep = num(row, "size") >= minSize
        && (minPurity === 0 || num(row, "purity") >= minPurity)
        && (minReduction === 0 || num(row, "reduction") >= minReduction)
        && (!text || row.dataset.cause.toLowerCase().includes(text));
      row.hidden = !keep;
      body.appendChild(row);
      if (card) { card.hidden = !keep; cards.appendChild(card); }
      shown += keep ? 1 : 0;
    }
    $("shown-count").textContent = shown + " of " + rows.length + " clusters shown";
  }
  for (const id of ["sort-key", "min-size", "min-purity", "min-reduction", "cause-text"]) {
    $(id).addEventListener("input", apply);
  }
  apply();
})();
