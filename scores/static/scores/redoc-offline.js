// Loaded by /redoc before Redoc (scores/templates/scores/redoc.html).
// Redoc 2 draws Redocly's logo from cdn.redoc.ly under its menu, whatever its options say, so
// the page would ask another origin for an image (which its Content-Security-Policy refuses,
// as a reported violation). An image given an address there gets an empty data: URL instead,
// which Redoc's logo takes as a failed load: it draws nothing, and nothing leaves the service.
"use strict";
(() => {
  const elsewhere = "https://cdn.redoc.ly/";
  const local = (value) => (String(value).startsWith(elsewhere) ? "data:," : value);
  const setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function (name, value) {
    const image = this instanceof HTMLImageElement && name.toLowerCase() === "src";
    return setAttribute.call(this, name, image ? local(value) : value);
  };
  const src = Object.getOwnPropertyDescriptor(HTMLImageElement.prototype, "src");
  Object.defineProperty(HTMLImageElement.prototype, "src", {
    ...src,
    set(value) {
      src.set.call(this, local(value));
    },
  });
})();
