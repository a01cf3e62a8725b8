/* Compare: pick runs, overlay their curves, their test metrics side by side (best marked). */
"use strict";
TF.page(async () => {
  const { el, fmt } = TF;
  const { data } = await TF.api("/ui/api/jobs");
  const picked = new Set(new URLSearchParams(location.search).getAll("job"));
  const boxes = data.map(({ job }) => el("div", { class: "field inline" },
    el("input", { type: "checkbox", id: `pick-${job.id}`, value: job.id, checked: picked.has(job.id) || undefined }),
    el("label", { for: `pick-${job.id}` }, `${job.id}${job.user_provided_suffix ? ` (${job.user_provided_suffix})` : ""} — ${job.status}`)));
  const out = el("section", { id: "comparison", "aria-live": "polite" });
  const form = el("form", { class: "card", onsubmit: async event => { event.preventDefault(); await show(); } },
    el("fieldset", {}, el("legend", {}, "Runs to compare"), boxes.length ? boxes : el("p", { class: "muted" }, "No jobs yet.")),
    el("button", { type: "submit" }, "Compare"));
  TF.render(form, out);

  async function show() {
    const ids = [...form.querySelectorAll("input[type=checkbox]:checked")].map(b => b.value);
    if (!ids.length) { out.replaceChildren(el("p", {}, "Pick at least one run.")); return; }
    const { runs, table } = await TF.api(`/ui/api/compare?jobs=${encodeURIComponent(ids.join(","))}`);
    const chart = (title, key) => {
      const c = TF.lineChart(title);
      c.set(ids.map((id, i) => ({ label: id.slice(-6), colour: TF.COLOURS[i % TF.COLOURS.length], points: runs[id].curves[key] || [] })));
      return c.node;
    };
    out.replaceChildren(el("h2", {}, "Curves"), el("div", { class: "charts" }, chart("training loss", "loss"),
      chart("validation loss", "validation_loss"), chart("learning rate", "learning_rate")),
      el("h2", {}, "Test metrics (tuned)"),
      table.length ? TF.table(null, ["metric", ...ids], table.map(row => el("tr", {}, el("th", { scope: "row" }, row.metric),
        ids.map(id => el("td", { class: row.best === id ? "better" : "" }, fmt(row[id]), row.best === id ? " (best)" : "")))))
        : el("p", { class: "muted" }, "None of these runs has test metrics yet."));
  }
  if (picked.size) await show();
});
