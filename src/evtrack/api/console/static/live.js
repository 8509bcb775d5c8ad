// Shared by the console's live pages: follow a Server-Sent Events stream, format numbers.
// EventSource reconnects by itself (resuming with Last-Event-ID); this reports its state.

export function follow(url, { names, onEvent, onState }) {
  const source = new EventSource(url);
  const state = (text) => onState && onState(text);
  source.addEventListener("open", () => state("live"));
  source.addEventListener("error", () =>
    state(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting"),
  );
  for (const name of names) {
    source.addEventListener(name, (message) => {
      let data;
      try {
        data = JSON.parse(message.data);
      } catch {
        return;
      }
      onEvent(name, data, message.lastEventId);
    });
  }
  return source;
}

const oneDecimal = new Intl.NumberFormat("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const whole = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

export function rate(value) {
  return value === null || value === undefined ? "—" : oneDecimal.format(value);
}

export function count(value) {
  return value === null || value === undefined ? "—" : whole.format(value);
}

// Build an element: h("td", { class: "num" }, "text", child, ...). Text is never parsed as HTML.
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function utc(ms) {
  if (ms === null || ms === undefined) return "";
  const moment = new Date(ms);
  const text = moment.toISOString().replace("T", " ").slice(0, 19) + " UTC";
  return h("time", { datetime: moment.toISOString() }, text);
}
