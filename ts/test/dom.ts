// A DOM for React tests: jsdom's window, with every global this Node process lacks copied over
// (document, navigator, HTMLElement, MutationObserver, …). Node's own fetch, AbortController,
// Event and friends stay, so the client talks to the server exactly as in the other tests.
// Imported first (before React and Testing Library, which look for `document` when loaded).
import { JSDOM } from "jsdom";

const { window } = new JSDOM("<!doctype html><html><body></body></html>", {
  url: "http://localhost/",
  pretendToBeVisual: true, // requestAnimationFrame
});

const source = window as unknown as Record<string, unknown>;
for (const key of Object.getOwnPropertyNames(window)) {
  if (key in globalThis) continue;
  // Read through the window (its accessors and methods expect it as `this`).
  const read = () => {
    const value = source[key];
    const isMethod = typeof value === "function" && /^[a-z]/.test(key);
    return isMethod ? (value as (...args: unknown[]) => unknown).bind(window) : value;
  };
  Object.defineProperty(globalThis, key, { get: read, configurable: true });
}
Object.defineProperty(globalThis, "window", { value: window, configurable: true });

// Tells React that updates are wrapped in act() (Testing Library does it), so it warns otherwise.
(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;
