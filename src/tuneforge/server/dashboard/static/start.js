/* Start a job: base model, method and the main hyperparameters (FineTuningConfig's defaults); every problem shown at once. */
"use strict";
TF.page(async () => {
  const { el } = TF;
  const info = await TF.api("/ui/api/info");
  const files = (await TF.api("/ui/v1/files?limit=200")).data.filter(f => f.purpose === "fine-tune");
  const wanted = new URLSearchParams(location.search).get("training_file");
  const controls = {};
  const errors = {};

  function field(name, label, control, help) {
    control.id = `f-${name}`; control.name = name;
    errors[name] = el("p", { id: `e-${name}`, class: "field-error", role: "alert" });
    const helpNode = help ? el("p", { id: `h-${name}`, class: "muted help" }, help) : null;
    control.setAttribute("aria-describedby", [help ? `h-${name}` : null, `e-${name}`].filter(Boolean).join(" "));
    controls[name] = control;
    return el("div", { class: "field" }, el("label", { for: control.id }, label), control, helpNode, errors[name]);
  }
  const fileOptions = (empty) => [el("option", { value: "" }, empty),
    ...files.map(f => el("option", { value: f.id, selected: f.id === wanted, disabled: f.status === "error" },
      `${f.filename} (${f.id})${f.status === "error" ? " — has errors" : ""}`))];

  const parts = [
    field("model", "Base model", el("select", {}, info.models.map(m => el("option", { value: m }, m)))),
    field("training_file", "Training file", el("select", {}, fileOptions("choose an uploaded file")),
          files.length ? null : "Upload a file on the Data page first."),
    field("validation_file", "Validation file (optional)", el("select", {}, fileOptions("split off the training file"))),
  ];
  for (const spec of info.form) {
    let control;
    if (spec.kind === "choice") control = el("select", {}, spec.choices.map(c => el("option", { value: c, selected: c === spec.default }, c)));
    else control = el("input", { type: "text", inputmode: spec.kind === "integer" ? "numeric" : "decimal",
                                 value: spec.default === null ? "" : spec.default });
    parts.push(field(spec.name, spec.label, control, spec.help));
  }
  parts.push(field("suffix", "Name suffix (optional)", el("input", { type: "text", maxlength: 64 }),
                   "Part of the fine-tuned model's name: letters, digits, '.', '_' or '-'."));
  parts.push(field("extra", "More FineTuningConfig fields (JSON, optional)",
                   el("textarea", { rows: 3, placeholder: '{"max_steps": 20}' }), 'For example {"max_steps": 20, "evaluate_base": false}.'));
  const lr = controls.learning_rate;
  const lrHint = () => { lr.placeholder = `default ${info.default_learning_rate[controls.method.value]}`; };
  controls.method.addEventListener("change", lrHint); lrHint();

  const summary = el("div", { id: "form-problems", role: "alert", class: "error" });
  const form = el("form", { class: "card", id: "start-form", novalidate: true, onsubmit: submit }, parts, summary,
                  el("button", { type: "submit" }, "Start the job"));
  TF.render(form);

  function number(value, kind) {
    if (value.trim() === "") return null;
    const n = Number(value);
    return Number.isFinite(n) && value.trim() !== "" ? n : value;  // a non-number goes as typed: the config names it
  }
  function values() {
    const config = {};
    for (const spec of info.form) {
      const raw = controls[spec.name].value;
      const value = spec.kind === "choice" ? raw : number(raw, spec.kind);
      if (value !== null) config[spec.name] = value;
    }
    return config;
  }
  function showProblems(problems) {
    Object.values(errors).forEach(node => { node.textContent = ""; });
    Object.values(controls).forEach(c => c.removeAttribute("aria-invalid"));
    summary.textContent = problems.length ? `${problems.length} value(s) to fix:` : "";
    for (const p of problems) {
      const target = errors[p.field] ? p.field : "extra";
      errors[target].textContent = (errors[target].textContent ? errors[target].textContent + " " : "") + p.message;
      controls[target].setAttribute("aria-invalid", "true");
    }
    const first = problems.length && controls[errors[problems[0].field] ? problems[0].field : "extra"];
    if (first) first.focus();
  }
  async function submit(event) {
    event.preventDefault();
    let extra = {};
    const text = controls.extra.value.trim();
    if (text) {
      try { extra = JSON.parse(text); if (typeof extra !== "object" || Array.isArray(extra)) throw new Error("not an object"); }
      catch (error) { showProblems([{ field: "extra", message: `not a JSON object: ${error.message}` }]); return; }
    }
    const config = { ...values(), ...extra };
    const { problems } = await TF.api("/ui/api/check_config",
      { json: { values: { ...config, training_file: controls.training_file.value } } });
    if (problems.length) { showProblems(problems); return; }
    showProblems([]);
    const { seed, ...tuneforge } = config;
    const body = { model: controls.model.value, training_file: controls.training_file.value, tuneforge };
    if (seed !== undefined) body.seed = seed;
    if (controls.validation_file.value) body.validation_file = controls.validation_file.value;
    if (controls.suffix.value.trim()) body.suffix = controls.suffix.value.trim();
    try {
      const job = await TF.api("/ui/v1/fine_tuning/jobs", { json: body });
      location.href = `/jobs/${job.id}`;
    } catch (error) {
      const param = (error.param || "").replace(/^extra\./, "").replace(/^hyperparameters\./, "");
      showProblems([{ field: errors[param] ? param : "extra", message: error.message }]);
    }
  }
});
