// a11y.js: a small accessibility check of the page it is evaluated in,
// written for the status pages' browser tests (test/web). It is one
// expression; its value is the list of violations found, each a string
// "rule: element: what is wrong" (none: an empty list).
//
// It checks what WCAG 2.2 level AA asks of a server-rendered page and a
// reader can verify without a screen reader:
//   html-lang         <html lang> is set (3.1.1)
//   title             the document has a title (2.4.2)
//   one-h1            exactly one h1 (the page's subject)
//   heading-order     no heading skips a level (h2 after h1, never h3)
//   heading-empty     every heading has text
//   landmark-*        banner, navigation, main and contentinfo exist
//                     (1.3.1, 2.4.1); every navigation has a label
//   table-caption     every data table has a non-empty caption
//   th-scope          every th has scope row|col|rowgroup|colgroup
//   label             every form control has a label (3.3.2, 4.1.2)
//   button-name       every button has a name
//   svg-img           every svg (not aria-hidden) has role="img" and a
//                     name: title, aria-label or aria-labelledby (1.1.1)
//   img-alt           every img has an alt attribute (1.1.1)
//   link-name         every link has a name (2.4.4)
//   labelledby        aria-labelledby points at elements that exist
//   contrast          every visible text has a contrast of at least 4.5:1
//                     with the background behind it (1.4.3), computed
//                     from getComputedStyle: the text colour (an SVG
//                     text's fill) over the nearest backgrounds of its
//                     ancestors, composited until an opaque one (the
//                     canvas is white); a background image or gradient
//                     behind text is reported, as it cannot be computed.
(() => {
  const problems = [];
  const maxProblems = 200;

  // describe names an element for a message: tag, id or classes, and the
  // start of its text.
  const describe = (el) => {
    if (!el || !el.tagName) return "document";
    let s = el.tagName.toLowerCase();
    if (el.id) s += "#" + el.id;
    else if (el.classList && el.classList.length) s += "." + Array.from(el.classList).join(".");
    const text = (el.textContent || "").trim().replace(/\s+/g, " ");
    if (text) s += ' "' + (text.length > 40 ? text.slice(0, 40) + "…" : text) + '"';
    return s;
  };
  const add = (rule, el, what) => {
    if (problems.length < maxProblems) problems.push(rule + ": " + describe(el) + ": " + what);
  };
  const text = (el) => (el && el.textContent ? el.textContent.trim() : "");
  // labelledbyText is the text of the elements aria-labelledby names, or
  // null when it names an element that does not exist.
  const labelledbyText = (el) => {
    const ids = (el.getAttribute("aria-labelledby") || "").trim().split(/\s+/).filter(Boolean);
    let out = "";
    for (const id of ids) {
      const target = document.getElementById(id);
      if (!target) return null;
      out += " " + text(target);
    }
    return out.trim();
  };
  // ariaName is the name an element's aria-label or aria-labelledby give.
  const ariaName = (el) => {
    const label = (el.getAttribute("aria-label") || "").trim();
    if (label) return label;
    if (el.hasAttribute("aria-labelledby")) return labelledbyText(el) || "";
    return "";
  };
  const hiddenFromAll = (el) => el.closest("[hidden], [aria-hidden='true']") !== null;

  // The document.
  const lang = (document.documentElement.getAttribute("lang") || "").trim();
  if (!lang) add("html-lang", document.documentElement, "<html> has no lang attribute");
  if (!document.title.trim()) add("title", document.documentElement, "the document has no <title>");

  // Headings.
  const headings = Array.from(document.querySelectorAll("h1, h2, h3, h4, h5, h6"));
  const h1s = headings.filter((h) => h.tagName === "H1");
  if (h1s.length !== 1) add("one-h1", document.body, h1s.length + " h1 elements, want exactly 1");
  let previous = 0;
  for (const h of headings) {
    const level = Number(h.tagName[1]);
    if (level > previous + 1) add("heading-order", h, "h" + level + " follows " + (previous ? "h" + previous : "the start of the page"));
    previous = level;
    if (!text(h) && !ariaName(h)) add("heading-empty", h, "the heading has no text");
  }

  // Landmarks. A header or footer inside a sectioning element is no
  // banner or contentinfo.
  const sectioning = "article, aside, main, nav, section";
  const topLevel = (selector) => Array.from(document.querySelectorAll(selector)).filter((e) => !e.parentElement.closest(sectioning));
  if (topLevel("header").length + document.querySelectorAll("[role='banner']").length === 0)
    add("landmark-banner", document.body, "no banner landmark (a <header> outside article, aside, main, nav and section)");
  const navs = Array.from(document.querySelectorAll("nav, [role='navigation']"));
  if (navs.length === 0) add("landmark-navigation", document.body, "no navigation landmark (<nav>)");
  for (const nav of navs) {
    if (!ariaName(nav)) add("landmark-navigation-label", nav, "the navigation has no aria-label or aria-labelledby");
  }
  const mains = document.querySelectorAll("main, [role='main']");
  if (mains.length !== 1) add("landmark-main", document.body, mains.length + " main landmarks, want exactly 1");
  if (topLevel("footer").length + document.querySelectorAll("[role='contentinfo']").length === 0)
    add("landmark-contentinfo", document.body, "no contentinfo landmark (a <footer> outside article, aside, main, nav and section)");

  // Tables.
  for (const table of document.querySelectorAll("table")) {
    const role = table.getAttribute("role");
    if (role === "presentation" || role === "none") continue;
    const caption = table.querySelector(":scope > caption");
    if (!caption || !text(caption)) add("table-caption", table, "the table has no caption");
    for (const th of table.querySelectorAll("th")) {
      const scope = (th.getAttribute("scope") || "").toLowerCase();
      if (!["row", "col", "rowgroup", "colgroup"].includes(scope)) add("th-scope", th, "the th has no scope (row or col)");
    }
  }

  // Form controls and buttons.
  for (const el of document.querySelectorAll("input, select, textarea")) {
    const type = (el.getAttribute("type") || "").toLowerCase();
    if (type === "hidden") continue;
    if (["submit", "reset", "button"].includes(type)) {
      if (!(el.value || "").trim() && !ariaName(el)) add("button-name", el, "the button has no value or aria-label");
      continue;
    }
    if (type === "image") {
      if (!(el.getAttribute("alt") || "").trim() && !ariaName(el)) add("button-name", el, "the image button has no alt");
      continue;
    }
    const labelled = Array.from(el.labels || []).some((l) => text(l)) || ariaName(el);
    if (!labelled) add("label", el, "the " + (type || el.tagName.toLowerCase()) + " control has no label");
  }
  for (const b of document.querySelectorAll("button")) {
    if (!text(b) && !ariaName(b) && !b.querySelector("img[alt]:not([alt=''])")) add("button-name", b, "the button has no text or aria-label");
  }

  // Images and charts.
  for (const svg of document.querySelectorAll("svg")) {
    if (svg.parentElement && svg.parentElement.closest("svg")) continue;
    if (hiddenFromAll(svg)) continue;
    if (svg.getAttribute("role") !== "img") add("svg-img", svg, 'the svg has no role="img"');
    const title = svg.querySelector(":scope > title");
    if (!text(title) && !ariaName(svg)) add("svg-img", svg, "the svg has no accessible name (title, aria-label or aria-labelledby)");
  }
  for (const img of document.querySelectorAll("img")) {
    if (!img.hasAttribute("alt")) add("img-alt", img, "the img has no alt attribute");
  }

  // Links.
  for (const a of document.querySelectorAll("a[href]")) {
    if (hiddenFromAll(a)) continue;
    const imgAlt = Array.from(a.querySelectorAll("img[alt]"), (i) => i.getAttribute("alt").trim()).join("");
    const svgName = Array.from(a.querySelectorAll("svg"), (s) => ariaName(s) || text(s.querySelector(":scope > title"))).join("");
    if (!text(a) && !ariaName(a) && !imgAlt && !svgName && !(a.getAttribute("title") || "").trim())
      add("link-name", a, "the link (" + a.getAttribute("href") + ") has no text");
  }

  for (const el of document.querySelectorAll("[aria-labelledby]")) {
    if (labelledbyText(el) === null) add("labelledby", el, "aria-labelledby names an element that does not exist");
  }

  // Contrast. Colours are read through a canvas, which understands every
  // CSS colour syntax a computed style can hold.
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 1;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const rgba = (css) => {
    const m = /^rgba?\(\s*([\d.]+)[,\s]+([\d.]+)[,\s]+([\d.]+)(?:\s*[,/]\s*([\d.]+%?))?\s*\)$/.exec(css);
    if (m) {
      let a = m[4] === undefined ? 1 : m[4].endsWith("%") ? parseFloat(m[4]) / 100 : parseFloat(m[4]);
      return [Number(m[1]), Number(m[2]), Number(m[3]), a];
    }
    ctx.clearRect(0, 0, 1, 1);
    ctx.fillStyle = "rgba(0, 0, 0, 0)";
    ctx.fillStyle = css;
    ctx.fillRect(0, 0, 1, 1);
    const d = ctx.getImageData(0, 0, 1, 1).data;
    return [d[0], d[1], d[2], d[3] / 255];
  };
  // over composites colour c (with alpha) over the opaque colour bg.
  const over = (c, bg) => [0, 1, 2].map((i) => c[i] * c[3] + bg[i] * (1 - c[3])).concat([1]);
  const luminance = (c) => {
    const [r, g, b] = c.slice(0, 3).map((v) => {
      v /= 255;
      return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const ratio = (a, b) => {
    const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  };
  const css = (c) => "rgb(" + c.slice(0, 3).map(Math.round).join(", ") + ")";
  // background returns the opaque colour behind el, or a string saying
  // why it cannot be known.
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const cs = getComputedStyle(e);
      if (cs.backgroundImage && cs.backgroundImage !== "none") return "a background image (" + cs.backgroundImage.slice(0, 40) + ") on " + describe(e);
      const c = rgba(cs.backgroundColor);
      if (c[3] > 0) {
        layers.push(c);
        if (c[3] >= 1) break;
      }
    }
    let bg = [255, 255, 255, 1]; // the canvas
    for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i], bg);
    return bg;
  };
  const skip = new Set(["SCRIPT", "STYLE", "NOSCRIPT", "TEMPLATE", "TITLE", "HEAD", "OPTION"]);
  const walker = document.createTreeWalker(document.body || document.documentElement, NodeFilter.SHOW_ELEMENT);
  for (let el = walker.currentNode; el; el = walker.nextNode()) {
    if (skip.has(el.tagName.toUpperCase())) continue;
    const isSVG = el instanceof SVGElement;
    if (isSVG && !["text", "tspan", "textPath"].includes(el.tagName)) continue;
    const ownText = Array.from(el.childNodes).some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
    if (!ownText) continue;
    if (el.checkVisibility && !el.checkVisibility({ visibilityProperty: true, opacityProperty: true })) continue;
    const box = el.getBoundingClientRect();
    if (box.width <= 1 || box.height <= 1) continue; // visually hidden text for screen readers
    const cs = getComputedStyle(el);
    const fg = rgba(isSVG ? cs.fill : cs.color);
    const bg = background(el);
    if (typeof bg === "string") {
      add("contrast", el, "cannot compute the contrast: the text is over " + bg);
      continue;
    }
    const shown = over(fg, bg);
    const r = ratio(shown, bg);
    if (r < 4.5) add("contrast", el, "contrast " + r.toFixed(2) + ":1 (" + css(shown) + " on " + css(bg) + "), want at least 4.5:1");
  }
  if (problems.length >= maxProblems) problems.push("(stopped after " + maxProblems + " violations)");
  return problems;
})()
