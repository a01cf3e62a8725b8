/* Job page: live curves from the job's event stream (SSE), the issue timeline, checkpoints, cancel / pause / resume. */
"use strict";
TF.page(async ({ job_id }) => {
  const { el, fmt } = TF;
  const detail = await TF.api(`/ui/api/jobs/${encodeURIComponent(job_id)}`);
  document.title = `${job_id} · tuneforge`;
  const curves = detail.curves;
  const CHARTS = [
    ["loss", [["train", "loss", "#2563eb"], ["validation", "validation_loss", "#dc2626"]]],
    ["learning rate", [["lr", "learning_rate", "#7c3aed"]]],
    ["throughput (tokens/s)", [["this step", "step_tokens_per_second", "#86b7a0"], ["run average", "tokens_per_second", "#059669"]]],
    ["memory (MB)", [["RSS", "memory_mb", "#d97706"], ["GPU", "gpu_memory_mb", "#9333ea"]]],
  ];
  const charts = CHARTS.map(([title, lines]) => ({ chart: TF.lineChart(title), lines }));
  const redraw = () => charts.forEach(({ chart, lines }) =>
    chart.set(lines.map(([label, key, colour]) => ({ label, colour, points: curves[key] || [] }))));
  charts.forEach(({ chart }, i) => { chart.node.id = `chart-${["loss", "lr", "throughput", "memory"][i]}`; });

  const status = el("span"), stepText = el("span"), eta = el("span"), best = el("span");
  const bar = el("progress", { max: 1, value: 0, "aria-label": "training progress" });
  const buttons = {
    cancel: el("button", { type: "button", id: "cancel", onclick: () => act("cancel") }, "Cancel"),
    pause: el("button", { type: "button", id: "pause", onclick: () => act("pause") }, "Pause"),
    resume: el("button", { type: "button", id: "resume", onclick: () => act("resume") }, "Resume"),
  };
  const links = el("p", { class: "links" });
  const timeline = el("ol", { id: "timeline", class: "timeline", "aria-live": "polite" });
  const checkpoints = el("div", { id: "checkpoints" });
  const problem = el("p", { class: "error", role: "alert" });
  const job = detail.job;

  TF.render(
    el("dl", { class: "facts" },
      el("dt", {}, "job"), el("dd", {}, el("code", {}, job.id)), el("dt", {}, "base model"), el("dd", { title: job.model }, job.model.split("/").pop()),
      el("dt", {}, "status"), el("dd", { id: "job-status" }, status), el("dt", {}, "step"), el("dd", {}, bar, " ", stepText),
      el("dt", {}, "ETA"), el("dd", {}, eta), el("dt", {}, "best validation loss"), el("dd", {}, best),
      el("dt", {}, "fine-tuned model"), el("dd", { id: "fine-tuned" }, job.fine_tuned_model || "—")),
    el("div", { class: "actions", role: "group", "aria-label": "job actions" }, buttons.cancel, buttons.pause, buttons.resume),
    problem, links,
    el("h2", {}, "Training curves"), el("div", { class: "charts" }, charts.map(c => c.chart.node)),
    el("h2", {}, "Issues and milestones"), timeline,
    el("h2", {}, "Checkpoints"), checkpoints);

  function showStatus(job, progress) {
    status.replaceChildren(TF.statusBadge(progress ? progress.status : job.status));
    const s = progress ? progress.status : job.status;
    if (progress) {
      if (progress.progress !== null && progress.progress !== undefined) bar.value = progress.progress;
      stepText.textContent = progress.total_steps ? `${progress.step} of ${progress.total_steps}` : `${progress.step}`;
      eta.textContent = TF.duration(progress.eta_seconds);
    }
    const error = (progress && progress.error) || job.error;
    problem.textContent = error ? `The job failed: ${error.message || JSON.stringify(error)}` : problem.textContent;
    buttons.cancel.disabled = !["validating_files", "queued", "running", "paused"].includes(s);
    buttons.pause.disabled = !["validating_files", "queued", "running"].includes(s);
    buttons.resume.disabled = s !== "paused";
  }
  function showLinks(job) {
    links.replaceChildren();
    if (job.status === "succeeded") {
      links.append(el("a", { href: `/results/${job.id}` }, "Results"), " · ",
                   el("a", { href: `/try?model=${encodeURIComponent(job.fine_tuned_model || "")}` }, "Try it"), " · ",
                   el("a", { href: `/export/${job.id}` }, "Export"));
    }
  }
  function addTimeline(item) {
    timeline.querySelectorAll("li.placeholder").forEach(n => n.remove());
    const explanation = item.explanation ? el("p", { class: "explain" }, item.explanation) : null;
    timeline.append(el("li", { class: `sev-${item.severity || "info"}` },
      el("span", { class: "step" }, item.step !== null && item.step !== undefined ? `step ${item.step}` : ""), " ",
      el("strong", {}, item.kind === "issue" ? `${item.title} (${item.severity})` : item.text),
      item.kind === "issue" ? el("p", {}, item.text) : null, explanation,
      item.action ? el("p", { class: "muted" }, `action taken: ${item.action}`) : null));
  }
  function showCheckpoints(rows) {
    checkpoints.replaceChildren(rows.length
      ? TF.table("Saved checkpoints (each can be chatted with on the Try page)", ["step", "model id", "metrics"],
          rows.map(c => [c.step_number, el("code", {}, c.fine_tuned_model_checkpoint),
                         Object.entries(c.metrics || {}).map(([k, v]) => `${k} ${fmt(v)}`).join(", ") || "—"]))
      : el("p", { class: "muted" }, "No checkpoint yet."));
  }
  async function act(action) {
    problem.textContent = "";
    try {
      const updated = await TF.api(`/ui/v1/fine_tuning/jobs/${encodeURIComponent(job_id)}/${action}`, { method: "POST" });
      showStatus(updated, null);
      TF.toast(`job ${updated.status}`);
      if (action === "resume") listen();
    } catch (error) { problem.textContent = error.message; }
  }
  async function reload() {
    const fresh = await TF.api(`/ui/api/jobs/${encodeURIComponent(job_id)}`);
    showStatus(fresh.job, fresh.progress); showLinks(fresh.job); showCheckpoints(fresh.checkpoints);
    best.textContent = fmt(fresh.best_validation_loss);
    document.getElementById("fine-tuned").textContent = fresh.job.fine_tuned_model || "—";
  }

  let lastSeq = detail.last_seq, source = null;
  function listen() {
    if (source) source.close();
    source = new EventSource(`/ui/api/jobs/${encodeURIComponent(job_id)}/stream?after=${lastSeq}`);
    source.addEventListener("event", message => {
      const event = JSON.parse(message.data);
      lastSeq = Math.max(lastSeq, event.seq ?? lastSeq);
      for (const [key, point] of Object.entries(event.points || {})) {
        const line = curves[key] || (curves[key] = []);
        const same = line.findIndex(p => p[0] === point[0]);  // a resumed step replaces the old one
        if (same >= 0) line[same] = point; else line.push(point);
        if (key === "validation_loss") best.textContent = fmt(Math.min(...line.map(p => p[1])));
      }
      if (event.timeline) addTimeline(event.timeline);
      if (event.type === "checkpoint.saved") reload().catch(() => {});
      redraw();
    });
    source.addEventListener("status", message => showStatus(job, JSON.parse(message.data)));
    source.addEventListener("end", () => { source.close(); source = null; reload().catch(() => {}); });
    source.onerror = () => { if (source && source.readyState === EventSource.CLOSED) source = null; };
  }

  showStatus(job, detail.progress); showLinks(job); showCheckpoints(detail.checkpoints);
  best.textContent = fmt(detail.best_validation_loss);
  detail.timeline.forEach(addTimeline);
  if (!detail.timeline.length) timeline.append(el("li", { class: "muted placeholder" }, "Nothing yet."));
  redraw();
  listen();
});
