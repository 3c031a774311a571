// One job's page: summary, outputs, report charts, rejected rows, logs and job spec. While
// the job has not ended, everything is fetched again every POLL_MS.
"use strict";

(() => {
  const { el, count, seconds, time, fetchJson, fileLink, showError, POLL_MS, TERMINAL } = prepflow;
  const jobName = decodeURIComponent(location.pathname.replace(/^\/jobs\//, ""));
  document.getElementById("job-name").textContent = jobName;
  document.title = `${jobName} - prepflow`;
  const api = `/api/jobs/${encodeURIComponent(jobName)}`;

  function showSummary(job) {
    const rows = [
      ["Status", job.status],
      ["Duration", seconds(job.duration_s)],
      ["Created", time(job.created_at)],
      ["Started", time(job.started_at)],
      ["Ended", time(job.ended_at)],
      ["Rows in", count(job.rows_in)],
      ["Rows out", count(job.rows_out)],
      ["Rows rejected", count(job.rows_rejected)],
      ["Inputs", job.inputs.join("\n") || "-"],
    ];
    if (job.failure_reason) rows.push(["Failure reason", job.failure_reason]);
    if (job.waiting_reason && !TERMINAL.has(job.status)) rows.push(["Waiting", job.waiting_reason]);
    const items = rows.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]);
    // items[1] is the value of the first row, the status.
    items[1].classList.add("status", `status-${job.status}`);
    items[1].id = "job-status";
    document.getElementById("summary").replaceChildren(...items);
    document.getElementById("spec").textContent = JSON.stringify(job.request, null, 2);
  }

  function showOutputs(job) {
    const files = [...job.outputs];
    for (const side of [job.rejected, job.report, job.artifacts]) {
      if (side && !side.uri.endsWith("/")) files.push(side.uri);
    }
    const list = document.getElementById("outputs");
    // Full URIs here, because outputs share file names (train.parquet in every job).
    const item = (uri) => el("li", {}, el("a", { href: prepflow.fileUrl(uri), download: "" }, uri));
    if (files.length === 0) {
      const why = TERMINAL.has(job.status)
        ? "None: outputs are uploaded only when a job completes."
        : "None yet: outputs are uploaded when the job completes.";
      list.replaceChildren(el("li", { class: "muted" }, why));
      return;
    }
    list.replaceChildren(...files.map(item));
  }

  function reportCharts(report, suffix) {
    const rows = report.rows || {};
    const columns = Array.isArray(report.columns) ? report.columns : [];
    const reasons = Object.entries((report.rejected || {}).by_reason || {});
    const parts = [
      charts.barChart(`rows${suffix}`, "Rows", [
        { label: "in", value: rows.in },
        { label: "out", value: rows.out },
        { label: "rejected", value: rows.rejected, kind: "rejected" },
        { label: "removed by steps", value: rows.removed, kind: "removed" },
      ]),
      charts.barChart(
        `missing${suffix}`,
        "Missing values per column, before cleaning",
        columns.map((column) => ({ label: column.name, value: column.missing_before })),
      ),
    ];
    if (reasons.length > 0) {
      parts.push(charts.barChart(
        `reasons${suffix}`,
        "Rejected rows by reason",
        reasons.map(([reason, value]) => ({ label: reason, value, kind: "rejected" })),
      ));
    }
    const histograms = columns.filter((column) => {
      const histogram = column.histogram || {};
      return Array.isArray(histogram.counts) && Array.isArray(histogram.edges) &&
        histogram.edges.length === histogram.counts.length + 1;
    });
    const grid = el("div", { class: "charts" }, ...histograms.map((column) =>
      charts.histogram(`histogram${suffix}`, `${column.name} (after cleaning)`,
        column.histogram.edges, column.histogram.counts)));
    return [el("div", { class: "charts" }, ...parts), grid];
  }

  function showReports(reports) {
    if (reports.length === 0) return;
    const blocks = reports.flatMap((entry) => {
      const suffix = entry.host ? `-${entry.host}` : "";
      const heading = entry.host ? [el("h3", {}, `Host ${entry.host}`)] : [];
      const links = el("p", {}, "Download: ", fileLink(entry.html_uri), " ", fileLink(entry.uri));
      return [...heading, links, ...reportCharts(entry.report, suffix)];
    });
    document.getElementById("reports").replaceChildren(...blocks);
  }

  function showRejected(sample) {
    const note = document.getElementById("rejected-note");
    const table = document.getElementById("rejected");
    if (sample.rows.length === 0) {
      note.textContent = sample.total ? "The rejected rows are not available." : "No rejected rows.";
      table.hidden = true;
      return;
    }
    note.textContent = `The first ${sample.rows.length} of ${count(sample.total)} rejected rows, ` +
      "with the reason each was rejected.";
    table.hidden = false;
    table.tHead.replaceChildren(el("tr", {}, ...sample.columns.map((name) => el("th", {}, name))));
    table.tBodies[0].replaceChildren(...sample.rows.map((row) =>
      el("tr", {}, ...row.map((cell) => el("td", {}, cell)))));
  }

  function showLogs(logs) {
    if (logs.length === 0) return;
    const blocks = logs.flatMap((log) => [
      el("h3", {}, `${log.host} `, fileLink(log.uri)),
      ...(log.truncated ? [el("p", { class: "muted" }, `The last part of ${count(log.size)} bytes.`)] : []),
      el("pre", { class: "log", "data-host": log.host }, log.text || "(empty)"),
    ]);
    document.getElementById("logs").replaceChildren(...blocks);
  }

  async function refresh() {
    let job;
    let missing = false;
    try {
      job = await fetchJson(api);
      const [logs, reports, rejected] = await Promise.all([
        fetchJson(`${api}/logs`),
        fetchJson(`${api}/report`),
        fetchJson(`${api}/rejected`),
      ]);
      showSummary(job);
      showOutputs(job);
      showReports(reports);
      showRejected(rejected);
      showLogs(logs);
      showError(null);
    } catch (error) {
      showError(error);
      missing = error.status === 404;
    }
    // An unknown job will not appear, and an ended one changes no more.
    const ended = job !== undefined && TERMINAL.has(job.status);
    if (!missing && !ended) setTimeout(refresh, POLL_MS);
  }

  refresh();
})();
