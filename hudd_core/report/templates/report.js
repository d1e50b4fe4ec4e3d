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
    if (sheet.complete) draw();  // loaded before this script ran: no load event comes
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

// The embedding: pointing near a sampled point shows its image, drawn from its cluster's
// contact sheet (no image of its own on the page); a click opens the cluster's card.
(function () {
  const svg = document.getElementById("embedding-plot");
  const data = document.getElementById("embedding-points");
  if (!svg || !data) return;
  const points = JSON.parse(data.textContent);  // [x, y, cluster, cell, image]
  const tip = document.getElementById("embedding-tip");
  const ring = document.getElementById("embedding-ring");
  const canvas = tip.querySelector("canvas"), text = tip.querySelector("div");
  const RADIUS = 8;
  let current = null;
  function nearest(evt) {
    const p = svg.createSVGPoint();
    p.x = evt.clientX; p.y = evt.clientY;
    const q = p.matrixTransform(svg.getScreenCTM().inverse());
    let best = null, dist = RADIUS * RADIUS;
    for (const pt of points) {
      const d = (pt[0] - q.x) ** 2 + (pt[1] - q.y) ** 2;
      if (d <= dist) { dist = d; best = pt; }
    }
    return best;
  }
  function draw(pt) {
    const sheet = document.querySelector("#cluster-" + pt[2] + " img.sheet");
    const anim = document.querySelector("#cluster-" + pt[2] + " canvas.anim");
    const ctx = canvas.getContext("2d");
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (!sheet || !anim) return;
    sheet.loading = "eager";
    if (!sheet.complete || !sheet.naturalWidth) {
      sheet.addEventListener("load", () => { if (current === pt) draw(pt); }, { once: true });
      return;
    }
    const cols = Number(anim.dataset.cols), cell = Number(anim.dataset.cell);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(sheet, (pt[3] % cols) * cell, Math.floor(pt[3] / cols) * cell, cell, cell,
                  0, 0, canvas.width, canvas.height);
  }
  svg.addEventListener("mousemove", (evt) => {
    const pt = nearest(evt);
    if (pt === current) return;
    current = pt;
    tip.hidden = !pt;
    ring.toggleAttribute("hidden", !pt);  // an SVG element: the attribute, not .hidden
    if (!pt) return;
    ring.setAttribute("cx", pt[0]);
    ring.setAttribute("cy", pt[1]);
    text.textContent = "cluster " + pt[2] + ": " + pt[4];
    const box = svg.parentElement.getBoundingClientRect();
    tip.style.left = (evt.clientX - box.left + 14) + "px";
    tip.style.top = (evt.clientY - box.top + 14) + "px";
    draw(pt);
  });
  svg.addEventListener("mouseleave", () => {
    current = null;
    tip.hidden = true;
    ring.setAttribute("hidden", "");
  });
  svg.addEventListener("click", () => { if (current) location.hash = "#cluster-" + current[2]; });
})();
