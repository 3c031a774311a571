// Helpers shared by the dashboard's pages. Values from jobs are user data: they reach the
// page through textContent and attributes only, never as HTML.
"use strict";

const prepflow = (() => {
  // Milliseconds between two requests for changes while a job may still change.
  const POLL_MS = 2000;
  const TERMINAL = new Set(["Completed", "Failed", "Stopped"]);

  async function fetchJson(url) {
    const response = await fetch(url, { cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(body.error || `${url} returned HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  // Create an element; string children become text nodes.
  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value !== null && value !== undefined) node.setAttribute(name, String(value));
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // The dashboard's download URL of an S3 URI (s3://bucket/key).
  function fileUrl(uri) {
    const [bucket, ...key] = uri.replace(/^s3:\/\//, "").split("/");
    return `/files/${encodeURIComponent(bucket)}/${key.map(encodeURIComponent).join("/")}`;
  }

  // A download link labelled with the object's file name; the whole URI is its tooltip.
  function fileLink(uri) {
    const name = uri.replace(/\/+$/, "").split("/").pop();
    return el("a", { href: fileUrl(uri), download: "", title: uri }, name);
  }

  function count(value) {
    return value === null || value === undefined ? "-" : value.toLocaleString("en");
  }

  function seconds(value) {
    return value === null || value === undefined ? "-" : `${value.toFixed(2)} s`;
  }

  function time(iso) {
    if (!iso) return "-";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : date.toLocaleString("sv-SE");
  }

  function showError(error) {
    const box = document.getElementById("error");
    box.hidden = error === null;
    box.textContent = error === null ? "" : `Cannot load the data: ${error.message}`;
  }

  return { POLL_MS, TERMINAL, fetchJson, el, fileUrl, fileLink, count, seconds, time, showError };
})();
