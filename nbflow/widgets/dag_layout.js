// nbflow DAG widget, part 1 of 2 (prepended to dag.js by nbflow/widgets/dag.py): reading
// the drawn nodes, and laying the graph out again with the vendored dagre when Graphviz's
// `dot` was missing on the Python side. dagre routes every edge between the boxes.

const ARROW = 9; // px, as in nbflow/widgets/layout.py

let layoutWorker = null; // one dagre worker per page: a big layout never blocks the page
let layoutCalls = 0;
const layoutWaiting = new Map(); // call id -> resolve
const layoutCache = new Map(); // shape key -> dagre's placement, per page

// dagre runs in a module worker made from blob URLs (the vendored source, then a few
// lines that call it), so nothing is fetched from the network. Where a worker cannot be
// made (an opaque origin), it runs on the page instead.
function layoutGraph(dagre, data) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 16, ranksep: 52, edgesep: 12, marginx: 8, marginy: 8 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const [name, width, height] of data.nodes) g.setNode(name, { width, height });
  for (const [tail, head] of data.edges) g.setEdge(tail, head);
  dagre.layout(g);
  const placed = { width: g.graph().width, height: g.graph().height, nodes: {}, edges: {} };
  for (const id of g.nodes()) placed.nodes[id] = { x: g.node(id).x, y: g.node(id).y };
  for (const e of g.edges()) placed.edges[e.v + ">" + e.w] = g.edge(e).points;
  return placed;
}

const WORKER_SOURCE = (dagreUrl) => `
import dagre from "${dagreUrl}";
const layoutGraph = ${layoutGraph.toString()};
self.onmessage = ({ data }) => self.postMessage({ id: data.id, placed: layoutGraph(dagre, data) });
`;

const blobUrl = (text) => URL.createObjectURL(new Blob([text], { type: "text/javascript" }));
let dagreUrl = null;
let onPage = null; // dagre imported on the page, when the worker failed

function layOutOnPage(data) {
  onPage = onPage || import(dagreUrl).then((m) => m.default || m);
  return onPage.then((dagre) => layoutGraph(dagre, data));
}

function layOut(source, nodes, edges) {
  dagreUrl = dagreUrl || blobUrl(source);
  const id = ++layoutCalls;
  const data = { id, nodes, edges };
  if (layoutWorker === false) return layOutOnPage(data);
  if (!layoutWorker) {
    try {
      layoutWorker = new Worker(blobUrl(WORKER_SOURCE(dagreUrl)), { type: "module" });
    } catch (err) {
      layoutWorker = false;
      return layOutOnPage(data);
    }
    layoutWorker.onmessage = ({ data: answer }) => {
      layoutWaiting.get(answer.id)?.resolve(answer.placed);
      layoutWaiting.delete(answer.id);
    };
    layoutWorker.onerror = (event) => {
      event.preventDefault?.();
      layoutWorker = false;
      const waiting = Array.from(layoutWaiting.values());
      layoutWaiting.clear();
      for (const call of waiting) layOutOnPage(call.data).then(call.resolve, call.reject);
    };
  }
  return new Promise((resolve, reject) => {
    layoutWaiting.set(id, { resolve, reject, data });
    layoutWorker.postMessage(data);
  });
}

function boxOf(g) {
  const [x, y, w, h] = g.getAttribute("data-box").split(" ").map(Number);
  return { x, y, w, h };
}

function nodeName(g) {
  // The name the layout knows the node by (a folded group: its title's first part).
  return g.querySelector("text").textContent;
}

// A B-spline through the points (as d3's curveBasis), so bends are smooth but the curve
// stays within the hull of dagre's points, which keep clear of the boxes.
function basisPath(points) {
  const f = (v) => v.toFixed(1);
  if (points.length < 3) return `M${points.map((p) => `${f(p.x)},${f(p.y)}`).join(" L")}`;
  let d = `M${f(points[0].x)},${f(points[0].y)}`;
  const p = points;
  d += ` L${f((5 * p[0].x + p[1].x) / 6)},${f((5 * p[0].y + p[1].y) / 6)}`;
  for (let i = 1; i < p.length - 1; i++) {
    const a = p[i - 1], b = p[i], c = p[i + 1];
    d +=
      ` C${f((2 * a.x + b.x) / 3)},${f((2 * a.y + b.y) / 3)}` +
      ` ${f((a.x + 2 * b.x) / 3)},${f((a.y + 2 * b.y) / 3)}` +
      ` ${f((a.x + 4 * b.x + c.x) / 6)},${f((a.y + 4 * b.y + c.y) / 6)}`;
  }
  const a = p[p.length - 2], b = p[p.length - 1];
  d +=
    ` C${f((2 * a.x + b.x) / 3)},${f((2 * a.y + b.y) / 3)}` +
    ` ${f((a.x + 2 * b.x) / 3)},${f((a.y + 2 * b.y) / 3)} ${f(b.x)},${f(b.y)}`;
  return d;
}

function arrowhead(before, end) {
  const dx = end.x - before.x, dy = end.y - before.y;
  const len = Math.hypot(dx, dy) || 1;
  const ux = dx / len, uy = dy / len, half = ARROW * 0.4;
  const tip = [end.x + ux * ARROW, end.y + uy * ARROW];
  const left = [end.x - uy * half, end.y + ux * half];
  const right = [end.x + uy * half, end.y - ux * half];
  return [tip, left, right].map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
}

function shapeKey(svg) {
  const nodes = Array.from(svg.querySelectorAll("g.node"), nodeName);
  const edges = Array.from(svg.querySelectorAll("g.edge"), (e) => `${e.dataset.tail}>${e.dataset.head}`);
  return nodes.join("\n") + "|" + edges.join("\n");
}

// Lay the drawn graph out again with dagre: move each node group, redraw each edge.
// A shape laid out before (a state change in a live run) is placed at once, from the cache.
async function relayout(source, svg, current) {
  const nodes = Array.from(svg.querySelectorAll("g.node"));
  const edges = Array.from(svg.querySelectorAll("g.edge"));
  const key = shapeKey(svg);
  let placed = layoutCache.get(key);
  if (!placed) {
    placed = await layOut(
      source,
      nodes.map((n) => [nodeName(n), boxOf(n).w, boxOf(n).h]),
      edges.map((e) => [e.dataset.tail, e.dataset.head]),
    );
    if (layoutCache.size > 50) layoutCache.clear();
    layoutCache.set(key, placed);
  }
  place(svg, nodes, edges, placed);
  return current();
}

function place(svg, nodes, edges, placed) {
  for (const n of nodes) {
    const b = boxOf(n), to = placed.nodes[nodeName(n)];
    if (!to) continue;
    const dx = to.x - b.x, dy = to.y - b.y;
    n.setAttribute("transform", `translate(${dx.toFixed(1)},${dy.toFixed(1)})`);
    n.setAttribute("data-box", `${to.x.toFixed(1)} ${to.y.toFixed(1)} ${b.w} ${b.h}`);
  }
  for (const e of edges) {
    const points = (placed.edges[`${e.dataset.tail}>${e.dataset.head}`] || []).map((p) => ({ ...p }));
    if (points.length < 2) continue;
    // End the line an arrowhead short of the box, so the arrow's tip touches it.
    const end = points[points.length - 1], before = points[points.length - 2];
    const len = Math.hypot(end.x - before.x, end.y - before.y) || 1;
    const cut = Math.min(ARROW, len * 0.9);
    const stop = { x: end.x - ((end.x - before.x) / len) * cut, y: end.y - ((end.y - before.y) / len) * cut };
    points[points.length - 1] = stop;
    e.querySelector("path").setAttribute("d", basisPath(points));
    e.querySelector("polygon").setAttribute("points", arrowhead(before, stop));
  }
  svg.setAttribute("data-engine", "dagre");
  svg.setAttribute("data-content", `0 0 ${placed.width.toFixed(1)} ${placed.height.toFixed(1)}`);
}

function placeFromCache(svg) {
  const placed = layoutCache.get(shapeKey(svg));
  if (!placed) return false;
  place(svg, Array.from(svg.querySelectorAll("g.node")), Array.from(svg.querySelectorAll("g.edge")), placed);
  return true;
}
