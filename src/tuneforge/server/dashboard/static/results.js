/* Results: base vs tuned (and the prompting baselines) with the verdict, the predictions filterable, the confusion matrix. */
"use strict";
TF.page(async ({ job_id }) => {
  const { el, fmt } = TF;
  const { job, results, predictions, table } = await TF.api(`/ui/api/jobs/${encodeURIComponent(job_id)}/results`);
  if (!results || !Object.keys(results).length) {
    TF.render(el("p", {}, `Job ${job_id} has no results yet (status ${job.status}).`), el("a", { href: `/jobs/${job_id}` }, "Back to the job"));
    return;
  }
  // compare_models' rows: {metric, <column>: value, best}; the best column of each metric is marked
  const labels = { base: "base", tuned: "tuned" };
  for (const [name, b] of Object.entries(results.baselines || {})) labels[name] = b.label || name;
  const names = table.length ? Object.keys(table[0]).filter(k => k !== "metric" && k !== "best") : [];
  const comparison = table.length ? TF.table("Held-out test split (best of each metric in bold green)", ["metric", ...names.map(n => labels[n] || n)],
    table.map(row => el("tr", {}, el("th", { scope: "row" }, row.metric),
      names.map(n => el("td", { class: row.best === n && names.some(m => row[m] !== row[n]) ? "better" : "" }, fmt(row[n]))))),
    { id: "comparison" })
    : el("p", { class: "muted" }, "No test evaluation in this run.");
  const verdict = results.verdict ? el("p", { id: "verdict", class: results.verdict.worth_it ? "verdict ok" : "verdict bad" },
    results.verdict.message) : null;

  const filter = el("select", { id: "outcome-filter" }, ["all", "fixed", "broken", "still wrong", "right"].map(o => el("option", { value: o }, o)));
  const counts = {};
  predictions.forEach(p => { counts[p.outcome] = (counts[p.outcome] || 0) + 1; });
  const body = el("tbody");
  const draw = () => body.replaceChildren(...predictions.filter(p => filter.value === "all" || p.outcome === filter.value)
    .map(p => el("tr", { class: `outcome-${p.outcome.replace(" ", "-")}` }, el("td", {}, p.input), el("td", {}, p.reference),
      el("td", {}, TF.answer(p.base)), el("td", {}, TF.answer(p.tuned)), el("td", {}, p.outcome))));
  filter.addEventListener("change", draw);
  draw();
  const analysis = results.error_analysis || {};
  const confusion = (c, title) => c ? [el("h3", {}, title), TF.table(null, ["reference \\ answer", ...c.columns, "precision", "recall", "F1", "support"],
    c.labels.map((label, i) => el("tr", {}, el("th", { scope: "row" }, label),
      c.matrix[i].map((n, j) => el("td", { class: c.columns[j] === label && n ? "better" : n ? "worse" : "muted" }, n)),
      ["precision", "recall", "f1", "support"].map(k => el("td", {}, fmt(c.per_label[label][k]))))), { class: "confusion" })] : [];

  TF.render(el("p", {}, "Job ", el("a", { href: `/jobs/${job.id}` }, job.id), `, fine-tuned model ${job.fine_tuned_model || "—"}`),
    el("h2", {}, "Base vs tuned"), verdict, comparison,
    results.forgetting ? el("p", { class: "muted" }, results.forgetting.message) : null,
    el("h2", {}, "Predictions"),
    el("div", { class: "field inline" }, el("label", { for: "outcome-filter" }, "Show"), filter,
       el("span", { class: "muted" }, Object.entries(counts).map(([k, v]) => `${k}: ${v}`).join(", "))),
    predictions.length ? el("table", { id: "predictions" }, el("caption", {}, "Test answers: fixed (base wrong, tuned right), broken (base right, tuned wrong), still wrong"),
      el("thead", {}, el("tr", {}, ["input", "reference", "base", "tuned", "outcome"].map(h => el("th", { scope: "col" }, h)))), body)
      : el("p", { class: "muted" }, "No predictions recorded."),
    ...confusion(analysis.confusion, "Confusion matrix: tuned model"), ...confusion(analysis.base_confusion, "Confusion matrix: base model"));
});
