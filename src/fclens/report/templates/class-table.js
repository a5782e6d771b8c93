// The class table (#class-table) of the weights page and the atlas index: filtered by class name or
// index, and shown a page of rows at a time (its data-page-size), so that 1,000 rows do not bury what
// follows. Rows are hidden, never rebuilt; a sort (table-sort.js, which fires "sorted") re-pages.
(function () {
  "use strict";
  const table = document.getElementById("class-table");
  if (!table) {
    return;
  }
  const input = document.getElementById("class-filter");
  const count = document.getElementById("class-count");
  const pager = document.getElementById("class-pager");
  const size = Number(table.dataset.pageSize) || Infinity;
  let page = 0;

  function matches(row, query) {
    if (!query) {
      return true;
    }
    return row.dataset.search.includes(query) || (/^\d+$/.test(query) && row.dataset.index === String(Number(query)));
  }

  function apply() {
    const rows = Array.from(table.tBodies[0].rows); // in their current (sorted) order
    const query = input.value.trim().toLowerCase();
    const hits = rows.filter(function (row) { return matches(row, query); });
    const pages = Math.max(1, Math.ceil(hits.length / size));
    page = Math.min(page, pages - 1);
    const first = page * size;
    const last = Math.min(first + size, hits.length);
    rows.forEach(function (row) { row.hidden = true; });
    hits.slice(first, last).forEach(function (row) { row.hidden = false; });
    count.textContent = query ? hits.length + " of " + rows.length + " classes" : rows.length + " classes";
    if (pager) {
      pager.hidden = pages === 1;
      pager.querySelector(".pager-status").textContent =
        "rows " + (hits.length ? first + 1 : 0) + "–" + last + " of " + hits.length + " · page " + (page + 1) + " of " + pages;
      pager.querySelector(".pager-previous").disabled = page === 0;
      pager.querySelector(".pager-next").disabled = page === pages - 1;
    }
  }

  input.addEventListener("input", function () { page = 0; apply(); });
  table.addEventListener("sorted", function () { page = 0; apply(); });
  if (pager) {
    pager.querySelector(".pager-previous").addEventListener("click", function () { page -= 1; apply(); });
    pager.querySelector(".pager-next").addEventListener("click", function () { page += 1; apply(); });
  }
  apply();
})();
