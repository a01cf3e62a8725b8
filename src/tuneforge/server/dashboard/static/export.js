/* Export: start export_model on a finished job (a format of the export registry); show the parity figures. */
"use strict";
TF.page(async ({ job_id }) => {
  const { el, fmt } = TF;
  const info = await TF.api("/ui/api/info");
  const { data } = await TF.api("/ui/api/jobs");
  const done = data.filter(r => r.job.status === "succeeded").map(r => r.job);
  const jobSelect = el("select", { id: "export-job" }, done.length ? done.map(j => el("option", { value: j.id, selected: j.id === job_id },
    `${j.id}${j.user_provided_suffix ? ` (${j.user_provided_suffix})` : ""}`)) : el("option", { value: "" }, "no finished job yet"));
  const format = el("select", { id: "export-format" }, info.export_formats.map(f => el("option", { value: f }, f)));
  const quantize = el("input", { id: "export-quantize", type: "text", placeholder: "the format's default" });
  const problem = el("p", { class: "error", role: "alert" });
  const out = el("section", { id: "exports", "aria-live": "polite" });
  const form = el("form", { class: "card", onsubmit: start },
    el("div", { class: "field" }, el("label", { for: "export-job" }, "Finished job"), jobSelect),
    el("div", { class: "field" }, el("label", { for: "export-format" }, "Format"), format),
    el("div", { class: "field" }, el("label", { for: "export-quantize" }, "Quantization (optional: f16, q8_0, q4_k_m, int4…)"), quantize),
    el("button", { type: "submit" }, "Export and check parity"), problem);
  TF.render(form, out);
  jobSelect.addEventListener("change", () => refresh());

  function parityTable(parity) {
    if (!parity) return el("p", { class: "muted" }, "No parity figures.");
    const keys = ["examples", "greedy_agreement", "top1_agreement", "tokenizer_agreement", "max_abs_logit_diff", "mean_kl",
                  "trained_accuracy", "export_accuracy", "threshold", "passed", "likely_cause"];
    return TF.table("Parity with the trained model", ["figure", "value"], keys.filter(k => k in parity).map(k => [k, String(parity[k] === null ? "—" : typeof parity[k] === "number" ? fmt(parity[k]) : parity[k])]));
  }
  async function refresh() {
    if (!jobSelect.value) { out.replaceChildren(el("p", { class: "muted" }, "Finish a job first.")); return; }
    const { started, on_disk } = await TF.api(`/ui/api/jobs/${jobSelect.value}/exports`);
    out.replaceChildren(el("h2", {}, "Exports"),
      ...started.map(e => el("article", { class: "card export", "data-status": e.status }, el("h3", {}, `${e.format}${e.quantize ? ` ${e.quantize}` : ""}: `, TF.statusBadge(e.status)),
        e.error ? el("p", { class: "error" }, e.error) : null, e.status !== "running" ? parityTable((e.manifest || {}).parity || e.parity) : null)),
      ...on_disk.filter(d => !started.some(e => e.status === "succeeded" && (e.out_dir || "").endsWith(`/${d.directory}`))).map(d => el("article", { class: "card" }, el("h3", {}, `on disk: ${d.directory}`), parityTable(d.manifest.parity))),
      ...(!started.length && !on_disk.length ? [el("p", { class: "muted" }, "No export yet.")] : []));
    if (started.some(e => e.status === "running")) setTimeout(() => refresh().catch(() => {}), 2000);
  }
  async function start(event) {
    event.preventDefault(); problem.textContent = "";
    try {
      await TF.api(`/ui/api/jobs/${jobSelect.value}/exports`, { json: { format: format.value, quantize: quantize.value.trim() || null } });
      await refresh();
    } catch (error) { problem.textContent = error.message; }
  }
  await refresh();
});
