/* Data: upload a file; the data doctor's findings (file:line, field), statistics, token counts, time and cost estimate. */
"use strict";
TF.page(async () => {
  const { el, fmt } = TF;
  const info = await TF.api("/ui/api/info");
  const fileInput = el("input", { id: "upload-file", type: "file", accept: ".jsonl,.json,.csv,.parquet,.txt", required: true });
  const modelSelect = el("select", { id: "doctor-model" }, el("option", { value: "" }, "no tokenizer (characters)"),
    info.models.map((m, i) => el("option", { value: m, selected: i === 0 }, m)));
  const estimate = el("input", { id: "doctor-estimate", type: "checkbox" });
  const cost = el("input", { id: "doctor-cost", type: "number", min: 0, step: "any", placeholder: "0" });
  const progress = el("p", { class: "muted", "aria-live": "polite" });
  const out = el("section", { id: "doctor", "aria-label": "data doctor results" });
  const filesBox = el("div", { id: "files" });
  const form = el("form", { class: "card", onsubmit: upload },
    el("div", { class: "field" }, el("label", { for: "upload-file" }, "Training file (JSONL, JSON, CSV or Parquet)"), fileInput),
    el("div", { class: "field" }, el("label", { for: "doctor-model" }, "Count tokens with the tokenizer of"), modelSelect),
    el("div", { class: "field inline" }, estimate, el("label", { for: "doctor-estimate" },
      "Estimate the training time (times two real training steps of that model)")),
    el("div", { class: "field" }, el("label", { for: "doctor-cost" }, "Price of this machine per hour (for the cost estimate)"), cost),
    el("button", { type: "submit" }, "Upload and check"), progress);
  TF.render(form, out, el("h2", {}, "Uploaded files"), filesBox);

  async function upload(event) {
    event.preventDefault();
    if (!fileInput.files.length) { progress.textContent = "Choose a file first."; fileInput.focus(); return; }
    const data = new FormData();
    data.append("purpose", "fine-tune");
    data.append("file", fileInput.files[0]);
    progress.textContent = "Uploading and checking…";
    try {
      const stored = await TF.api("/ui/v1/files", { method: "POST", body: data });
      await check(stored.id);
      await listFiles();
    } catch (error) { progress.textContent = ""; out.replaceChildren(TF.errorBox(error)); }
  }

  async function check(fileId) {
    progress.textContent = estimate.checked ? "Checking and timing two training steps…" : "Checking…";
    const query = new URLSearchParams({ estimate: estimate.checked ? "true" : "false" });
    if (modelSelect.value) query.set("model", modelSelect.value);
    if (cost.value) query.set("cost_per_hour", cost.value);
    const { file, report } = await TF.api(`/ui/api/files/${fileId}/doctor?${query}`);
    progress.textContent = "";
    out.replaceChildren(...showReport(file, report).filter(Boolean));
    out.querySelector("h2").focus();
  }

  function showReport(file, report) {
    const stats = report.stats || {};
    const verdict = report.ok
      ? el("p", { class: "verdict ok" }, `No errors: ${file.filename} can train (${report.warnings} warning(s)).`)
      : el("p", { class: "verdict bad", role: "alert" }, `${report.errors} error(s) in ${file.filename}: fix them before training.`);
    const findings = report.findings.length
      ? TF.table(`Findings (${report.findings.length})`, ["severity", "where", "field", "code", "message"],
          report.findings.map(f => el("tr", { class: `finding sev-${f.severity}` },
            el("td", { class: `sev-${f.severity}` }, f.severity),
            el("td", { class: "where" }, f.line ? `${report.path}:${f.line}` : report.path),
            el("td", {}, f.field || "—"), el("td", {}, el("code", {}, f.code)), el("td", {}, f.message))), { id: "findings" })
      : el("p", { class: "muted" }, "No findings.");
    const tokens = stats.tokens || {}, training = stats.training || {}, est = training.estimate || {};
    const cards = [["rows", stats.rows], ["usable examples", stats.usable_examples], ["invalid rows", stats.invalid_rows],
      ["tokens (all examples)", tokens.total], ["trained tokens", tokens.trained], ["truncated examples", tokens.truncated_examples],
      ["steps", training.total_steps], ["estimated time", est.seconds !== undefined ? TF.duration(est.seconds) : null],
      ["estimated cost", est.cost !== undefined ? `${fmt(est.cost)} (at ${fmt(est.cost_per_hour)}/h)` : null]]
      .filter(([, v]) => v !== undefined && v !== null);
    return [el("h2", { tabindex: "-1" }, `Data doctor: ${file.filename} (${file.id})`), verdict, findings,
      el("h3", {}, "Statistics"), el("div", { class: "cards", id: "stats" },
        cards.map(([k, v]) => el("div", { class: "card" }, k, el("b", {}, typeof v === "number" ? fmt(v) : v)))),
      lengthsTable(stats.lengths), el("details", {}, el("summary", {}, "All statistics"), el("pre", {}, JSON.stringify(stats, null, 2))),
      report.notes && report.notes.length ? el("ul", {}, report.notes.map(n => el("li", {}, n))) : null,
      report.ok ? el("p", {}, el("a", { href: `/start?training_file=${file.id}`, class: "button" }, "Start a job with this file")) : null];
  }

  function lengthsTable(lengths) {
    if (!lengths) return null;
    const parts = ["prompt", "completion", "example"].filter(k => lengths[k]);
    return TF.table(`Lengths (${lengths.unit})`, ["part", "min", "mean", "p50", "p95", "max", "total"],
      parts.map(k => [k, lengths[k].min, lengths[k].mean, lengths[k].p50, lengths[k].p95, lengths[k].max, lengths[k].sum]));
  }

  async function listFiles() {
    const { data } = await TF.api("/ui/v1/files?limit=50");
    filesBox.replaceChildren(data.length ? TF.table(null, ["file", "name", "status", "bytes", "uploaded", ""],
      data.map(f => [el("code", {}, f.id), f.filename, TF.statusBadge(f.status), f.bytes, TF.when(f.created_at),
        el("button", { type: "button", class: "quiet", onclick: () => check(f.id).catch(e => out.replaceChildren(TF.errorBox(e))),
                       "aria-label": `check ${f.filename} again` }, "Check")]))
      : el("p", { class: "muted" }, "No files uploaded yet."));
  }
  await listFiles();
});
