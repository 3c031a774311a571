// Bar charts of a data-quality report, drawn as inline SVG. Each bar is a rect of class
// "bar" with data-label and data-value holding the number it shows, so it can be checked.
"use strict";

const charts = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  // Layout of a horizontal bar chart, in SVG user units.
  const WIDTH = 480;
  const LABEL_WIDTH = 150;
  const VALUE_WIDTH = 70;
  const ROW_HEIGHT = 20;
  const BAR_HEIGHT = 14;
  const MAX_LABEL_CHARS = 26;
  // Layout of a histogram.
  const HISTOGRAM_WIDTH = 300;
  const HISTOGRAM_HEIGHT = 120;
  const AXIS_HEIGHT = 16;

  function svg(tag, attributes = {}, text = null) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    if (text !== null) node.textContent = text;
    return node;
  }

  function shorten(text) {
    const value = String(text);
    return value.length > MAX_LABEL_CHARS ? `${value.slice(0, MAX_LABEL_CHARS - 1)}\u2026` : value;
  }

  function figure(title, chart) {
    const box = document.createElement("figure");
    const caption = document.createElement("figcaption");
    caption.textContent = title;
    box.append(caption, chart);
    return box;
  }

  // One horizontal bar per item: [{label, value, kind}], value a count (null shows as "-").
  function barChart(name, title, items) {
    const height = Math.max(items.length, 1) * ROW_HEIGHT + 4;
    const chart = svg("svg", {
      class: "chart",
      "data-chart": name,
      viewBox: `0 0 ${WIDTH} ${height}`,
      width: WIDTH,
      height,
      role: "img",
      "aria-label": title,
    });
    const highest = Math.max(1, ...items.map((item) => item.value || 0));
    const span = WIDTH - LABEL_WIDTH - VALUE_WIDTH;
    items.forEach((item, index) => {
      const y = index * ROW_HEIGHT + 2;
      const value = item.value ?? 0;
      const width = (value / highest) * span;
      chart.append(
        svg("text", { x: LABEL_WIDTH - 6, y: y + BAR_HEIGHT - 3, "text-anchor": "end" },
          shorten(item.label)),
        svg("rect", { class: "track", x: LABEL_WIDTH, y, width: span, height: BAR_HEIGHT }),
      );
      const bar = svg("rect", {
        class: `bar ${item.kind || ""}`.trim(),
        x: LABEL_WIDTH,
        y,
        width: width.toFixed(2),
        height: BAR_HEIGHT,
        "data-label": item.label,
        "data-value": item.value ?? "",
      });
      bar.append(svg("title", {}, `${item.label}: ${prepflow.count(item.value)}`));
      chart.append(
        bar,
        svg("text", { x: LABEL_WIDTH + span + 6, y: y + BAR_HEIGHT - 3 },
          prepflow.count(item.value)),
      );
    });
    return figure(title, chart);
  }

  // Vertical bars of a column's histogram: edges has one more entry than counts.
  function histogram(name, title, edges, counts) {
    const chart = svg("svg", {
      class: "chart",
      "data-chart": name,
      viewBox: `0 0 ${HISTOGRAM_WIDTH} ${HISTOGRAM_HEIGHT + AXIS_HEIGHT}`,
      width: HISTOGRAM_WIDTH,
      height: HISTOGRAM_HEIGHT + AXIS_HEIGHT,
      role: "img",
      "aria-label": title,
    });
    const highest = Math.max(1, ...counts);
    const step = HISTOGRAM_WIDTH / Math.max(counts.length, 1);
    counts.forEach((value, index) => {
      const height = (value / highest) * (HISTOGRAM_HEIGHT - 4);
      const label = `${formatEdge(edges[index])} to ${formatEdge(edges[index + 1])}`;
      const bar = svg("rect", {
        class: "bar",
        x: (index * step + 0.5).toFixed(2),
        y: (HISTOGRAM_HEIGHT - height).toFixed(2),
        width: Math.max(step - 1, 0.5).toFixed(2),
        height: height.toFixed(2),
        "data-label": label,
        "data-value": value,
      });
      bar.append(svg("title", {}, `${label}: ${prepflow.count(value)}`));
      chart.append(bar);
    });
    const axisY = HISTOGRAM_HEIGHT + AXIS_HEIGHT - 4;
    chart.append(
      svg("text", { x: 0, y: axisY }, formatEdge(edges[0])),
      svg("text", { x: HISTOGRAM_WIDTH, y: axisY, "text-anchor": "end" },
        formatEdge(edges[edges.length - 1])),
    );
    return figure(title, chart);
  }

  function formatEdge(value) {
    return typeof value === "number" ? Number(value.toPrecision(4)).toLocaleString("en") : "-";
  }

  return { barChart, histogram };
})();
