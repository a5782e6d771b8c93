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
  const scale = document.getElementById("lightbox-scale");

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
      const overlay = image.classList.contains("ov");
      caption.textContent = button.dataset.caption + (overlay ? " | " + image.alt : "");
      if (scale) {  // the atlas's pages share this script and carry their scale beside each gallery
        scale.hidden = !(overlay || image.classList.contains("heat"));  // the input photo has no colours to read
      }
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
