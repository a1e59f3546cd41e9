// nbflow table widget: one page of rows, kept on the Python side; clicking a row sets
// `selected`, the pager sets `page`. Rows: {key, cells, status, depth, dim}.

function badge(text) {
  const span = document.createElement("span");
  span.className = `nbflow-badge status-${text}`;
  span.textContent = text;
  return span;
}

function render({ model, el }) {
  el.classList.add("nbflow-table-box");
  const caption = document.createElement("div");
  caption.className = "nbflow-caption";
  const wrap = document.createElement("div");
  wrap.className = "nbflow-table-wrap";
  const pager = document.createElement("div");
  pager.className = "nbflow-pager";
  const prev = document.createElement("button");
  prev.textContent = "‹ newer";
  prev.className = "nbflow-prev";
  const next = document.createElement("button");
  next.textContent = "older ›";
  next.className = "nbflow-next";
  const where = document.createElement("span");
  pager.append(prev, where, next);
  el.append(caption, wrap, pager);

  const draw = () => {
    caption.textContent = model.get("caption");
    caption.style.display = model.get("caption") ? "" : "none";
    const columns = model.get("columns");
    const statusColumn = model.get("status_column");
    const selectable = model.get("selectable");
    const table = document.createElement("table");
    table.className = "nbflow-table" + (selectable ? " selectable" : "");
    const headRow = table.createTHead().insertRow();
    for (const label of columns) {
      const th = document.createElement("th");
      th.textContent = label;
      headRow.append(th);
    }
    const body = table.createTBody();
    const rows = model.get("rows");
    if (rows.length === 0) {
      const td = body.insertRow().insertCell();
      td.colSpan = Math.max(columns.length, 1);
      td.className = "empty";
      td.textContent = model.get("empty_text");
    }
    for (const row of rows) {
      const tr = body.insertRow();
      tr.dataset.key = row.key;
      if (row.key === model.get("selected")) tr.classList.add("selected");
      if (row.dim) tr.classList.add("dim");
      row.cells.forEach((text, i) => {
        const td = tr.insertCell();
        if (i === statusColumn && text) td.append(badge(text));
        else if (row.link && i === row.cells.length - 1 && text.includes(row.link)) {
          // The run id in the text becomes a link that selects that run.
          const at = text.indexOf(row.link);
          const a = document.createElement("a");
          a.href = "#";
          a.className = "nbflow-run-link";
          a.dataset.link = row.link;
          a.textContent = row.link;
          td.append(text.slice(0, at), a, text.slice(at + row.link.length));
        } else {
          // In a span: a table cell ignores max-width, an inline block does not.
          const span = document.createElement("span");
          span.className = "nbflow-cell";
          span.textContent = text;
          td.append(span);
        }
        if (i === 0 && row.depth) td.style.paddingLeft = `${8 + 16 * row.depth}px`;
        td.title = text;
      });
    }
    wrap.replaceChildren(table);
    const page = model.get("page");
    const pages = model.get("pages");
    pager.style.display = pages > 1 ? "" : "none";
    prev.disabled = page <= 0;
    next.disabled = page >= pages - 1;
    where.textContent = model.get("page_text");
    const [back, forward] = model.get("pager_labels");
    prev.textContent = back;
    next.textContent = forward;
  };

  const onRow = (event) => {
    const link = event.target.closest("a.nbflow-run-link");
    if (link) {
      event.preventDefault();
      model.send({ event: "link", link: link.dataset.link });
      return;
    }
    if (!model.get("selectable")) return;
    const tr = event.target.closest("tbody tr");
    if (!tr || !tr.dataset.key) return;
    model.set("selected", tr.dataset.key);
    model.save_changes();
  };
  const turn = (delta) => () => {
    const page = model.get("page") + delta;
    if (page < 0 || page >= model.get("pages")) return;
    model.set("page", page);
    model.save_changes();
  };
  const onPrev = turn(-1);
  const onNext = turn(1);
  wrap.addEventListener("click", onRow);
  prev.addEventListener("click", onPrev);
  next.addEventListener("click", onNext);
  const names =
    "change:rows change:columns change:selected change:page change:pages " +
    "change:caption change:page_text change:selectable change:status_column " +
    "change:pager_labels";
  model.on(names, draw);
  draw();
  return () => {
    model.off(names, draw);
    wrap.removeEventListener("click", onRow);
    prev.removeEventListener("click", onPrev);
    next.removeEventListener("click", onNext);
  };
}

export default { render };
