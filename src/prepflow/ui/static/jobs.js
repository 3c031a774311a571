// The jobs table: requests /api/jobs again every POLL_MS, so new and changing jobs show up
// without a reload. The status filter is kept in the page's query string.
"use strict";

(() => {
  const { el, count, seconds, time, fetchJson, showError, POLL_MS } = prepflow;
  const filter = document.getElementById("status-filter");
  const body = document.querySelector("#jobs tbody");
  const updated = document.getElementById("updated");
  let timer = null;

  function inputText(inputs) {
    if (inputs.length === 0) return "";
    return inputs.length > 1 ? `${inputs[0]} (+${inputs.length - 1})` : inputs[0];
  }

  function row(job) {
    const link = el("a", { href: `/jobs/${encodeURIComponent(job.job_name)}` }, job.job_name);
    return el(
      "tr",
      { "data-job": job.job_name, "data-status": job.status },
      el("td", {}, link),
      el("td", { class: `status status-${job.status}` }, job.status),
      el("td", { class: "input" }, inputText(job.inputs)),
      el("td", {}, time(job.started_at || job.created_at)),
      el("td", { class: "num" }, seconds(job.duration_s)),
      el("td", { class: "num" }, count(job.rows_in)),
      el("td", { class: "num" }, count(job.rows_out)),
      el("td", { class: "num" }, count(job.rows_rejected)),
    );
  }

  async function refresh() {
    const status = filter.value;
    const query = status ? `?status=${encodeURIComponent(status)}` : "";
    try {
      const jobs = await fetchJson(`/api/jobs${query}`);
      const rows = jobs.map(row);
      if (rows.length === 0) {
        rows.push(el("tr", { class: "empty" }, el("td", { colspan: 8 }, "No jobs.")));
      }
      body.replaceChildren(...rows);
      updated.textContent = `${jobs.length} shown, updated ${new Date().toLocaleTimeString("sv-SE")}`;
      showError(null);
    } catch (error) {
      showError(error);
    }
    timer = setTimeout(refresh, POLL_MS);
  }

  filter.value = new URLSearchParams(location.search).get("status") || "";
  filter.addEventListener("change", () => {
    const url = new URL(location.href);
    if (filter.value) url.searchParams.set("status", filter.value);
    else url.searchParams.delete("status");
    history.replaceState(null, "", url);
    clearTimeout(timer);
    refresh();
  });
  refresh();
})();
