// nbflow DAG widget: shows the SVG kept in the `svg` trait; clicking a node sets `selected`.
// The SVG is drawn on the Python side (nbflow/widgets/svg.py); this file only displays it.

function legendItem(state, colors) {
  const item = document.createElement("span");
  item.className = "nbflow-legend-item";
  const swatch = document.createElement("span");
  swatch.className = "nbflow-swatch";
  swatch.style.background = colors[0];
  swatch.style.borderColor = colors[1];
  item.append(swatch, document.createTextNode(state.replace("_", " ")));
  return item;
}

function render({ model, el }) {
  el.classList.add("nbflow-dag");
  const head = document.createElement("div");
  head.className = "nbflow-dag-head";
  const title = document.createElement("span");
  title.className = "nbflow-dag-title";
  const legend = document.createElement("span");
  legend.className = "nbflow-legend";
  head.append(title, legend);
  const view = document.createElement("div");
  view.className = "nbflow-dag-view";
  const info = document.createElement("div");
  info.className = "nbflow-dag-info";
  const note = document.createElement("div");
  note.className = "nbflow-note";
  el.append(head, view, info, note);

  const drawSvg = () => {
    view.innerHTML = model.get("svg");
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

  const onClick = (event) => {
    const node = event.target.closest("g.node");
    if (!node || !view.contains(node)) return;
    model.set("selected", node.getAttribute("data-step"));
    model.save_changes();
  };
  view.addEventListener("click", onClick);

  const handlers = [
    ["change:svg", drawSvg],
    ["change:title", drawTitle],
    ["change:palette", drawLegend],
    ["change:selected change:details", drawInfo],
    ["change:note", drawNote],
  ];
  for (const [name, fn] of handlers) model.on(name, fn);
  drawSvg();
  drawTitle();
  drawLegend();
  drawInfo();
  drawNote();
  return () => {
    view.removeEventListener("click", onClick);
    for (const [name, fn] of handlers) model.off(name, fn);
  };
}

export default { render };
