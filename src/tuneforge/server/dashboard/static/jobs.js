/* Jobs list: status, progress bar, ETA, best validation loss; refreshed every few seconds. */
"use strict";
TF.page(async () => {
  const { el, fmt } = TF;
  const body = el("tbody");
  const live = el("p", { class: "muted", "aria-live": "polite" });
  const list = el("table", { id: "jobs" }, el("caption", {}, "Fine-tuning jobs, newest first"),
    el("thead", {}, el("tr", {}, ["job", "model", "status", "progress", "ETA", "best validation loss", "created"]
      .map(h => el("th", { scope: "col" }, h)))), body);
  TF.render(el("p", {}, el("a", { href: "/start", class: "button" }, "Start a job"), " ", el("a", { href: "/data" }, "Upload data")),
            list, live);

  async function refresh() {
    const { data } = await TF.api("/ui/api/jobs");
    body.replaceChildren(...data.map(row));
    live.textContent = data.length ? `${data.length} job(s); updated ${new Date().toLocaleTimeString()}` : "No jobs yet.";
  }
  function row({ job, progress, best_validation_loss }) {
    const fraction = progress.progress;
    const bar = el("progress", { max: 1, value: fraction ?? 0, "aria-label": `progress of ${job.id}` });
    return el("tr", { "data-job": job.id },
      el("td", {}, el("a", { href: `/jobs/${job.id}` }, job.id), job.user_provided_suffix ? ` (${job.user_provided_suffix})` : ""),
      el("td", {}, job.model.split("/").pop()),
      el("td", {}, TF.statusBadge(job.status)),
      el("td", {}, bar, " ", progress.total_steps ? `${progress.step}/${progress.total_steps}` : ""),
      el("td", {}, TF.duration(progress.eta_seconds)),
      el("td", {}, fmt(best_validation_loss)),
      el("td", {}, TF.when(job.created_at)));
  }
  await refresh();
  setInterval(() => refresh().catch(error => { live.textContent = error.message; }), 3000);
});
