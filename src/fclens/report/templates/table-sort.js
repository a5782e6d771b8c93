// Sort a table by a column when its title is clicked (again: the other way). Rows are moved, never rebuilt.
(function () {
  "use strict";
  for (const table of document.querySelectorAll("table.sortable")) {
    const body = table.tBodies[0];
    const headers = Array.from(table.tHead.rows[table.tHead.rows.length - 1].cells);
    headers.forEach(function (header, column) {
      const button = header.querySelector("button");
      if (!button) {
        return;
      }
      button.addEventListener("click", function () {
        const ascending = header.getAttribute("aria-sort") !== "ascending";
        headers.forEach(function (other) { other.removeAttribute("aria-sort"); });
        header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        const numeric = header.dataset.type === "number";
        const key = function (row) {
          const cell = row.cells[column];
          const value = cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent.trim();
          return numeric ? (value === "" ? NaN : Number(value)) : value.toLowerCase();
        };
        const rows = Array.from(body.rows);
        rows.sort(function (a, b) {
          const x = key(a);
          const y = key(b);
          if (numeric && (isNaN(x) || isNaN(y))) {
            return isNaN(x) - isNaN(y); // missing values last, either way
          }
          const order = x < y ? -1 : x > y ? 1 : 0;
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
        table.dispatchEvent(new Event("sorted")); // a paged table shows its first page again
      });
    });
  }
})();
