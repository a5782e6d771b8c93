// The map-kind switch and the enlarged view of a map. No libraries, no network.
(function () {
  "use strict";
  const body = document.body;
  for (const radio of document.querySelectorAll('input[name="map-kind"]')) {
    radio.addEventListener("change", function () {
      if (radio.checked) {
        body.dataset.kind = radio.value;
      }
    });
  }

  const dialog = document.getElementById("lightbox");
  const large = document.getElementById("lightbox-image");
  const caption = document.getElementById("lightbox-caption");

  // The picture a zoom button shows now: its only image, or its overlay of the selected kind.
  function shownImage(button) {
    const overlay = button.querySelector('img.ov[data-k="' + body.dataset.kind + '"]');
    return overlay || button.querySelector("img:not(.ov)");
  }

  for (const button of document.querySelectorAll("button.zoom")) {
    button.addEventListener("click", function () {
      const image = shownImage(button);
      if (!image) {
        return;
      }
      large.src = image.src;
      large.alt = image.alt;
      caption.textContent = button.dataset.caption + (image.classList.contains("ov") ? " | " + image.alt : "");
      dialog.showModal();
    });
  }
  // A click on the backdrop (outside the picture) closes the view too; Escape closes it natively.
  dialog.addEventListener("click", function (event) {
    if (event.target === dialog) {
      dialog.close();
    }
  });
})();
