// Live charts for the console, drawn as SVG polylines (no chart library): each series keeps the readings
// of the last WINDOW_SECONDS; totals (counters) are charted as rates between two readings.
const WINDOW_SECONDS = 300;
const MIN_SPAN_SECONDS = 20;
const SVG = "http://www.w3.org/2000/svg";

// name, caption, unit, how a value is made from the previous reading `a` and this one `b`
export const CHARTS = [
  ["connections", "Connections", "", (a, b) => b.values.connections],
  ["messages_in", "Messages in", "/s", (a, b) => rate(a, b, "messages_in")],
  ["messages_out", "Messages out", "/s", (a, b) => rate(a, b, "messages_out")],
  ["bridge_lag", "Bridge lag", " msgs", (a, b) => b.values.bridge_lag],
  ["bridge_stored", "Stored by the bridge", " total", (a, b) => b.values.bridge_stored],
  ["bridge_rejected", "Rejected by the bridge", " total", (a, b) => b.values.bridge_rejected],
  ["api_latency", "API latency", " ms", (a, b) => latency(a, b)],
];

function rate(a, b, key) {
  if (!a || a.values[key] == null || b.values[key] == null || b.at <= a.at) return null;
  return Math.max(0, b.values[key] - a.values[key]) / (b.at - a.at);
}

function latency(a, b) {
  if (!a || b.values.api_requests == null || a.values.api_requests == null) return null;
  const count = b.values.api_requests - a.values.api_requests;
  return count > 0 ? ((b.values.api_seconds - a.values.api_seconds) / count) * 1000 : 0;
}

export class Charts {
  constructor(container) {
    this.previous = null;
    this.points = new Map(CHARTS.map(([name]) => [name, []]));
    this.figures = new Map();
    for (const [name, caption] of CHARTS) {
      const line = document.createElementNS(SVG, "polyline");
      const svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("viewBox", `0 0 ${WINDOW_SECONDS} 100`);
      svg.setAttribute("preserveAspectRatio", "none");
      svg.setAttribute("role", "img");
      svg.setAttribute("aria-label", `${caption} over the last ${WINDOW_SECONDS / 60} minutes`);
      svg.append(line);
      const value = document.createElement("span");
      value.className = "value";
      const figcaption = document.createElement("figcaption");
      figcaption.append(caption, value);
      const figure = document.createElement("figure");
      figure.dataset.chart = name;
      figure.append(figcaption, svg);
      container.append(figure);
      this.figures.set(name, { line, value });
    }
  }

  add(reading) {
    for (const [name, , unit, make] of CHARTS) {
      const value = make(this.previous, reading);
      if (value == null) continue;
      const points = this.points.get(name);
      points.push([reading.at, value]);
      while (points.length && points[0][0] < reading.at - WINDOW_SECONDS) points.shift();
      const { line, value: label } = this.figures.get(name);
      const top = Math.max(1, ...points.map(([, v]) => v)) * 1.1;
      // The x axis spans the readings kept (at least MIN_SPAN_SECONDS), so a new console is not a sliver.
      const span = Math.max(MIN_SPAN_SECONDS, reading.at - points[0][0]);
      const x = (t) => (((t - reading.at + span) / span) * WINDOW_SECONDS).toFixed(1);
      line.setAttribute("points", points.map(([t, v]) => `${x(t)},${(100 - (v / top) * 100).toFixed(1)}`).join(" "));
      line.dataset.count = String(points.length);
      label.textContent = `${Number.isInteger(value) ? value : value.toFixed(1)}${unit}`;
    }
    this.previous = reading;
  }
}
