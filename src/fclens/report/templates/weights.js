// Filter the per-class table by class name or index. Rows are hidden, never rebuilt: 1000 stay fast.
(function () {
  "use strict";
  const input = document.getElementById("class-filter");
  const count = document.getElementById("class-count");
  const rows = Array.from(document.querySelectorAll("#class-table tbody tr"));
  const names = rows.map(function (row) { return row.dataset.search; });
  const indices = rows.map(function (row) { return row.dataset.index; });

  function apply() {
    const query = input.value.trim().toLowerCase();
    const numeric = /^\d+$/.test(query);
    let shown = 0;
    rows.forEach(function (row, i) {
      const hit = !query || names[i].includes(query) || (numeric && indices[i] === String(Number(query)));
      row.hidden = !hit;
      shown += hit ? 1 : 0;
    });
    count.textContent = query ? shown + " of " + rows.length + " classes" : rows.length + " classes";
  }
  input.addEventListener("input", apply);
  apply();
})();
