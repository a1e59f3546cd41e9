// nbflow DAG widget, part 2 of 2 (after dag_layout.js). The SVG is drawn on the Python
// side (nbflow/widgets/svg.py); this file shows it fitted to the output's width, with zoom (buttons, Ctrl/⌘ + wheel), pan
// (drag), a minimap for big graphs, the highlight of a step's upstream and downstream
// (hover, or the selected step), folded groups (click to expand), and, when Graphviz's
// `dot` was missing on the Python side, a layout of its own by dagre (vendored, sent in
// `layout_module`), which routes every edge between the boxes.

const MAX_HEIGHT = 560; // px: taller graphs are fitted smaller, or panned
const MIN_HEIGHT = 90;
const MAX_SCALE = 4;
const MIN_SCALE = 0.02;
const ZOOM_STEP = 1.25;
const MINIMAP_NODES = 30; // above this many nodes a minimap is shown
const FAR_SCALE = 0.3; // below this zoom, text is not drawn
const SVG_NS = "http://www.w3.org/2000/svg";

// The front end's copy of format_duration (nbflow/widgets/states.py), for ticking clocks.
function formatDuration(ms) {
  if (ms < 1) return `${Math.round(ms * 1000)} µs`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const total = Math.round(seconds);
  return `${Math.floor(total / 60)} min ${total % 60} s`;
}
const TICK_MS = 200;

// A legend entry: a small box of the state's (or a gate's) look. Its classes are those of
// the nodes it stands for, so the stylesheet colors it in the page's theme.
function legendItem(state, style) {
  const [fill, stroke, dash, icon, cls, shape] = style;
  const item = document.createElement("span");
  item.className = "nbflow-legend-item";
  item.dataset.state = state;
  const swatch = document.createElementNS(SVG_NS, "svg");
  swatch.setAttribute("class", "nbflow-swatch");
  swatch.setAttribute("width", "26");
  swatch.setAttribute("height", "14");
  swatch.setAttribute("viewBox", "0 0 26 14");
  const paint =
    `fill="${fill}" stroke="${stroke}" stroke-width="1.5"${dash ? ` stroke-dasharray="${dash}"` : ""}`;
  const outline = shape === "hexagon"
    ? `<polygon class="shape" points="5,1 21,1 25,7 21,13 5,13 1,7" ${paint}/>`
    : `<rect class="shape" x="1" y="1" width="24" height="12" rx="3" ${paint}/>`;
  swatch.innerHTML =
    `<g class="${cls || `state-${state}`}">${outline}` +
    `<g class="icon" transform="translate(13,7) scale(0.8)" fill="${stroke}" stroke="${stroke}" ` +
    `stroke-linecap="round" stroke-linejoin="round">${icon || ""}</g></g>`;
  item.append(swatch, document.createTextNode(state.replace("_", " ")));
  return item;
}

function button(label, title, cls) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = `nbflow-dag-button ${cls}`;
  b.textContent = label;
  b.title = title;
  b.setAttribute("aria-label", title);
  return b;
}

function render({ model, el }) {
  el.classList.add("nbflow-dag");
  const head = document.createElement("div");
  head.className = "nbflow-dag-head";
  const title = document.createElement("span");
  title.className = "nbflow-dag-title";
  const legend = document.createElement("span");
  legend.className = "nbflow-legend";
  const tools = document.createElement("span");
  tools.className = "nbflow-dag-tools";
  const zoomOut = button("−", "Zoom out", "nbflow-zoom-out");
  const zoomIn = button("+", "Zoom in", "nbflow-zoom-in");
  const fitButton = button("Fit", "Fit the whole DAG in view", "nbflow-fit");
  const groupsButton = button("", "Fold or unfold the groups of similar steps", "nbflow-groups");
  tools.append(zoomOut, zoomIn, fitButton, groupsButton);
  head.append(title, legend, tools);
  const view = document.createElement("div");
  view.className = "nbflow-dag-view";
  view.tabIndex = 0;
  const stage = document.createElement("div");
  stage.className = "nbflow-dag-stage";
  const minimap = document.createElement("div");
  minimap.className = "nbflow-minimap";
  view.append(stage, minimap);
  const info = document.createElement("div");
  info.className = "nbflow-dag-info";
  const note = document.createElement("div");
  note.className = "nbflow-note";
  el.append(head, view, info, note);

  let svg = null;
  let content = { x: 0, y: 0, w: 1, h: 1 }; // the drawing's extent
  let box = null; // the part of the drawing in view, in drawing units
  let fitted = true; // follow the fit until the user zooms or pans
  let graph = { up: new Map(), down: new Map(), nodes: new Map(), edges: [] };
  let lit = [];
  let generation = 0;

  const viewWidth = () => view.clientWidth || el.clientWidth || 600;

  const apply = () => {
    if (!svg || !box) return;
    const width = viewWidth();
    const height = Math.round((box.h / box.w) * width);
    svg.setAttribute("width", String(width));
    svg.setAttribute("height", String(height));
    svg.setAttribute("viewBox", `${box.x.toFixed(1)} ${box.y.toFixed(1)} ${box.w.toFixed(1)} ${box.h.toFixed(1)}`);
    svg.dataset.scale = (width / box.w).toFixed(4);
    // Far out, names are too small to read: not drawing them keeps zoom and pan smooth.
    svg.classList.toggle("nbflow-far", width / box.w < FAR_SCALE);
    drawMinimapView();
  };

  // Fit the whole drawing: as wide as the output at most (never enlarged), and no taller
  // than MAX_HEIGHT; the view's height follows the drawing's.
  const fit = () => {
    const width = viewWidth();
    const scale = Math.min(1, width / content.w, MAX_HEIGHT / content.h);
    const height = Math.max(MIN_HEIGHT, Math.min(MAX_HEIGHT, content.h * scale));
    box = { x: content.x, y: content.y - (height / scale - content.h) / 2, w: width / scale, h: height / scale };
    fitted = true;
    apply();
  };

  const zoom = (factor, cx, cy) => {
    if (!box) return;
    const width = viewWidth();
    const scale = Math.max(MIN_SCALE, Math.min(MAX_SCALE, (width / box.w) * factor));
    const w = width / scale, h = (box.h / box.w) * w;
    const fx = cx === undefined ? 0.5 : (cx - box.x) / box.w;
    const fy = cy === undefined ? 0.5 : (cy - box.y) / box.h;
    const px = cx === undefined ? box.x + box.w / 2 : cx;
    const py = cy === undefined ? box.y + box.h / 2 : cy;
    box = { x: px - fx * w, y: py - fy * h, w, h };
    fitted = false;
    apply();
  };

  const panBy = (dx, dy) => {
    if (!box) return;
    box = { ...box, x: box.x + dx, y: box.y + dy };
    fitted = false;
    apply();
  };

  const centerOn = (x, y) => panBy(x - (box.x + box.w / 2), y - (box.y + box.h / 2));

  // --- the minimap: every node as a colored rectangle, and the part in view ---
  let miniSvg = null, miniView = null;
  const drawMinimap = () => {
    minimap.replaceChildren();
    miniSvg = miniView = null;
    if (!svg || graph.nodes.size <= MINIMAP_NODES) {
      minimap.style.display = "none";
      return;
    }
    minimap.style.display = "";
    miniSvg = document.createElementNS(SVG_NS, "svg");
    miniSvg.setAttribute("viewBox", `${content.x} ${content.y} ${content.w} ${content.h}`);
    miniSvg.setAttribute("width", "180");
    miniSvg.setAttribute("height", String(Math.max(24, Math.min(120, (180 * content.h) / content.w))));
    miniSvg.setAttribute("preserveAspectRatio", "xMidYMid meet");
    const parts = [];
    for (const g of graph.nodes.values()) {
      // The colors the page shows (the theme's), not the SVG's light-theme attributes.
      const b = boxOf(g), shape = g.querySelector(".shape"), look = getComputedStyle(shape);
      const fill = look.fill || shape.getAttribute("fill");
      const stroke = look.stroke || shape.getAttribute("stroke");
      parts.push(
        `<rect x="${b.x - b.w / 2}" y="${b.y - b.h / 2}" width="${b.w}" height="${b.h}" ` +
        `fill="${fill}" stroke="${stroke}" stroke-width="${content.w / 180}"/>`,
      );
    }
    parts.push(`<rect class="nbflow-minimap-view" stroke-width="${(1.5 * content.w) / 180}"/>`);
    miniSvg.innerHTML = parts.join("");
    miniView = miniSvg.querySelector(".nbflow-minimap-view");
    minimap.append(miniSvg);
    drawMinimapView();
  };
  function drawMinimapView() {
    if (!miniView || !box) return;
    miniView.setAttribute("x", box.x.toFixed(1));
    miniView.setAttribute("y", box.y.toFixed(1));
    miniView.setAttribute("width", box.w.toFixed(1));
    miniView.setAttribute("height", box.h.toFixed(1));
  }
  const minimapPoint = (event) => {
    const point = miniSvg.createSVGPoint();
    point.x = event.clientX;
    point.y = event.clientY;
    return point.matrixTransform(miniSvg.getScreenCTM().inverse());
  };
  let miniDragging = false;
  minimap.addEventListener("pointerdown", (event) => {
    if (!miniSvg) return;
    event.stopPropagation();
    event.preventDefault();
    miniDragging = true;
    minimap.setPointerCapture?.(event.pointerId);
    const p = minimapPoint(event);
    centerOn(p.x, p.y);
  });
  minimap.addEventListener("pointermove", (event) => {
    if (!miniDragging || !miniSvg) return;
    const p = minimapPoint(event);
    centerOn(p.x, p.y);
  });
  minimap.addEventListener("pointerup", () => { miniDragging = false; });

  // --- upstream / downstream highlight ---
  const index = () => {
    graph = { up: new Map(), down: new Map(), nodes: new Map(), edges: [] };
    for (const g of svg.querySelectorAll("g.node")) graph.nodes.set(nodeName(g), g);
    for (const e of svg.querySelectorAll("g.edge")) {
      const { tail, head } = e.dataset;
      graph.edges.push(e);
      if (!graph.down.has(tail)) graph.down.set(tail, []);
      if (!graph.up.has(head)) graph.up.set(head, []);
      graph.down.get(tail).push(head);
      graph.up.get(head).push(tail);
    }
  };
  const reach = (start, links) => {
    const seen = new Set();
    const todo = [start];
    while (todo.length) {
      for (const next of links.get(todo.pop()) || []) {
        if (!seen.has(next)) { seen.add(next); todo.push(next); }
      }
    }
    return seen;
  };
  const clearLit = () => {
    for (const [node, cls] of lit) node.classList.remove(cls);
    lit = [];
    if (svg) svg.classList.remove("nbflow-tracing");
  };
  const highlight = (name) => {
    clearLit();
    if (!svg || !name || !graph.nodes.has(name)) return;
    const up = reach(name, graph.up), down = reach(name, graph.down);
    const mark = (node, cls) => { node.classList.add(cls); lit.push([node, cls]); };
    mark(graph.nodes.get(name), "nbflow-focus");
    for (const n of up) mark(graph.nodes.get(n), "nbflow-up");
    for (const n of down) mark(graph.nodes.get(n), "nbflow-down");
    for (const e of graph.edges) {
      const { tail, head } = e.dataset;
      if ((head === name || up.has(head)) && up.has(tail)) mark(e, "nbflow-up");
      else if ((tail === name || down.has(tail)) && down.has(head)) mark(e, "nbflow-down");
    }
    svg.classList.add("nbflow-tracing");
  };
  const selectedName = () => {
    const step = model.get("selected");
    return step && graph.nodes.has(step) ? step : "";
  };

  // --- drawing ---
  // A running step's caption says how long it has run: the kernel draws the time at each
  // redraw, and this advances it in between (no message per tick).
  let drawnAt = performance.now();
  const tick = () => {
    const since = performance.now() - drawnAt;
    for (const text of stage.querySelectorAll("text.ticking")) {
      const elapsed = Number(text.getAttribute("data-elapsed")) + since;
      text.textContent = `${text.getAttribute("data-word")} · ${formatDuration(elapsed)}`;
    }
  };
  const ticker = setInterval(tick, TICK_MS);
  const drawSvg = async () => {
    const mine = ++generation;
    const before = content;
    drawnAt = performance.now();
    stage.innerHTML = model.get("svg");
    svg = stage.querySelector("svg");
    lit = [];
    if (!svg || !svg.querySelector("g.node")) {
      svg = null;
      box = null;
      drawMinimap();
      view.classList.add("empty");
      return;
    }
    view.classList.remove("empty");
    const wantsDagre = svg.getAttribute("data-engine") === "layered" && model.get("layout_module");
    if (wantsDagre) placeFromCache(svg);
    show(before);
    if (wantsDagre && svg.getAttribute("data-engine") !== "dagre") {
      // Shown at once with the Python layout; dagre's arrives from its worker.
      view.classList.add("laying-out");
      try {
        const shown = content;
        const drawn = svg;
        if (await relayout(model.get("layout_module"), drawn, () => mine === generation)) {
          show(shown);
        }
      } catch (err) {
        console.warn("nbflow: the in-browser layout failed, showing the simple one", err);
      }
      if (mine === generation) view.classList.remove("laying-out");
    }
    if (mine === generation) view.dataset.laidOut = svg.getAttribute("data-engine");
  };
  // Fit (or keep the zoom of) a new drawing, index it, redraw the minimap and highlight.
  const show = (before) => {
    const [x, y, w, h] = (svg.getAttribute("data-content") || svg.getAttribute("viewBox"))
      .split(" ").map(Number);
    content = { x, y, w, h };
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    index();
    drawMinimap();
    const sameShape = before.w === content.w && before.h === content.h && box;
    if (fitted || !sameShape) fit();
    else apply();
    highlight(selectedName());
    view.dataset.ready = String(generation);
  };
  const drawTitle = () => {
    title.textContent = model.get("title");
  };
  const drawLegend = () => {
    legend.replaceChildren(
      ...Object.entries(model.get("palette")).map(([s, c]) => legendItem(s, c)),
    );
  };
  const drawInfo = () => {
    const step = model.get("selected");
    const details = model.get("details");
    info.textContent = step ? `${step}: ${details[step] || "never run"}` : "";
  };
  const drawNote = () => {
    note.textContent = model.get("note");
  };
  const drawGroupsButton = () => {
    const keys = Object.keys(model.get("groups") || {});
    const folded = model.get("collapsed") || [];
    groupsButton.style.display = keys.length ? "" : "none";
    groupsButton.textContent = folded.length ? "Unfold groups" : "Fold groups";
  };

  // --- input ---
  let drag = null;
  const onPointerDown = (event) => {
    if (event.button !== 0 || !box) return;
    drag = { x: event.clientX, y: event.clientY, moved: false };
  };
  const onPointerMove = (event) => {
    if (drag) {
      const dx = event.clientX - drag.x, dy = event.clientY - drag.y;
      if (!drag.moved && Math.hypot(dx, dy) < 4) return;
      if (!drag.moved) {
        drag.moved = true;
        view.setPointerCapture?.(event.pointerId);
        view.classList.add("panning");
      }
      const scale = viewWidth() / box.w;
      panBy(-dx / scale, -dy / scale);
      drag.x = event.clientX;
      drag.y = event.clientY;
      return;
    }
    const node = event.target.closest ? event.target.closest("g.node") : null;
    const name = node && view.contains(node) ? nodeName(node) : selectedName();
    if (name !== (lit.length ? nodeName(lit[0][0]) : "")) highlight(name);
  };
  const onPointerUp = (event) => {
    const wasDrag = drag && drag.moved;
    drag = null;
    view.classList.remove("panning");
    if (wasDrag) return;
    const node = event.target.closest ? event.target.closest("g.node") : null;
    if (!node || !view.contains(node)) return;
    if (node.hasAttribute("data-group")) {
      const key = node.getAttribute("data-group");
      model.set("collapsed", (model.get("collapsed") || []).filter((k) => k !== key));
    } else {
      model.set("selected", node.getAttribute("data-step"));
    }
    model.save_changes();
  };
  const onLeave = () => {
    if (!drag) highlight(selectedName());
  };
  const onWheel = (event) => {
    if (!(event.ctrlKey || event.metaKey) || !svg) return; // plain wheel scrolls the page
    event.preventDefault();
    const point = svg.createSVGPoint();
    point.x = event.clientX;
    point.y = event.clientY;
    const p = point.matrixTransform(svg.getScreenCTM().inverse());
    zoom(event.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP, p.x, p.y);
  };
  const onKey = (event) => {
    const keys = { "+": () => zoom(ZOOM_STEP), "=": () => zoom(ZOOM_STEP), "-": () => zoom(1 / ZOOM_STEP), "0": fit };
    if (keys[event.key]) { keys[event.key](); event.preventDefault(); }
  };
  view.addEventListener("pointerdown", onPointerDown);
  view.addEventListener("pointermove", onPointerMove);
  view.addEventListener("pointerup", onPointerUp);
  view.addEventListener("pointerleave", onLeave);
  view.addEventListener("wheel", onWheel, { passive: false });
  view.addEventListener("keydown", onKey);
  zoomIn.addEventListener("click", () => zoom(ZOOM_STEP));
  zoomOut.addEventListener("click", () => zoom(1 / ZOOM_STEP));
  fitButton.addEventListener("click", fit);
  groupsButton.addEventListener("click", () => {
    const folded = model.get("collapsed") || [];
    model.set("collapsed", folded.length ? [] : Object.keys(model.get("groups") || {}));
    model.save_changes();
  });
  // Follow the output's width (a resized panel, a cell shown before it was attached).
  let lastWidth = 0;
  const resize = new ResizeObserver(() => {
    const width = viewWidth();
    if (width === lastWidth) return;
    lastWidth = width;
    if (fitted) fit();
    else apply();
  });
  resize.observe(view);
  // The minimap copies the nodes' colors as the page shows them: redraw it when the
  // theme changes (JupyterLab sets data-jp-theme-light on the body; VS Code a class).
  const theme = new MutationObserver(() => drawMinimap());
  theme.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light", "class"] });

  const handlers = [
    ["change:svg", drawSvg],
    ["change:title", drawTitle],
    ["change:palette", drawLegend],
    ["change:selected change:details", drawInfo],
    ["change:note", drawNote],
    ["change:groups change:collapsed", drawGroupsButton],
  ];
  for (const [name, fn] of handlers) model.on(name, fn);
  drawSvg();
  drawTitle();
  drawLegend();
  drawInfo();
  drawNote();
  drawGroupsButton();
  return () => {
    clearInterval(ticker);
    resize.disconnect();
    theme.disconnect();
    for (const [name, fn] of handlers) model.off(name, fn);
  };
}

export default { render };
